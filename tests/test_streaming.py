"""The streaming engine: nilearn's numbers in one pass over the file, same checks, checksum."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from _fixtures_layouts import AFFINE, make_hcp_tree
from nilearn.maskers import NiftiLabelsMasker, NiftiMapsMasker, NiftiSpheresMasker

from fmri_ica.data import streaming
from fmri_ica.data.atlases import load_atlas
from fmri_ica.data.parcellation import extract_timeseries, find_timeseries, label_means, parcellate
from fmri_ica.data.streaming import (
    LabelsReducer,
    SpheresReducer,
    stream_reason,
    stream_signals,
)
from fmri_ica.exceptions import InputDataError, InvalidParameterError

SHAPE = (7, 8, 9)
CLEAN = {"t_r": 2.0, "detrend": True, "standardize": "zscore_sample", "high_pass": 0.02}
# nilearn keeps float32 data's region means in float32, ours are float64 (as label_means').
TOL = {"rtol": 1e-5, "atol": 2e-4}
# (on-disk dtype, scl_slope, scl_inter): float32, scaled int16, big-endian float32.
STORAGE = {
    "float32": (np.float32, None, None),
    "int16_scaled": (np.int16, 0.25, 50.0),
    "bigendian": (np.dtype(">f4"), None, None),
}


def write_run(path, data, storage="float32") -> Path:
    """Save (X, Y, Z, T) data as ``storage`` (see STORAGE) with TR 2 s."""
    dtype, slope, inter = STORAGE[storage]
    img = nib.Nifti1Image(np.asarray(data, np.float32), AFFINE)
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.0
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    nib.save(img, path)
    return Path(path)


def bold_data(rng, n_frames=40) -> np.ndarray:
    return rng.standard_normal((*SHAPE, n_frames)) * 20 + 1000


def labels_on_another_grid(tmp_path) -> Path:
    """A 3-region label atlas on a finer, shifted grid: it must be resampled."""
    affine = AFFINE.copy()
    affine[:3, :3] /= 1.5
    affine[:3, 3] += 1.0
    data = np.zeros((10, 12, 13), np.int16)
    data[:4, :6] = 3
    data[4:, :6] = 7
    data[:, 6:, :7] = 9
    path = tmp_path / "toy_atlas.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


# --------------------------------------------------------------------------- same numbers


@pytest.mark.parametrize("storage", sorted(STORAGE))
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_labels_equal_nilearn_masker_after_resampling(tmp_path, rng, storage, suffix):
    path = write_run(tmp_path / f"bold{suffix}", bold_data(rng), storage)
    atlas = load_atlas(labels_on_another_grid(tmp_path))
    provenance = {}
    out = extract_timeseries(path, atlas, engine="stream", provenance=provenance, **CLEAN)
    on_grid = atlas.resample_to(nib.load(path))
    expected = NiftiLabelsMasker(labels_img=on_grid.img, **CLEAN).fit_transform(nib.load(path))
    assert provenance["engine"] == "stream" and out.shape == (40, 3)
    np.testing.assert_allclose(out, expected, **TOL)


@pytest.mark.parametrize("storage", sorted(STORAGE))
def test_streamed_voxels_equal_nibabels_float32_data(tmp_path, rng, storage):
    """One label per voxel: the stream reads every voxel exactly as get_fdata does."""
    path = write_run(tmp_path / "bold.nii.gz", bold_data(rng, 13), storage)
    every_voxel = np.arange(1, np.prod(SHAPE) + 1).reshape(SHAPE)
    reducer = LabelsReducer(every_voxel, np.arange(1, np.prod(SHAPE) + 1))
    # 5 frames per block: blocks that split the run unevenly.
    result = stream_signals(path, reducer, block_bytes=5 * np.prod(SHAPE) * 4)
    data = nib.load(path).get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(result.signals, data.reshape(-1, 13).T)


def test_raw_signals_equal_label_means_in_any_column_order(tmp_path, rng):
    path = write_run(tmp_path / "bold.nii.gz", bold_data(rng, 30), "int16_scaled")
    labels = rng.integers(0, 6, SHAPE)
    index = np.array([5, 1, 3, 2])
    result = stream_signals(path, LabelsReducer(labels, index), block_bytes=4000)
    data = nib.load(path).get_fdata(dtype=np.float32)
    np.testing.assert_allclose(result.signals, label_means(data, labels, index), rtol=1e-12)


def test_maps_equal_nilearn_maps_masker(tmp_path, rng):
    path = write_run(tmp_path / "bold.nii.gz", bold_data(rng))
    maps = np.abs(rng.standard_normal((6, 7, 8, 4))).astype(np.float32)
    maps[maps < 0.7] = 0  # voxels outside every map
    affine = AFFINE.copy()
    affine[:3, 3] += 1.5  # another grid: resampled
    nib.save(nib.Nifti1Image(maps, affine), tmp_path / "maps.nii.gz")
    atlas = load_atlas(tmp_path / "maps.nii.gz")
    out = extract_timeseries(path, atlas, engine="stream", **CLEAN)
    on_grid = atlas.resample_to(nib.load(path))
    expected = NiftiMapsMasker(maps_img=on_grid.img, **CLEAN).fit_transform(nib.load(path))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_spheres_equal_nilearn_spheres_masker(tmp_path, rng):
    path = write_run(tmp_path / "bold.nii", bold_data(rng))
    img = nib.load(path)
    centre = nib.affines.apply_affine(AFFINE, [[3, 4, 4], [2, 2, 5], [3, 5, 4]])
    seeds = centre + [0.4, -0.3, 0.2]  # off the voxel centres; spheres 1 and 3 overlap
    result = stream_signals(path, SpheresReducer(seeds, 5.0, img))
    expected = NiftiSpheresMasker(
        seeds, radius=5.0, allow_overlap=True, standardize=None
    ).fit_transform(img)
    np.testing.assert_allclose(result.signals, expected, rtol=1e-6)


def test_the_stdlib_decompressor_gives_the_same_numbers(tmp_path, rng, monkeypatch):
    path = write_run(tmp_path / "bold.nii.gz", bold_data(rng, 20))
    reducer = LabelsReducer(rng.integers(0, 4, SHAPE), np.array([1, 2, 3]))
    fast = stream_signals(path, reducer)
    monkeypatch.setattr(streaming, "_igzip", None)  # as if isal were not installed
    monkeypatch.setattr(streaming, "_IsalError", zlib.error)
    slow = stream_signals(path, reducer)
    assert slow.decompressor == "zlib"
    np.testing.assert_array_equal(slow.signals, fast.signals)
    assert slow.sha256 == fast.sha256


# --------------------------------------------------------------------------- checks


@pytest.mark.parametrize("engine", ["stream", "nilearn"])
def test_nan_voxels_are_counted_alike_by_both_engines(tmp_path, rng, engine):
    data = bold_data(rng, 20)
    data[0, 0, :3, 4] = np.nan
    data[1, 1, 1, :] = np.inf
    path = write_run(tmp_path / "nan.nii.gz", data)
    atlas = load_atlas(labels_on_another_grid(tmp_path))
    with pytest.raises(
        InputDataError, match=r"^4 voxels \(23 values\) are NaN or infinite in .*nan.nii.gz"
    ):
        extract_timeseries(path, atlas, engine=engine)


def test_nan_values_in_several_blocks_are_all_counted(tmp_path, rng):
    data = bold_data(rng, 20)
    data[2, 3, 4, [0, 9, 19]] = np.nan  # first, a middle and the last block
    data[0, 0, 0, 10] = -np.inf
    path = write_run(tmp_path / "nan.nii", data)
    with pytest.raises(InputDataError, match=r"2 voxels \(4 values\) are NaN or infinite"):
        stream_signals(path, LabelsReducer(np.ones(SHAPE, int), [1]), block_bytes=3000)


def test_all_zero_and_constant_runs_are_refused(tmp_path):
    atlas = load_atlas(labels_on_another_grid(tmp_path))
    zero = write_run(tmp_path / "zero.nii.gz", np.zeros((*SHAPE, 20)))
    with pytest.raises(InputDataError, match="zero.nii.gz is all zeros"):
        extract_timeseries(zero, atlas, engine="stream")
    flat = np.repeat(np.arange(504.0).reshape(*SHAPE, 1), 20, axis=3)
    constant = write_run(tmp_path / "flat.nii.gz", flat)
    with pytest.raises(InputDataError, match="flat.nii.gz is constant over time"):
        extract_timeseries(constant, atlas, engine="stream")


def test_truncated_file_is_an_error_naming_it(tmp_path, rng):
    path = write_run(tmp_path / "cut.nii.gz", bold_data(rng, 20))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    reducer = LabelsReducer(np.ones(SHAPE, int), [1])
    with pytest.raises(InputDataError, match=r"cut.nii.gz is (truncated|damaged).*re-download"):
        stream_signals(path, reducer)


def damage_middle(path: Path) -> Path:
    """Flip bytes in the middle of a .nii.gz, keeping its gzip trailer (size) intact."""
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 8] = bytes(b ^ 0xFF for b in raw[middle : middle + 8])
    path.write_bytes(bytes(raw))
    return path


def test_file_damaged_in_the_middle_is_an_error_and_parcellate_writes_nothing(tmp_path):
    root = make_hcp_tree(tmp_path, subjects=("100307",), dirs=("LR", "RL"))
    from fmri_ica.data.layouts import discover_runs

    runs = discover_runs(root)
    damage_middle(Path(runs[0].bold))
    atlas_path = labels_on_another_grid(tmp_path)
    with pytest.raises(InputDataError, match=f"{runs[0].bold} is damaged"):
        extract_timeseries(runs[0], load_atlas(atlas_path), engine="stream")
    out = tmp_path / "out"
    summary = parcellate(runs, str(atlas_path), out, progress=False, confounds_strategy=None)
    assert summary.failed == [runs[0].key] and summary.done == [runs[1].key]
    assert [p.name for p in find_timeseries(out)] == [
        f"{runs[1].key}_atlas-toyatlas_timeseries.tsv"
    ]
    assert not list(out.glob(f"**/{runs[0].key}_*"))  # no TSV, no sidecar, no lock


# --------------------------------------------------------------------------- choice, checksum


def test_auto_streams_files_and_loads_images_in_memory(tmp_path, rng):
    path = write_run(tmp_path / "bold.nii.gz", bold_data(rng))
    atlas = load_atlas(labels_on_another_grid(tmp_path))
    from_file, in_memory = {}, {}
    streamed = extract_timeseries(path, atlas, provenance=from_file, **CLEAN)
    loaded = extract_timeseries(nib.load(path), atlas, provenance=in_memory, **CLEAN)
    assert from_file["engine"] == "stream" and in_memory == {"engine": "nilearn", "sha256": None}
    np.testing.assert_allclose(streamed, loaded, rtol=1e-6, atol=1e-5)


def test_auto_falls_back_for_files_it_cannot_stream(tmp_path, rng):
    pair = tmp_path / "bold.img"  # an .img/.hdr pair
    nib.save(nib.Nifti1Pair(bold_data(rng).astype(np.float32), AFFINE), pair)
    assert stream_reason(pair) is not None and stream_reason(tmp_path / "x.mgz") is not None
    atlas = load_atlas(labels_on_another_grid(tmp_path))
    provenance = {}
    assert extract_timeseries(pair, atlas, t_r=2.0, provenance=provenance).shape == (40, 3)
    assert provenance["engine"] == "nilearn"
    with pytest.raises(InvalidParameterError, match=r"engine='stream' cannot stream .*bold.img"):
        extract_timeseries(pair, atlas, t_r=2.0, engine="stream")


def test_engine_is_validated(tmp_path, rng):
    atlas = load_atlas(labels_on_another_grid(tmp_path))
    img = nib.load(write_run(tmp_path / "bold.nii", bold_data(rng)))
    with pytest.raises(InvalidParameterError, match=r"'engine'.*'steam'.*Did you mean 'stream'"):
        extract_timeseries(img, atlas, engine="steam")
    with pytest.raises(InvalidParameterError, match="image in memory"):
        extract_timeseries(img, atlas, engine="stream")
    with pytest.raises(InvalidParameterError, match="'engine'"):
        parcellate([], atlas, tmp_path / "out", engine="fast", progress=False)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("engine", ["stream", "nilearn"])
def test_checksum_is_the_sha256_of_the_file_bytes(tmp_path, rng, suffix, engine):
    path = write_run(tmp_path / f"bold{suffix}", bold_data(rng, 20))
    atlas = load_atlas(labels_on_another_grid(tmp_path))
    provenance = {}
    extract_timeseries(path, atlas, engine=engine, provenance=provenance)
    assert provenance["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_parcellate_gives_the_same_tables_with_either_engine(tmp_path):
    root = make_hcp_tree(tmp_path, subjects=("100307",), dirs=("LR",))
    from fmri_ica.data.layouts import discover_runs

    runs, atlas = discover_runs(root), str(labels_on_another_grid(tmp_path))
    tables = []
    for engine in ("stream", "nilearn"):
        out = tmp_path / engine
        assert parcellate(runs, atlas, out, progress=False, engine=engine).ok
        tables.append(pd.read_csv(find_timeseries(out)[0], sep="\t"))
    np.testing.assert_allclose(tables[0], tables[1], rtol=1e-5, atol=1e-4)


def test_a_reducer_built_on_another_grid_is_refused(tmp_path, rng):
    path = write_run(tmp_path / "bold.nii", bold_data(rng, 5))
    with pytest.raises(InvalidParameterError, match=r"built on a \(7, 8, 10\) grid.*bold.nii"):
        stream_signals(path, LabelsReducer(np.ones((7, 8, 10), int), [1]))
