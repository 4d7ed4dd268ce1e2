"""Find the runs of a data set: HCP trees, fMRIPrep/BIDS derivatives and manifest TSVs.

Every layout produces the same :class:`~fmri_ica.data.runs.Run` records, sorted by key.
Discovery is cheap: it globs file names, filters, and then reads only the NIfTI
*headers* of the selected runs (never the data arrays).

Conventions
-----------
- The repetition time (TR) is always read: from the NIfTI header (``pixdim[4]`` with
  its time unit) and, where there is one, from the BIDS JSON sidecar or the manifest.
  A disagreement of more than 1 ms is an error unless ``t_r`` overrides both.
- BIDS events (``*_events.tsv``) live in the *raw* data set, not in the fMRIPrep
  derivatives. ``raw_root`` points at it; by default we look in ``root`` itself, then
  ``root/../..`` (``<dataset>/derivatives/fmriprep``) and ``root/..``
  (``<dataset>/derivatives``), and take the first that holds the subject's folder.
"""

from __future__ import annotations

import difflib
import gzip
import json
import logging
import os
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .._utils import check_option
from ..exceptions import InputDataError, InvalidParameterError
from .runs import Run

__all__ = [
    "BoldInfo",
    "LAYOUTS",
    "check_finite",
    "detect_layout",
    "discover_runs",
    "header_t_r",
    "validate_bold",
]

logger = logging.getLogger(__name__)

LAYOUTS = ("auto", "hcp", "bids", "manifest")
#: Header and sidecar TRs further apart than this (seconds) are an error.
TR_TOLERANCE = 1e-3
_REDOWNLOAD = "The file is corrupt or truncated: re-download or re-copy it."
_HCP_RUN = re.compile(r"^tfMRI_(?P<task>.+)_(?P<dir>[^_]+)$")
# Entities that name a raw BIDS file; fMRIPrep adds space/res/den/desc/... on top.
_RAW_ENTITIES = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "part")
_MANIFEST_PATHS = ("bold", "events", "confounds", "mask")


# --------------------------------------------------------------------------- BOLD checks


@dataclass(frozen=True)
class BoldInfo:
    """What the header of a 4D BOLD image says (the data array is not read).

    Attributes
    ----------
    path : Path
    shape : tuple of int
        ``(x, y, z, time)``.
    affine : ndarray, shape (4, 4)
    t_r : float or None
        Repetition time in seconds from ``pixdim[4]`` and the header's time unit;
        None when the header gives none (0 or a non-time unit).
    zooms : tuple of float
        Voxel sizes (mm) and the raw ``pixdim[4]``.
    dtype : numpy.dtype
        On-disk data type.
    """

    path: Path
    shape: tuple
    affine: np.ndarray
    t_r: float | None
    zooms: tuple
    dtype: np.dtype

    @property
    def n_frames(self) -> int:
        """Number of volumes (time points)."""
        return int(self.shape[3])


def header_t_r(header) -> float | None:
    """Repetition time in seconds from a NIfTI header, or None when it has none.

    ``pixdim[4]`` is converted with the header's time unit (ms and us to s). An
    "unknown" unit is read as seconds (what nibabel and most writers assume) with a
    debug message; a non-time unit (Hz, ppm, rad/s) or a zero gives None.
    """
    zooms = header.get_zooms()
    if len(zooms) < 4:
        return None
    value = float(zooms[3])
    if not np.isfinite(value) or value <= 0:
        return None
    _, time_unit = header.get_xyzt_units()
    scale = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6, "unknown": 1.0}.get(time_unit)
    if scale is None:
        return None
    if time_unit == "unknown":
        logger.debug("NIfTI time unit unknown; reading pixdim[4]=%s as seconds", value)
    # pixdim is float32: 0.72 is stored as 0.72000003; microsecond precision is plenty.
    return round(value * scale, 6)


def validate_bold(path: str | os.PathLike, *, deep: bool = False) -> BoldInfo:
    """Check that a BOLD file exists, opens, is complete and is 4D; return its header info.

    Only the header is parsed. Completeness of a ``.nii.gz`` is checked from the gzip
    trailer (the uncompressed size it records must match what the header implies);
    only when that disagrees (or ``deep=True``) is the whole stream decompressed,
    in chunks, to confirm. ``deep=True`` also verifies the gzip CRC, catching
    corruption in the middle of a complete file.

    Parameters
    ----------
    path : str or Path
        A ``.nii`` or ``.nii.gz`` image.
    deep : bool, default=False
        Decompress the whole file to verify it (slow for large runs: seconds per GB).

    Returns
    -------
    BoldInfo

    Raises
    ------
    InputDataError
        The file is missing, unreadable, truncated or corrupt (message says to
        re-download or re-copy it), or not 4D.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"BOLD image not found: {path}")
    try:  # nibabel reports a file it may not read as one it cannot parse
        with open(path, "rb"):
            pass
    except OSError as error:
        raise InputDataError(_os_refusal(path, error)) from error
    try:
        img = nib.load(path)
        header = img.header
        shape = tuple(int(n) for n in img.shape)
        dtype = np.dtype(header.get_data_dtype())
    except OSError as error:
        if error.errno is None:  # e.g. gzip's BadGzipFile: the content, not the file system
            raise InputDataError(
                f"Cannot read the NIfTI image {path} ({type(error).__name__}: {error}). {_REDOWNLOAD}"
            ) from error
        raise InputDataError(_os_refusal(path, error)) from error
    except Exception as error:  # nibabel raises many types for damaged files
        raise InputDataError(
            f"Cannot read the NIfTI image {path} ({type(error).__name__}: {error}). {_REDOWNLOAD}"
        ) from error
    if len(shape) != 4:
        raise InputDataError(
            f"{path} has shape {shape} ({len(shape)}D); a 4D BOLD time series "
            "(x, y, z, time) is expected. Is this a mask or a single volume?"
        )
    # The proxy knows where the data start (the loaded header's vox_offset may read 0).
    offset = int(getattr(img.dataobj, "offset", 0))
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    _check_complete(path, expected, deep=deep)
    return BoldInfo(
        path=path,
        shape=shape,
        affine=np.asarray(img.affine, dtype=float),
        t_r=header_t_r(header),
        zooms=tuple(float(z) for z in header.get_zooms()),
        dtype=dtype,
    )


def _os_refusal(path: Path, error: OSError) -> str:
    """The file system refused to read ``path``: say so, not that the file is damaged."""
    if isinstance(error, PermissionError):
        return (f"Cannot read {path}: permission denied. Check its permissions and those of "
                "the folders above it (ls -l), or ask its owner.")
    return f"Cannot read {path}: {error.strerror or error}. Check the disk or network file system."


def _check_complete(path: Path, expected: int, *, deep: bool) -> None:
    """Raise if the (uncompressed) file holds fewer bytes than the header implies."""
    if not path.name.endswith(".gz"):
        size = path.stat().st_size
        if size < expected:
            raise InputDataError(
                f"{path} is truncated: {size} bytes, the header implies {expected}. {_REDOWNLOAD}"
            )
        return
    if not deep:
        with open(path, "rb") as handle:
            handle.seek(-4, os.SEEK_END)
            recorded = int.from_bytes(handle.read(4), "little")
        # The trailer stores the size modulo 2**32; a single-member gzip matches exactly.
        if recorded == expected % 2**32:
            return
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 24):
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as error:
        raise InputDataError(f"{path} is damaged ({error}). {_REDOWNLOAD}") from error
    if total < expected:
        raise InputDataError(
            f"{path} is truncated: {total} bytes uncompressed, the header implies "
            f"{expected}. {_REDOWNLOAD}"
        )


def check_finite(data: np.ndarray, path: str | os.PathLike | None = None) -> None:
    """Raise if ``data`` holds NaN or infinite values.

    Parameters
    ----------
    data : ndarray
        ``(x, y, z, time)`` image data, or ``(time, regions)`` signals.
    path : str or Path, optional
        The file the data came from, named in the message.

    Raises
    ------
    InputDataError
        With the number of bad voxels (4D: voxels with any non-finite time point;
        2D: regions with any) and bad values.
    """
    data = np.asarray(data)
    bad = ~np.isfinite(data)
    n_values = int(bad.sum())
    if n_values == 0:
        return
    if data.ndim == 4:
        n_units, unit = int(bad.any(axis=-1).sum()), "voxels"
    elif data.ndim == 2:
        n_units, unit = int(bad.any(axis=0).sum()), "regions"
    else:
        n_units, unit = n_values, "values"
    source = f" in {path}" if path is not None else ""
    raise InputDataError(
        f"{n_units} {unit} ({n_values} values) are NaN or infinite{source}. Check the "
        "preprocessing output, or mask those voxels out (e.g. a brain mask)."
    )


# --------------------------------------------------------------------------- discovery


def detect_layout(root: str | os.PathLike) -> str:
    """Return ``"hcp"``, ``"bids"`` or ``"manifest"`` for a data root.

    A ``.tsv`` file is a manifest; a folder with ``*/MNINonLinear/Results`` (or that is
    itself a subject folder with ``MNINonLinear/Results``) is HCP; a folder with
    ``sub-*/[ses-*/]func/*_desc-preproc_bold.nii[.gz]`` is fMRIPrep derivatives.
    """
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".tsv":
        return "manifest"
    if not root.is_dir():
        raise InputDataError(f"Data root not found: {root}")
    try:  # glob would see an unreadable folder as an empty one
        os.listdir(root)
    except OSError as error:
        raise InputDataError(_os_refusal(root, error)) from error
    if (root / "MNINonLinear" / "Results").is_dir() or any(root.glob("*/MNINonLinear/Results")):
        return "hcp"
    if _bids_bold_files(root):
        return "bids"
    hint = ""
    if _bids_bold_files(root / "derivatives" / "fmriprep"):
        hint = f" This looks like a raw BIDS data set: did you mean {root / 'derivatives' / 'fmriprep'}?"
    raise InputDataError(
        f"Cannot tell the layout of {root}: it holds neither HCP subject folders "
        "(<subject>/MNINonLinear/Results/tfMRI_*) nor fMRIPrep derivatives "
        "(sub-*/func/*_desc-preproc_bold.nii.gz). Point at the right folder, pass "
        f"layout=..., or list the runs in a manifest TSV.{hint}"
    )


def discover_runs(
    root: str | os.PathLike | None,
    layout: str = "auto",
    *,
    subjects: Iterable[str] | str | None = None,
    tasks: Iterable[str] | str | None = None,
    runs: Iterable[str] | str | None = None,
    sessions: Iterable[str] | str | None = None,
    space: str | None = None,
    raw_root: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    t_r: float | None = None,
    require_events: bool = True,
    keep_failed: bool = False,
) -> list[Run]:
    """List the runs of a data set, filtered, with their TR, events, confounds and mask.

    Parameters
    ----------
    root : str or Path or None
        HCP folder (holding subject folders), fMRIPrep derivatives folder, or a
        manifest ``.tsv``. May be None when ``manifest`` is given.
    layout : {"auto", "hcp", "bids", "manifest"}, default="auto"
        ``"auto"`` detects it (see :func:`detect_layout`).
    subjects, tasks, runs, sessions : str or list of str, optional
        Keep only these. ``sub-``/``ses-``/``run-`` prefixes are accepted; tasks match
        case-insensitively (``motor`` finds HCP ``MOTOR``) and numeric labels ignore
        zero padding (``1`` finds ``01``). A value that matches nothing is an error
        listing what exists.
    space : str, optional
        fMRIPrep output space, e.g. ``"MNI152NLin2009cAsym"`` or, when several
        resolutions exist, ``"MNI152NLin2009cAsym:res-2"`` (fMRIPrep's own syntax).
        Default: the one space present; several and none chosen is an error.
    raw_root : str or Path, optional
        Raw BIDS data set holding ``*_events.tsv`` and ``*_bold.json`` (BIDS only).
        Default: the first of ``root``, ``root/../..``, ``root/..`` that holds the
        subject's folder.
    manifest : str or Path, optional
        A manifest TSV (same as passing it as ``root``).
    t_r : float, optional
        Repetition time in seconds for every run. It overrides the header and sidecar
        (a disagreement with them is logged, not raised).
    require_events : bool, default=True
        If True a run without events (no HCP ``EVs`` folder, no BIDS ``events.tsv``)
        is an error; if False its ``events`` is None.
    keep_failed : bool, default=False
        If True a run whose files are wrong (damaged or 3D BOLD, no TR, no events) is
        listed with its error in ``run.extra["error"]`` instead of raising, so that a batch
        job records it as that run's failure and goes on with the others.

    Returns
    -------
    list of Run
        Sorted by :attr:`Run.key`.

    Raises
    ------
    InvalidParameterError
        Unknown layout, filter value or space.
    InputDataError
        Missing or damaged BOLD, missing events (when required), duplicate runs, TR
        missing or inconsistent, malformed manifest.
    """
    check_option("layout", layout, LAYOUTS)
    if t_r is not None and not (np.isfinite(t_r) and t_r > 0):
        raise InvalidParameterError(f"Invalid value for 't_r': {t_r!r}. Expected seconds > 0.")
    if manifest is not None:
        if layout not in ("auto", "manifest"):
            raise InvalidParameterError(
                f"'manifest' was given, so 'layout' must be 'manifest', not {layout!r}."
            )
        root, layout = manifest, "manifest"
    if root is None:
        raise InvalidParameterError("Pass a data root (or manifest=...).")
    root = Path(root).expanduser()
    if layout == "auto":
        layout = detect_layout(root)
    if layout != "bids" and space is not None:
        raise InvalidParameterError(f"'space' applies to the BIDS layout only, not {layout!r}.")
    if layout == "hcp":
        candidates = _hcp_candidates(root)
    elif layout == "bids":
        candidates = _bids_candidates(root, space)
    else:
        candidates = _manifest_candidates(root)
    candidates = _apply_filters(candidates, subjects, tasks, runs, sessions, root)
    _check_duplicates(candidates)
    resolve = {"hcp": _resolve_hcp, "bids": _resolve_bids, "manifest": _resolve_manifest}[layout]
    raw = None if raw_root is None else Path(raw_root).expanduser()
    out = []
    for c in candidates:
        try:
            out.append(resolve(c, root=root, raw_root=raw, t_r=t_r, require_events=require_events))
        except InputDataError as error:
            if not keep_failed:
                raise
            logger.warning("%s: %s", c.key, error)
            out.append(replace(c, extra={"error": str(error)}))
    if not out:
        logger.warning("No run under %s matches all the filters together", root)
    logger.info("Found %d %s run(s) under %s", len(out), layout, root)
    return sorted(out, key=lambda r: r.key)


def _apply_filters(candidates, subjects, tasks, runs, sessions, root) -> list[Run]:
    if not candidates:
        raise InputDataError(f"No runs found under {root}.")
    specs = [
        ("subjects", subjects, "subject", "sub-", False),
        ("sessions", sessions, "session", "ses-", False),
        ("tasks", tasks, "task", "task-", True),
        ("runs", runs, "run", "run-", False),
    ]
    for name, wanted, attr, prefix, fold in specs:
        if wanted is None:
            continue
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        present = sorted({getattr(c, attr) for c in candidates})
        keep = set()
        for value in wanted:
            value = str(value)
            value = value[len(prefix) :] if value.startswith(prefix) else value
            hits = [p for p in present if _same_label(p, value, fold)]
            if not hits:
                message = (
                    f"Invalid value for {name!r}: {value!r} is not in {root}. "
                    f"Present: {', '.join(map(repr, present)) or 'none'}."
                )
                close = difflib.get_close_matches(value, present, n=1)
                if close:
                    message += f" Did you mean {close[0]!r}?"
                raise InvalidParameterError(message)
            keep.update(hits)
        candidates = [c for c in candidates if getattr(c, attr) in keep]
    return candidates


def _same_label(present: str, wanted: str, fold: bool) -> bool:
    """Exact match; tasks also ignore case; numeric labels ignore zero padding (1 == 01)."""
    if present == wanted or (fold and present.lower() == wanted.lower()):
        return True
    return present.isdigit() and wanted.isdigit() and int(present) == int(wanted)


def _check_duplicates(candidates: list[Run]) -> None:
    seen: dict[str, Run] = {}
    for c in candidates:
        if c.key in seen:
            raise InputDataError(
                f"Two files claim the same run {c.key}: {seen[c.key].bold} and {c.bold}. "
                "Remove or rename one, or narrow the selection (e.g. space=...)."
            )
        seen[c.key] = c


def _choose_t_r(
    info: BoldInfo, other: float | None, source: str, override: float | None
) -> tuple[float, str]:
    """Reconcile header, sidecar/manifest and override TRs; return (t_r, where from)."""
    header = info.t_r
    if override is not None:
        for value, where in ((header, "header"), (other, source)):
            if value is not None and abs(value - override) > TR_TOLERANCE:
                logger.warning(
                    "%s: t_r override %.4g s replaces the %s TR %.4g s",
                    info.path,
                    override,
                    where,
                    value,
                )
        return float(override), "override"
    if header is not None and other is not None and abs(header - other) > TR_TOLERANCE:
        raise InputDataError(
            f"TR mismatch for {info.path}: the NIfTI header says {header:.6g} s, the "
            f"{source} says {other:.6g} s. Fix the file, or pass t_r=... (--t-r) to override."
        )
    if other is not None:
        return float(other), source
    if header is not None:
        return float(header), "header"
    raise InputDataError(
        f"No repetition time for {info.path}: the header has none (pixdim[4]=0 or no time "
        "unit) and there is no sidecar/manifest value. Pass t_r=... (--t-r)."
    )


def _bold_extra(info: BoldInfo, t_r_source: str, **more) -> dict:
    return {"shape": list(info.shape), "t_r_source": t_r_source, **more}


# --------------------------------------------------------------------------- HCP


def _hcp_subject_dirs(root: Path) -> list[Path]:
    if (root / "MNINonLinear" / "Results").is_dir():
        return [root]
    unreadable = [p.name for p in sorted(root.iterdir())
                  if p.is_dir() and not os.access(p, os.R_OK | os.X_OK)]
    if unreadable:
        logger.warning("Skipped %d folder(s) of %s that cannot be read (permissions): %s",
                       len(unreadable), root, ", ".join(unreadable))
    return sorted(p.parents[1] for p in root.glob("*/MNINonLinear/Results") if p.is_dir())


def _hcp_candidates(root: Path) -> list[Run]:
    out = []
    for subject_dir in _hcp_subject_dirs(root):
        for run_dir in sorted((subject_dir / "MNINonLinear" / "Results").glob("tfMRI_*")):
            match = _HCP_RUN.match(run_dir.name)
            if not run_dir.is_dir() or not match:
                continue
            out.append(
                Run(
                    subject=subject_dir.name,
                    task=match["task"],
                    run=match["dir"],
                    bold=run_dir / f"{run_dir.name}.nii.gz",
                    layout="hcp",
                )
            )
    return out


def _resolve_hcp(c: Run, *, t_r, require_events, **_) -> Run:
    run_dir = c.bold.parent
    if not c.bold.is_file():
        raise InputDataError(f"HCP BOLD image missing: {c.bold} (the run folder exists).")
    info = validate_bold(c.bold)
    value, source = _choose_t_r(info, None, "header", t_r)
    evs = run_dir / "EVs"
    if not evs.is_dir():
        if require_events:
            raise InputDataError(
                f"HCP EVs folder missing: {evs}. Unpack the task EV files (the "
                "'..._3T_tfMRI_<TASK>_preproc' package holds them), or pass "
                "require_events=False (--no-events) to list runs without them."
            )
        evs = None
    movement = run_dir / "Movement_Regressors.txt"
    mask = run_dir / "brainmask_fs.2.nii.gz"
    return replace(
        c,
        events=evs,
        confounds=movement if movement.is_file() else None,
        mask=mask if mask.is_file() else None,
        t_r=value,
        extra=_bold_extra(info, source),
    )


# --------------------------------------------------------------------------- BIDS


def _bids_bold_files(root: Path) -> list[Path]:
    files = []
    for pattern in (
        "sub-*/func/*_desc-preproc_bold.nii*",
        "sub-*/ses-*/func/*_desc-preproc_bold.nii*",
    ):
        files.extend(p for p in root.glob(pattern) if p.name.endswith((".nii", ".nii.gz")))
    return sorted(files)


def _entities(path: Path) -> dict:
    from nilearn.interfaces.bids import parse_bids_filename

    parsed = parse_bids_filename(str(path))
    # nilearn >= 0.13 nests entities; older versions return them flat.
    entities = parsed["entities"] if "entities" in parsed else parsed
    return {k: v for k, v in entities.items() if v is not None}


def _space_id(entities: dict) -> str:
    space = entities.get("space", "")
    return f"{space}:res-{entities['res']}" if "res" in entities else space


def _bids_candidates(root: Path, space: str | None) -> list[Run]:
    found = []
    for path in _bids_bold_files(root):
        entities = _entities(path)
        if "sub" not in entities or "task" not in entities:
            logger.debug("Skipping %s: no sub/task entity", path)
            continue
        found.append((path, entities))
    if not found:
        raise InputDataError(f"No fMRIPrep *_desc-preproc_bold.nii.gz files under {root}.")
    spaces = sorted({_space_id(e) for _, e in found})
    if space is None:
        if len(spaces) > 1:
            raise InvalidParameterError(
                f"{root} holds runs in several spaces: {', '.join(map(repr, spaces))}. "
                "Choose one with space=... (--space)."
            )
        space = spaces[0]
    else:
        plain = sorted({s.split(":")[0] for s in spaces})
        if space not in spaces:
            if space in plain and sum(s.split(":")[0] == space for s in spaces) > 1:
                raise InvalidParameterError(
                    f"Space {space!r} exists at several resolutions in {root}: "
                    f"{', '.join(s for s in spaces if s.split(':')[0] == space)}. Choose one."
                )
            check_option("space", space, spaces + [p for p in plain if p not in spaces])
    out = []
    for path, e in found:
        if space not in (_space_id(e), e.get("space", "")):
            continue
        out.append(
            Run(
                subject=e["sub"],
                task=e["task"],
                run=e.get("run", ""),
                session=e.get("ses", ""),
                bold=path,
                layout="bids",
                extra={"entities": e},
            )
        )
    return out


def _raw_stem(entities: dict) -> str:
    return "_".join(f"{k}-{entities[k]}" for k in _RAW_ENTITIES if k in entities)


def _raw_roots(root: Path, raw_root: Path | None, subject: str) -> list[Path]:
    if raw_root is not None:
        return [raw_root]
    candidates = [root, root.parent.parent, root.parent]
    return [c for c in candidates if (c / f"sub-{subject}").is_dir()]


def _func_dir(base: Path, e: dict) -> Path:
    folder = base / f"sub-{e['sub']}"
    if "ses" in e:
        folder = folder / f"ses-{e['ses']}"
    return folder / "func"


def _resolve_bids(c: Run, *, root: Path, raw_root: Path | None, t_r, require_events) -> Run:
    e = c.extra["entities"]
    stem = _raw_stem(e)
    raws = _raw_roots(root, raw_root, c.subject)
    info = validate_bold(c.bold)

    # Sidecar: the derivative's own JSON first, then the raw run's, then BIDS inheritance.
    json_candidates = [c.bold.with_name(c.bold.name.split(".nii")[0] + ".json")]
    for base in raws:
        json_candidates += [
            _func_dir(base, e) / f"{stem}_bold.json",
            base / f"task-{c.task}_bold.json",
        ]
    sidecar_path = next((p for p in json_candidates if p.is_file()), None)
    sidecar_t_r = None
    if sidecar_path is not None:
        try:
            sidecar = json.loads(sidecar_path.read_text())
        except (OSError, ValueError) as error:
            raise InputDataError(f"Cannot read the JSON sidecar {sidecar_path}: {error}") from error
        if "RepetitionTime" in sidecar:
            sidecar_t_r = float(sidecar["RepetitionTime"])
    source = f"sidecar {sidecar_path}" if sidecar_t_r is not None else "sidecar"
    value, source = _choose_t_r(info, sidecar_t_r, source, t_r)

    event_candidates = []
    for base in raws:
        event_candidates += [
            _func_dir(base, e) / f"{stem}_events.tsv",
            base / f"task-{c.task}_events.tsv",
        ]
    events = next((p for p in event_candidates if p.is_file()), None)
    if events is None and require_events:
        looked = ", ".join(map(str, event_candidates)) or (
            f"no raw BIDS folder with sub-{c.subject} in {root}, {root.parent.parent} or {root.parent}"
        )
        raise InputDataError(
            f"No events.tsv for {c.bold.name}; looked for: {looked}. Pass raw_root=... "
            "(--raw-root) pointing at the raw BIDS data set, or require_events=False (--no-events)."
        )

    func = c.bold.parent
    confounds = sorted(
        p
        for suffix in ("timeseries", "regressors")
        for p in func.glob(f"{stem}*_desc-confounds_{suffix}.tsv")
        if _raw_stem(_entities(p)) == stem
    )
    mask = c.bold.with_name(c.bold.name.replace("_desc-preproc_bold", "_desc-brain_mask"))
    return replace(
        c,
        events=events,
        confounds=confounds[0] if confounds else None,
        mask=mask if mask.is_file() else None,
        t_r=value,
        extra=_bold_extra(info, source, entities=e, space=_space_id(e)),
    )


# --------------------------------------------------------------------------- manifest


def _manifest_candidates(path: Path) -> list[Run]:
    import pandas as pd

    if not path.is_file():
        raise InputDataError(f"Manifest not found: {path}")
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as error:
        raise InputDataError(f"Cannot read the manifest {path} as a TSV: {error}") from error
    missing = [c for c in ("bold", "subject", "task") if c not in table.columns]
    if missing:
        raise InputDataError(
            f"Manifest {path} lacks column(s) {missing}; it has {list(table.columns)}. Required: "
            "bold, subject, task; optional: run, session, events, confounds, mask, t_r."
        )
    base = path.parent
    out = []
    for i, row in table.iterrows():
        for column in ("bold", "subject", "task"):
            if not row[column].strip():
                raise InputDataError(f"Manifest {path}, row {i + 2}: empty {column!r}.")
        paths = {
            k: (base / row[k].strip()).expanduser() if row.get(k, "").strip() else None
            for k in _MANIFEST_PATHS
        }
        manifest_t_r = row.get("t_r", "").strip()
        try:
            manifest_t_r = float(manifest_t_r) if manifest_t_r else None
        except ValueError as error:
            raise InputDataError(
                f"Manifest {path}, row {i + 2}: t_r {manifest_t_r!r} is not a number."
            ) from error
        out.append(
            Run(
                subject=row["subject"].strip(),
                task=row["task"].strip(),
                run=row.get("run", "").strip(),
                session=row.get("session", "").strip(),
                bold=paths["bold"],
                events=paths["events"],
                confounds=paths["confounds"],
                mask=paths["mask"],
                t_r=manifest_t_r,
                layout="manifest",
                extra={"manifest": str(path), "row": int(i) + 2},
            )
        )
    return out


def _resolve_manifest(c: Run, *, t_r, require_events, **_) -> Run:
    where = f"manifest {c.extra['manifest']}, row {c.extra['row']}"
    info = validate_bold(c.bold)
    value, source = _choose_t_r(info, c.t_r, where, t_r)
    events = c.events
    if events is None and require_events:
        raise InputDataError(
            f"{where}: no events for {c.bold} (empty 'events' column). Fill it, or pass "
            "require_events=False (--no-events)."
        )
    for name, p in (("events", events), ("confounds", c.confounds), ("mask", c.mask)):
        if p is not None and not p.exists():
            raise InputDataError(f"{where}: {name} file not found: {p}")
    return replace(c, t_r=value, extra={**c.extra, **_bold_extra(info, source)})
