"""List the atlases, or build one on a target grid (and cache it).

`fmri-ica atlases` prints the catalogue: name, kind, regions, offline or download,
space, licence. `fmri-ica atlases build NAME --target IMG` builds the atlas on the grid
of IMG (e.g. a BOLD run), fills the cache, and can save the label image and table;
on a login node with network it also pre-downloads nilearn's atlases.

Examples:
    fmri-ica atlases
    fmri-ica atlases --json
    fmri-ica atlases build gm_kmeans --option n_regions=400 --target bold.nii.gz --save gm400
"""

from __future__ import annotations

import argparse

from ._common import add_atlas_option_argument, parse_key_values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["list", "build"], default="list")
    parser.add_argument("name", nargs="?", help="atlas to build (build only)")
    parser.add_argument("--target", help="image whose grid the atlas is built on")
    parser.add_argument("--mask", help="brain mask to clip the atlas to")
    add_atlas_option_argument(parser, "--option")
    parser.add_argument("--cache-dir", help="atlas cache folder (default $FMRI_ICA_CACHE)")
    parser.add_argument("--save", metavar="STEM", help="also write STEM.nii.gz and STEM.tsv")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from ..data.atlases import list_atlases, load_atlas
    from ..exceptions import InvalidParameterError

    if args.action == "list":
        table = list_atlases()
        if args.json:
            print(table.to_json(orient="records", indent=2))
        else:
            shown = table.assign(offline=table["offline"].map({True: "yes", False: "download"}))
            print(
                shown[["name", "kind", "n_regions", "offline", "space", "licence"]].to_string(
                    index=False
                )
            )
        return 0
    if not args.name:
        raise InvalidParameterError("`fmri-ica atlases build` needs an atlas NAME.")
    atlas = load_atlas(
        args.name,
        target_img=args.target,
        mask_img=args.mask,
        cache_dir=args.cache_dir,
        **parse_key_values(args.option, "--option"),
    )
    if args.save:
        _save(atlas, args.save)
    info = {
        "name": atlas.name,
        "kind": atlas.kind,
        "n_regions": atlas.n_regions,
        "shape": list(atlas.img.shape),
        "checksum": atlas.checksum,
        "dropped": atlas.dropped,
    }
    print(json.dumps(info, indent=None if not args.json else 2))
    return 0


def _save(atlas, stem: str) -> None:
    import nibabel as nib

    from .._utils import atomic_path, write_text

    with atomic_path(f"{stem}.nii.gz") as tmp:
        nib.save(atlas.img, tmp)
    write_text(f"{stem}.tsv", atlas.labels.to_csv(sep="\t", index=False))
