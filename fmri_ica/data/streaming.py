"""Region signals in one sequential pass over a 4D NIfTI file (``.nii`` / ``.nii.gz``).

nibabel parses the header; the voxel bytes after ``vox_offset`` are then read (and
decompressed) a few frames at a time, scaled as nibabel scales them, checked and reduced
to region signals, so the run is never in memory whole: an HCP run (91x109x91x405
float32, 1.5 GB) needs a few tens of MB instead of ~3 GB. The same pass

* checks the content as :func:`fmri_ica.data.parcellation.extract_timeseries` does
  (NaN / inf voxels, an all-zero run, a run constant over time, a truncated or damaged
  file), with the same messages;
* computes the SHA-256 of the file's bytes as stored on disk (compressed or not), so
  provenance costs no second read.

Decompression uses ISA-L (``pip install isal``, about 2x faster than zlib) when it is
installed, else the standard library's :mod:`gzip`.

Reducers (what a block of frames becomes):

:class:`LabelsReducer`
    Mean per label: the numbers of :class:`~nilearn.maskers.NiftiLabelsMasker` and of
    :func:`fmri_ica.data.parcellation.label_means`.
:class:`MapsReducer`
    The least-squares projection onto probabilistic maps of
    :class:`~nilearn.maskers.NiftiMapsMasker` (via the maps' pseudo-inverse).
:class:`SpheresReducer`
    Mean over spheres around seeds, the voxels of
    :class:`~nilearn.maskers.NiftiSpheresMasker`.

Cleaning (detrending, filters, confounds, standardising) is not done here: it stays
``nilearn.signal.clean`` on the region signals, as in nilearn's maskers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.volumeutils import apply_read_scaling

from ..exceptions import InputDataError, InvalidParameterError

try:  # optional: ISA-L inflates about twice as fast as zlib
    from isal import igzip as _igzip
    from isal.isal_zlib import error as _IsalError
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    _igzip, _IsalError = None, zlib.error

__all__ = [
    "LabelsReducer",
    "MapsReducer",
    "SpheresReducer",
    "StreamResult",
    "stream_reason",
    "stream_signals",
]

#: Uncompressed bytes decoded per block (whole frames, at least one).
BLOCK_BYTES = 4 << 20
_READ_CHUNK = 1 << 20
_REDOWNLOAD = "The file is corrupt or truncated: re-download or re-copy it."
_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class StreamResult:
    """What one pass over a run gave.

    Attributes
    ----------
    signals : ndarray of float64, shape (n_frames, n_regions)
        Raw region signals (before any cleaning).
    sha256 : str or None
        Hex SHA-256 of the file's bytes as stored (``None`` when not asked for); equal to
        ``hashlib.sha256(Path(path).read_bytes()).hexdigest()``.
    n_frames : int
    decompressor : {"isal", "zlib", "none"}
        What inflated the data (``"none"``: an uncompressed ``.nii``).
    """

    signals: np.ndarray
    sha256: str | None
    n_frames: int
    decompressor: str


# --------------------------------------------------------------------------- reducers


class LabelsReducer:
    """Mean signal per label of a 3D label image.

    Parameters
    ----------
    labels : ndarray of int, shape (X, Y, Z)
        On the data grid; 0 = background.
    index : ndarray of int, shape (R,)
        Label values in output column order; each must have >= 1 voxel.

    Attributes
    ----------
    voxels : ndarray of int, shape (V,)
        Fortran-order (file-order) indices of the voxels used (all reducers have it,
        with ``shape``, the grid, and ``n_regions``).
    """

    def __init__(self, labels: np.ndarray, index: np.ndarray):
        labels = np.asarray(labels)
        index = np.asarray(index)
        inside = np.isin(labels, index)
        # Voxels in C order, then stably by label: the summation order of label_means.
        where = np.nonzero(inside)
        voxel_labels = labels[where]
        order = np.argsort(voxel_labels, kind="stable")
        self.voxels = np.ravel_multi_index(where, labels.shape, order="F")[order]
        sorted_index = np.sort(index)
        self._starts = np.searchsorted(voxel_labels[order], sorted_index)
        self._counts = np.diff(np.append(self._starts, len(order)))
        if (self._counts == 0).any():
            missing = sorted_index[self._counts == 0].tolist()
            raise InvalidParameterError(
                f"Labels {missing} of 'index' have no voxel in 'labels': drop them."
            )
        self._columns = np.searchsorted(sorted_index, index)
        self.n_regions, self.shape = len(index), labels.shape

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """values: (n, V) in ``voxels`` order -> (n, R) float64 label means."""
        sums = np.add.reduceat(values.astype(np.float64), self._starts, axis=1)
        return (sums / self._counts)[:, self._columns]


class MapsReducer:
    """Least-squares region signals of probabilistic maps (NiftiMapsMasker's).

    nilearn solves ``maps @ signals = data`` over all voxels with ``scipy.linalg.lstsq``;
    voxels where every map is 0 do not change that solution, so the pseudo-inverse of the
    maps restricted to their support gives it frame by frame.

    Parameters
    ----------
    maps : ndarray, shape (X, Y, Z, R)
        On the data grid.
    """

    def __init__(self, maps: np.ndarray):
        maps = np.asarray(maps)
        flat = maps.reshape(-1, maps.shape[3], order="F")
        self.voxels = np.flatnonzero(np.any(flat != 0, axis=1))
        # (R, V) float64: the solution in double precision (nilearn's is in the data's).
        self._pinv = np.linalg.pinv(flat[self.voxels].astype(np.float64))
        self.n_regions, self.shape = maps.shape[3], maps.shape[:3]

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """values: (n, V) in ``voxels`` order -> (n, R) float64."""
        return values.astype(np.float64) @ self._pinv.T


class SpheresReducer:
    """Mean over the voxels of spheres around seeds (NiftiSpheresMasker's spheres).

    The voxels come from nilearn's own ``apply_mask_and_get_affinity`` (voxels within
    ``radius`` mm of the seed, plus the voxel nearest to it), so the regions are
    nilearn's; overlapping spheres are allowed.

    Parameters
    ----------
    seeds : array-like, shape (R, 3)
        Centres in world (mm) coordinates.
    radius : float or None
        mm; None: the nearest voxel only.
    target_img : Niimg-like
        Only its grid (shape, affine) is used.
    mask_img : Niimg-like, optional
        Voxels outside it are not used.
    """

    def __init__(self, seeds, radius: float | None, target_img, mask_img=None):
        from nilearn.image import resample_to_img
        from nilearn.maskers.nifti_spheres_masker import apply_mask_and_get_affinity

        shape = tuple(int(s) for s in target_img.shape[:3])
        grid = nib.Nifti1Image(np.ones(shape, np.int8), target_img.affine)
        if mask_img is not None:
            grid = resample_to_img(
                mask_img, grid, interpolation="nearest", force_resample=True, copy_header=True
            )
        _, affinity = apply_mask_and_get_affinity(
            np.asarray(seeds, dtype=float), None, radius, True, mask_img=grid
        )
        columns = np.flatnonzero(np.asarray(affinity.sum(axis=0)).ravel())
        inside = np.nonzero(np.asarray(grid.dataobj) != 0)  # nilearn's voxel (C) order
        self.voxels = np.ravel_multi_index(
            tuple(axis[columns] for axis in inside), shape, order="F"
        )
        weights = affinity.tocsr()[:, columns].astype(np.float64)
        counts = np.asarray(weights.sum(axis=1)).ravel()
        if (counts == 0).any():
            raise InvalidParameterError(
                f"'seeds' {np.flatnonzero(counts == 0).tolist()} cover no voxel of the grid "
                "(or mask): drop them or give a larger radius."
            )
        self._weights = (weights.multiply(1.0 / counts[:, None])).T.tocsr()  # (V, R)
        self.n_regions, self.shape = len(counts), shape

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """values: (n, V) in ``voxels`` order -> (n, R) float64."""
        return np.asarray(self._weights.T @ values.astype(np.float64).T).T


# --------------------------------------------------------------------------- the pass


def stream_reason(path) -> str | None:
    """Why ``path`` cannot be streamed, or None when it can.

    Streamable: a ``.nii`` / ``.nii.gz`` single-file NIfTI-1/2, 4D, real numbers, in
    the usual (Fortran) voxel order.
    """
    if not isinstance(path, (str, os.PathLike)):
        return "not a file path"
    name = str(path).lower()
    if not name.endswith(_SUFFIXES):
        return "not a .nii / .nii.gz file"
    try:
        img = nib.load(path)
    except Exception as error:  # unreadable: today's path reports it
        return f"header not readable ({error})"
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        return f"a {type(img).__name__}, not a single-file NIfTI"
    dtype = np.dtype(img.get_data_dtype())
    if len(img.shape) != 4 or dtype.kind not in "iuf" or getattr(img.dataobj, "order", "F") != "F":
        return f"shape {img.shape}, dtype {dtype}: not a plain 4D real-valued series"
    return None


def stream_signals(
    path: str | os.PathLike,
    reducer,
    *,
    checksum: bool = True,
    block_bytes: int = BLOCK_BYTES,
) -> StreamResult:
    """Region signals of a 4D NIfTI file in one sequential pass.

    Parameters
    ----------
    path : str or Path
        A ``.nii`` or ``.nii.gz`` 4D image (see :func:`stream_reason`).
    reducer : LabelsReducer, MapsReducer or SpheresReducer
        Built on this image's grid.
    checksum : bool, default=True
        Also compute the SHA-256 of the file's bytes (:attr:`StreamResult.sha256`).
    block_bytes : int, default=4 MiB
        Uncompressed bytes handled at a time (whole frames; at least one).

    Returns
    -------
    StreamResult
        ``signals``: float64, shape (n_frames, n_regions), before cleaning.

    Raises
    ------
    InputDataError
        Truncated or damaged file, NaN / inf voxels, an all-zero run, a run constant over
        time, a file it cannot stream (the file is named in each message).
    InvalidParameterError
        A reducer built on another grid.
    """
    path = Path(path)
    reason = stream_reason(path)
    if reason is not None:
        raise InputDataError(f"Cannot stream {path}: {reason}.")
    proxy = nib.load(path).dataobj
    shape, dtype = tuple(int(s) for s in proxy.shape), np.dtype(proxy.dtype)
    if tuple(reducer.shape) != shape[:3]:
        raise InvalidParameterError(
            f"The reducer was built on a {tuple(reducer.shape)} grid but {path} has "
            f"{shape[:3]} voxels: build it on this image's grid."
        )
    n_voxels, n_frames = int(np.prod(shape[:3])), shape[3]
    per_block = max(1, block_bytes // (n_voxels * dtype.itemsize))
    check = _ContentCheck(n_voxels)
    signals = np.empty((n_frames, reducer.n_regions))
    with _Source(path, checksum) as source:
        source.read(int(proxy.offset), path)  # header and extensions
        for t0 in range(0, n_frames, per_block):
            n = min(per_block, n_frames - t0)
            data = source.read(n * n_voxels * dtype.itemsize, path, frames=(t0, n_frames))
            raw = np.frombuffer(data, dtype=dtype).reshape(n, n_voxels)
            values = _scaled_float32(raw, proxy.slope, proxy.inter)
            check.update(values)
            if not check.bad_values:  # a bad run fails anyway: only count its voxels
                signals[t0 : t0 + n] = reducer(np.take(values, reducer.voxels, axis=1))
        sha256 = source.finish(path)
    check.raise_if_bad(path)
    return StreamResult(signals, sha256, n_frames, source.decompressor)


def _scaled_float32(raw: np.ndarray, slope, inter) -> np.ndarray:
    """nibabel's ``get_fdata(dtype=np.float32)`` of these raw values (ArrayProxy._get_scaled)."""
    slope, inter = np.asanyarray(slope), np.asanyarray(inter)
    if np.can_cast(slope, np.float32):
        slope = slope.astype(np.float32)
    if np.can_cast(inter, np.float32):
        inter = inter.astype(np.float32)
    scaled = apply_read_scaling(raw, slope, inter)
    return np.asarray(scaled, dtype=np.float32)  # a view for native float32 data


class _ContentCheck:
    """NaN/inf, all-zero and constant-over-time checks, block by block."""

    def __init__(self, n_voxels: int):
        self.n_voxels = n_voxels
        self.bad_values = 0
        self.bad_voxels: np.ndarray | None = None
        self.nonzero = False
        self.varies = False
        self.first: np.ndarray | None = None

    def update(self, values: np.ndarray) -> None:
        """values: (n, voxels) float32."""
        # One pass: a NaN or inf makes the sum non-finite (an overflow only costs the
        # exact count below, which then finds nothing).
        if not np.isfinite(values.sum(dtype=np.float32)):
            bad = ~np.isfinite(values)
            if bad.any():
                if self.bad_voxels is None:
                    self.bad_voxels = np.zeros(self.n_voxels, bool)
                self.bad_values += int(bad.sum())
                self.bad_voxels |= bad.any(axis=0)
        if not self.nonzero:
            self.nonzero = bool(values.any())
        if self.first is None:
            self.first = values[0].copy()
        if not self.varies:
            self.varies = bool((values != self.first).any())
            if self.varies:
                self.first = None  # not needed any more

    def raise_if_bad(self, path) -> None:
        """The messages of extract_timeseries' checks, in the same order."""
        if self.bad_values:
            raise InputDataError(
                f"{int(self.bad_voxels.sum())} voxels ({self.bad_values} values) are NaN or "
                f"infinite in {path}. Check the preprocessing output, or mask those voxels "
                "out (e.g. a brain mask)."
            )
        if not self.nonzero:
            raise InputDataError(f"{path} is all zeros: an empty or failed preprocessing output.")
        if not self.varies:
            raise InputDataError(
                f"{path} is constant over time in every voxel: no signal to extract. "
                "Is it a repeated single volume?"
            )


class _HashingReader(io.RawIOBase):
    """A raw file that feeds every byte it reads to a SHA-256 (or to nothing)."""

    def __init__(self, handle, digest):
        self._handle, self._digest = handle, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._handle.readinto(buffer)
        if n and self._digest is not None:
            self._digest.update(memoryview(buffer)[:n])
        return n


class _Source:
    """The file's (decompressed) bytes, read in order, hashed as stored."""

    def __init__(self, path: Path, checksum: bool):
        self._digest = hashlib.sha256() if checksum else None
        self._file = open(path, "rb", buffering=0)  # closed in __exit__
        raw = io.BufferedReader(_HashingReader(self._file, self._digest), _READ_CHUNK)
        if str(path).lower().endswith(".gz"):
            opener = gzip.GzipFile if _igzip is None else _igzip.IGzipFile
            self.stream = opener(fileobj=raw, mode="rb")
            self.decompressor = "zlib" if _igzip is None else "isal"
        else:
            self.stream, self.decompressor = raw, "none"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()
        self._file.close()

    def read(self, size: int, path, frames=None) -> bytes:
        """The next ``size`` bytes, or raise naming ``path``."""
        try:
            data = self.stream.read(size)  # buffered: short only at the end of the data
        except (EOFError, OSError, zlib.error, _IsalError) as error:
            raise InputDataError(
                f"{path} is damaged ({type(error).__name__}: {error}). {_REDOWNLOAD}"
            ) from error
        if len(data) < size:
            where = "in its header" if frames is None else f"at frame {frames[0]} or later"
            raise InputDataError(
                f"{path} is truncated: its data end {where} (the header says "
                f"{frames[1] if frames else 'more'} frames). {_REDOWNLOAD}"
            )
        return data

    def finish(self, path) -> str | None:
        """Read to the end (the gzip CRC is checked there); the file's SHA-256."""
        if self._digest is None and self.decompressor == "none":
            return None
        try:
            while self.stream.read(_READ_CHUNK):
                pass
        except (EOFError, OSError, zlib.error, _IsalError) as error:
            raise InputDataError(
                f"{path} is damaged ({type(error).__name__}: {error}). {_REDOWNLOAD}"
            ) from error
        return None if self._digest is None else self._digest.hexdigest()
