"""Back-projection of (time, region) saliency to 4D NIfTI: ours vs nilearn.

A 405-frame run (HCP WM length) on the HCP 2 mm grid (91 x 109 x 91) with a 300-region
label atlas (nearest-centre parcellation of an ellipsoidal "brain"). Each method runs in
a fresh process so that its peak resident memory (ru_maxrss) is its own.

    python benchmarks/bench_projection.py [--frames 405] [--regions 300]

Columns: wall time (s), peak RSS of the process (GB), RSS added by the method over the
set-up (atlas + values + imports), and the time ratio nilearn / method.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

SHAPE = (91, 109, 91)
AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
METHODS = {
    "nilearn NiftiLabelsMasker.inverse_transform": "nilearn",
    "fmri_ica regions_to_img (in memory)": "ours",
    "fmri_ica regions_to_img + to_filename .nii.gz": "ours_save",
    "fmri_ica write_regions_img .nii.gz (streaming)": "ours_stream",
}


def make_atlas(n_regions: int, seed: int = 0):
    """A labels atlas on the HCP grid: an ellipsoid split among random centres."""
    import nibabel as nib
    import pandas as pd
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE).reshape(3, -1).T
    centre, radii = np.array(SHAPE) / 2, np.array([36, 46, 38])
    inside = (((grid - centre) / radii) ** 2).sum(1) <= 1
    centres = grid[inside][rng.choice(inside.sum(), n_regions, replace=False)]
    labels = np.zeros(len(grid), np.int16)
    labels[inside] = cKDTree(centres).query(grid[inside])[1] + 1
    img = nib.Nifti1Image(labels.reshape(SHAPE), AFFINE)

    class Atlas:
        name, kind = "bench", "labels"

    atlas = Atlas()
    atlas.img = img
    atlas.labels = pd.DataFrame({"index": np.arange(1, n_regions + 1)})
    atlas.n_regions = n_regions
    return atlas


def run_one(method: str, n_frames: int, n_regions: int) -> dict:
    from fmri_ica.saliency.projection import regions_to_img, write_regions_img

    atlas = make_atlas(n_regions)
    values = np.random.default_rng(1).random((n_frames, n_regions), dtype=np.float32)
    if method == "nilearn":
        from nilearn.maskers import NiftiLabelsMasker

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            masker = NiftiLabelsMasker(atlas.img, standardize=None).fit()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if method == "nilearn":
            img = masker.inverse_transform(values)
        elif method == "ours":
            img = regions_to_img(values, atlas, t_r=0.72)
        elif method == "ours_save":
            regions_to_img(values, atlas, t_r=0.72).to_filename(Path(tmp) / "x.nii.gz")
        else:
            write_regions_img(Path(tmp) / "x.nii.gz", values, atlas, t_r=0.72)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    checksum = (
        float(np.asarray(img.dataobj[..., :: max(1, n_frames // 7)], np.float64).sum())
        if method in ("nilearn", "ours")
        else None
    )
    return {
        "seconds": seconds,
        "peak_gb": peak / 2**20,
        "added_gb": (peak - base) / 2**20,
        "checksum": checksum,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=405)
    parser.add_argument("--regions", type=int, default=300)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.frames, args.regions)))
        return
    print(
        f"{args.frames} frames x {args.regions} regions -> {SHAPE} 2 mm grid, float32 output "
        f"({np.prod(SHAPE) * args.frames * 4 / 2**30:.2f} GB)"
    )
    results = {}
    for label, key in METHODS.items():
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                key,
                "--frames",
                str(args.frames),
                "--regions",
                str(args.regions),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        results[label] = json.loads(out.stdout.strip().splitlines()[-1])
    ref = results["nilearn NiftiLabelsMasker.inverse_transform"]
    ours = results["fmri_ica regions_to_img (in memory)"]
    same = np.isclose(ref["checksum"], ours["checksum"], rtol=1e-6)
    print(
        f"{'method':48s} {'time s':>8s} {'peak RSS GB':>12s} {'added GB':>9s} {'nilearn/this time':>18s}"
    )
    for label, r in results.items():
        print(
            f"{label:48s} {r['seconds']:8.2f} {r['peak_gb']:12.2f} {r['added_gb']:9.2f} "
            f"{ref['seconds'] / r['seconds']:18.1f}"
        )
    print(f"checksum of sampled volumes equal (rtol 1e-6): {bool(same)}")


if __name__ == "__main__":
    main()
