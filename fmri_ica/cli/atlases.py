"""List the atlases, or build one on a target grid (and cache it).

`fmri-ica atlases` prints the catalogue: name, kind, regions, offline or download,
space, licence (wrapped to the terminal, at most 100 columns; --json adds each atlas's
source, citation and options). `fmri-ica atlases build NAME --target IMG` builds the
atlas on the grid of IMG (e.g. a BOLD run), fills the cache, and can save the label
image and table; on a login node with network it also pre-downloads nilearn's atlases.

Examples:
    fmri-ica atlases
    fmri-ica atlases --json
    fmri-ica atlases build gm_kmeans --option n_regions=400 --target bold.nii.gz --save gm400
"""

from __future__ import annotations

import argparse
import textwrap

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
            columns = ["name", "kind", "n_regions", "offline", "space", "licence"]
            print(format_table(shown[columns].to_dict("records"), width=_terminal_width()))
            print("Source, citation and options of each atlas: fmri-ica atlases --json")
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


def _terminal_width(limit: int = 100) -> int:
    import shutil

    return max(60, min(limit, shutil.get_terminal_size(fallback=(limit, 24)).columns))


def format_table(rows: list[dict], width: int = 100, gap: int = 2) -> str:
    """Rows as a plain-text table no wider than ``width``: the widest columns wrap.

    Parameters
    ----------
    rows : list of dict
        One dict per row, the same keys (the column names, in order) in each.
    width : int, default=100
        Most characters per line; a column is never narrowed below 10 characters or its
        header's longest word, so very many columns may still overflow.
    gap : int, default=2
        Spaces between columns.

    Returns
    -------
    str
        Header and rows, left-aligned (numbers right-aligned), without a final newline.
    """
    if not rows:
        return ""
    names = list(rows[0])
    cells = [[("" if row[n] is None else str(row[n])) for n in names] for row in rows]
    numeric = [all(isinstance(row[n], (int, float)) for row in rows) for n in names]
    widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(names)]
    floor = [max(10, *(len(w) for w in n.split())) for n in names]
    excess = sum(widths) + gap * (len(names) - 1) - width
    while excess > 0:
        i = max(range(len(names)), key=lambda k: widths[k] - floor[k])
        cut = min(excess, widths[i] - floor[i])
        if cut <= 0:
            break
        widths[i] -= cut
        excess -= cut
    lines = []
    for row in [names, *cells]:
        wrapped = [
            textwrap.wrap(text, w, break_on_hyphens=False) or [""]
            for text, w in zip(row, widths, strict=True)
        ]
        for k in range(max(map(len, wrapped))):
            parts = []
            for i, pieces in enumerate(wrapped):
                text = pieces[k] if k < len(pieces) else ""
                right = numeric[i] and row is not names
                parts.append(text.rjust(widths[i]) if right else text.ljust(widths[i]))
            lines.append((" " * gap).join(parts).rstrip())
    return "\n".join(lines)
