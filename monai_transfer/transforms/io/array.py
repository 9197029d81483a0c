# Copyright (c) monai-transfer contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""One loader for DICOM (file or series folder), NIfTI and PNG/JPEG, returning channel-first float32 ``MetaTensor``.

Why this exists next to MONAI's ``LoadImage``: ``PydicomReader`` applies Rescale Slope/Intercept but neither the
VOI LUT / Window Centre & Width that radiographs (CR/DX) need, nor MONOCHROME1 inversion, and MONAI picks a reader by
file extension only (DICOM files often have none). NIfTI files and DICOM series folders are still read by MONAI's
``NibabelReader`` / ``PydicomReader``; single DICOM files are decoded by pydicom (``apply_modality_lut``,
``apply_voi_lut``) so the grey levels match what a DICOM viewer shows. pydicom 2.4 (MONAI Label's environment) and
pydicom 3 give the same arrays (:func:`_as_pydicom3_pixels`; ``tests/transforms/test_io_pydicom2.py``).

Array layout (documented contract):

- 2D images (PNG/JPEG, single-frame DICOM): ``(C, H, W)`` = ``(C, rows, columns)``, the display orientation that
  ImageNet backbones were trained on (MONAI's ``PILReader`` would transpose to ``(W, H)``; we do not).
- Multi-frame DICOM: ``multiframe="spatial"`` (default) puts frames on the last spatial axis ``(1, rows, cols,
  frames)``; ``multiframe="channel"`` puts them first ``(frames, rows, cols)``.
- NIfTI and DICOM series: MONAI's world-aligned ``(C, x, y, z)`` layout, optionally re-oriented to ``axcodes``.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import PathLike
from monai.data import MetaTensor
from monai.transforms import Transform
from monai.utils import optional_import

pydicom, has_pydicom = optional_import("pydicom", "2.4")
nibabel, has_nibabel = optional_import("nibabel")
PIL_Image, has_pil = optional_import("PIL.Image")

__all__ = [
    "MedicalImageLoadError",
    "LoadMedicalImage",
    "detect_image_format",
    "RADIOGRAPH_MODALITIES",
    "IMAGE_EXTENSIONS",
    "DICOM_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "is_dicom_file",
]

logger = logging.getLogger(__name__)

#: Modalities whose stored values are not calibrated and are displayed through their VOI LUT / window by default.
RADIOGRAPH_MODALITIES = ("CR", "DX", "MG", "IO", "PX", "RF", "XA")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_EXTENSIONS = (".dcm", ".dicom")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
SUPPORTED_EXTENSIONS = IMAGE_EXTENSIONS + DICOM_EXTENSIONS + NIFTI_EXTENSIONS

# Transfer syntax UID -> which decoder plugin to install (the ``dicom`` extra installs all of them).
_EXTRA = "or pip install 'monai-transfer[dicom]'"
_DECODER_HINTS = {
    "1.2.840.10008.1.2.4.50": f"JPEG Baseline: install 'pylibjpeg-libjpeg' (or Pillow for 8-bit), {_EXTRA}",
    "1.2.840.10008.1.2.4.51": f"JPEG Extended (12-bit): install 'pylibjpeg-libjpeg', {_EXTRA}",
    "1.2.840.10008.1.2.4.57": f"JPEG Lossless: install 'pylibjpeg-libjpeg', {_EXTRA}",
    "1.2.840.10008.1.2.4.70": f"JPEG Lossless SV1: install 'pylibjpeg-libjpeg', {_EXTRA}",
    "1.2.840.10008.1.2.4.80": f"JPEG-LS: install 'pyjpegls' or 'pylibjpeg-libjpeg', {_EXTRA}",
    "1.2.840.10008.1.2.4.81": f"JPEG-LS near-lossless: install 'pyjpegls' or 'pylibjpeg-libjpeg', {_EXTRA}",
    "1.2.840.10008.1.2.4.90": f"JPEG 2000 lossless: install 'pylibjpeg-openjpeg', {_EXTRA}",
    "1.2.840.10008.1.2.4.91": f"JPEG 2000: install 'pylibjpeg-openjpeg', {_EXTRA}",
    "1.2.840.10008.1.2.4.201": f"HTJ2K: install 'pylibjpeg-openjpeg>=2.1', {_EXTRA}",
    "1.2.840.10008.1.2.4.202": f"HTJ2K: install 'pylibjpeg-openjpeg>=2.1', {_EXTRA}",
    "1.2.840.10008.1.2.4.203": f"HTJ2K: install 'pylibjpeg-openjpeg>=2.1', {_EXTRA}",
    "1.2.840.10008.1.2.5": "RLE Lossless: pydicom decodes it natively; install 'pylibjpeg-rle' for speed",
}


_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


class MedicalImageLoadError(RuntimeError):
    """A medical image could not be loaded; the message names the file and the reason.

    Args:
        path: the file or folder that failed.
        reason: why, in words.
    """

    def __init__(self, path: PathLike | str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load '{self.path}': {reason}")

    def __reduce__(self):  # keep pickling (DataLoader workers) working with the two-argument constructor
        return (self.__class__, (self.path, self.reason))


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (``DICM`` at byte 128), whatever its name; ``False`` when unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def detect_image_format(path: PathLike) -> str:
    """Tell which reader a path needs.

    Args:
        path: a file or a folder.

    Returns:
        ``"dicom_series"`` (folder), ``"nifti"``, ``"dicom"`` (``.dcm``/``.dicom`` or the ``DICM`` marker at byte
        128), or ``"image"`` (PNG/JPEG/BMP/TIFF by extension or magic bytes).

    Raises:
        MedicalImageLoadError: when the path does not exist or its type is not supported.
    """
    p = Path(path)
    if p.is_dir():
        return "dicom_series"
    if not p.exists():
        raise MedicalImageLoadError(p, "file not found")
    name = p.name.lower()
    if name.endswith(NIFTI_EXTENSIONS):
        return "nifti"
    if name.endswith(DICOM_EXTENSIONS) or is_dicom_file(p):
        return "dicom"
    if name.endswith(IMAGE_EXTENSIONS):
        return "image"
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise MedicalImageLoadError(p, f"unreadable file ({e})") from e
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff"):
        return "image"
    raise MedicalImageLoadError(
        p,
        f"unsupported file type (extension '{''.join(p.suffixes)}'; expected one of {SUPPORTED_EXTENSIONS}, "
        "a DICOM file with the 'DICM' marker, or a folder holding a DICOM series)",
    )


def _pixel_functions() -> Any:
    """pydicom's pixel-value functions (``apply_modality_lut``, ``apply_voi_lut``, ``apply_color_lut``).

    They live in ``pydicom.pixels`` since pydicom 3 and in ``pydicom.pixel_data_handlers.util`` in pydicom 2.4 (the
    version MONAI Label's environment has: its ``pydicom-seg`` fails with pydicom 3); both give the same values.
    """
    try:
        import pydicom.pixels as functions
    except ImportError:  # pydicom 2.4
        import pydicom.pixel_data_handlers.util as functions
    return functions


def _as_pydicom3_pixels(ds: Any, raw: np.ndarray) -> np.ndarray:
    """The pixels that pydicom 3's ``pixel_array`` gives, from pydicom 2.4's (unchanged under pydicom 3).

    pydicom 3 sign-extends signed values stored in fewer bits than allocated (12-bit ``0x0FFF`` in 16 bits is -1;
    pydicom 2.4 returns 4095 for data written without the sign bits) and converts YBR_FULL/YBR_FULL_422 colour to
    RGB (pydicom 2.4 returns YCbCr). Both steps are idempotent on data that already have them.
    """
    functions = _pixel_functions()
    if functions.__name__ == "pydicom.pixels":
        return raw  # pydicom 3 did both
    bits, allocated = int(ds.get("BitsStored", 0) or 0), int(ds.get("BitsAllocated", 0) or 0)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1 and 0 < bits < allocated and raw.dtype.kind == "i":
        shift = raw.dtype.itemsize * 8 - bits
        raw = np.right_shift(np.left_shift(raw, shift), shift)
    if int(ds.get("SamplesPerPixel", 1)) == 3 and str(ds.get("PhotometricInterpretation", "")) in (
        "YBR_FULL",
        "YBR_FULL_422",
    ):
        raw = functions.convert_color_space(raw, "YBR_FULL", "RGB")
    return raw


def _decoder_available(ts: Any) -> bool:
    """Whether pydicom has a working decoder plugin for transfer syntax ``ts``."""
    try:
        try:
            from pydicom.pixels import get_decoder
        except ImportError:  # pydicom 2.4: pixel data handlers instead of decoders
            return any(h.is_available() and h.supports_transfer_syntax(ts) for h in pydicom.config.pixel_data_handlers)
        return bool(get_decoder(ts).is_available)
    except Exception:
        return False


def _first_float(value: Any) -> float:
    """First value of a (possibly multi-valued) DICOM number, or NaN."""
    if value is None:
        return float("nan")
    if isinstance(value, (list, tuple)) or hasattr(value, "__getitem__") and not isinstance(value, (str, bytes)):
        try:
            value = value[0]
        except (IndexError, TypeError):
            return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _pixel_spacing(ds: Any) -> tuple[float, float]:
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        val = ds.get(kw)
        if val is not None and len(val) >= 2:
            try:
                sp = (float(val[0]), float(val[1]))
            except (TypeError, ValueError):
                continue
            if sp[0] > 0 and sp[1] > 0:
                return sp
    return (1.0, 1.0)


def _frame_spacing(ds: Any) -> float:
    for kw in ("SpacingBetweenSlices", "SliceThickness"):
        v = _first_float(ds.get(kw))
        if v > 0:
            return v
    return 1.0


#: Photometric Interpretations of one-sample grey images ("" = absent, read as MONOCHROME2).
_GREY_PHOTOMETRIC = ("MONOCHROME2", "MONOCHROME1", "")


def _voi_kind(ds: Any) -> str | None:
    """What pydicom's ``apply_voi_lut`` (``prefer_lut=True``) applies: ``"lut"``, ``"window"`` or None."""
    seq = ds.get("VOILUTSequence")
    if seq and None not in (seq[0].get("LUTDescriptor", None), seq[0].get("LUTData", None)):
        return "lut"
    if ds.get("WindowCenter", None) is not None and ds.get("WindowWidth", None) is not None:
        return "window"
    return None


def _monochrome1_range(
    path: Path, ds: Any, raw: np.ndarray, voi_kind: str | None, fg_rescale: tuple[np.ndarray, np.ndarray] | None
) -> tuple[Any, Any] | None:
    """The ``(lowest, highest)`` value a MONOCHROME1 image can hold at the point where it is inverted.

    Inverting ``lowest + highest - x`` over this fixed range (not the image's own min/max) keeps a pixel's value
    independent of the other pixels: a crop of a film gets the same values, and MONOCHROME1 of ``x`` equals
    MONOCHROME2 of ``highest + lowest - x``. The range is pydicom's own output range of each step:

    - VOI LUT Sequence applied: ``[0, 2**bits - 1]`` with ``bits`` the LUT Descriptor's third value;
    - window applied: the range that ``apply_windowing`` maps to (stored range, or Modality LUT range, through the
      rescale);
    - otherwise the stored range (``BitsStored``, ``PixelRepresentation``) through the Modality LUT
      (``[0, 2**bits - 1]``) or the rescale (top-level or, for enhanced multi-frame files, per frame: then arrays).

    Returns:
        None for float pixel data (no representable range: the image's own range is used).

    Raises:
        MedicalImageLoadError: BitsStored or a LUT Descriptor is missing or invalid.
    """
    if voi_kind == "lut":
        try:
            bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        except (AttributeError, IndexError, TypeError, ValueError) as e:
            raise MedicalImageLoadError(path, f"invalid VOI LUT Descriptor ({e}), cannot invert MONOCHROME1") from e
        return 0.0, float(2**bits - 1)
    if not np.issubdtype(raw.dtype, np.integer):
        return None
    bits_alloc = int(ds.get("BitsAllocated", 0) or 0)
    bits = int(ds.get("BitsStored", 0) or 0)
    if not 1 <= bits <= max(bits_alloc, 1) or bits > 32:
        raise MedicalImageLoadError(
            path,
            f"MONOCHROME1 image with an invalid BitsStored={ds.get('BitsStored')!r} (BitsAllocated={bits_alloc}): "
            "its representable range, over which it is inverted, is unknown",
        )
    if int(ds.get("PixelRepresentation", 0) or 0) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    if ds.get("ModalityLUTSequence"):
        try:
            lut_bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        except (AttributeError, IndexError, TypeError, ValueError) as e:
            raise MedicalImageLoadError(path, f"invalid Modality LUT Descriptor ({e})") from e
        return 0.0, float(2**lut_bits - 1)
    # apply_windowing rescales its range only when both values are present, as apply_modality_lut does
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        return lo * slope + intercept, hi * slope + intercept
    if fg_rescale is not None and voi_kind is None:
        slopes, intercepts = fg_rescale
        if raw.ndim == 2:
            slopes, intercepts = slopes[0], intercepts[0]
        return lo * slopes + intercepts, hi * slopes + intercepts
    return lo, hi


def _apply_palette(path: Path, ds: Any, raw: np.ndarray) -> np.ndarray:
    """RGB values ``(..., 3)`` of a PALETTE COLOR image (pydicom's ``apply_color_lut``), never the raw indices.

    Raises:
        MedicalImageLoadError: the palette (Red/Green/Blue Palette Color Lookup Table Descriptor and Data, or their
            segmented form) is missing or unusable.
    """
    try:
        rgb = _pixel_functions().apply_color_lut(raw, ds)
    except Exception as e:
        raise MedicalImageLoadError(
            path,
            f"PALETTE COLOR image whose palette cannot be applied ({type(e).__name__}: {e}); raw palette indices "
            "are not loaded as grey levels",
        ) from e
    if rgb.shape != (*raw.shape, 3):
        raise MedicalImageLoadError(path, f"palette gave shape {rgb.shape} for indices of shape {raw.shape}")
    return rgb


_EXIF_ORIENTATION = 0x0112
_pillow_lock = threading.Lock()
_pillow_strict_depth = 0
_pillow_saved_flag = False


@contextlib.contextmanager
def _strict_pillow_decode():
    """Switch Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` off while images are decoded, then restore it.

    With the flag on (a process-wide setting that other code may set), Pillow fills the missing rows of a truncated
    PNG/JPEG with zeros instead of raising. Nested and concurrent uses (threads) share one saved value: the flag is
    restored when the last decode ends.
    """
    from PIL import ImageFile

    global _pillow_strict_depth, _pillow_saved_flag
    with _pillow_lock:
        if _pillow_strict_depth == 0:
            _pillow_saved_flag = ImageFile.LOAD_TRUNCATED_IMAGES
        _pillow_strict_depth += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        with _pillow_lock:
            _pillow_strict_depth -= 1
            if _pillow_strict_depth == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _pillow_saved_flag


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_missing_rows(path: Path) -> str | None:
    """Why a PNG holds less image data than its header declares, or None.

    A PNG whose compressed stream is complete but decompresses to fewer rows than ``IHDR`` promises is decoded by
    Pillow without an error, the missing rows as zeros (the zlib stream ends, so nothing looks truncated). The
    decompressed ``IDAT`` length is compared with what the header's size, bit depth, colour type and interlacing
    need. Files that cannot be parsed here are left to Pillow's own errors.
    """
    import struct
    import zlib

    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    pos, header, idat = 8, None, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR" and len(body) >= 13:
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        return None
    width, height, depth, colour, _, _, interlace = header
    if colour not in _PNG_CHANNELS:
        return None
    try:
        raw = zlib.decompressobj().decompress(b"".join(idat))
    except zlib.error:
        return None  # damaged data: Pillow names it
    bits = _PNG_CHANNELS[colour] * depth

    def size(w: int, h: int) -> int:
        return h * (1 + (w * bits + 7) // 8) if w and h else 0

    if interlace:
        passes = [(-(-(width - x0) // dx), -(-(height - y0) // dy)) for x0, y0, dx, dy in _ADAM7]
        expected = sum(size(max(w, 0), max(h, 0)) for w, h in passes)
    else:
        expected = size(width, height)
    if len(raw) >= expected:
        return None
    rows = f"{len(raw) // (1 + (width * bits + 7) // 8)} of the {height} rows" if not interlace else "part"
    return (
        f"PNG image data holds {rows} its header declares ({len(raw)} of {expected} decompressed bytes): the image "
        "data ends early, the missing rows would load as zeros"
    )


#: A gap between neighbouring slices larger than this many times the median spacing is a missing slice.
SERIES_GAP_FACTOR = 1.5


def _dicom_files_in(folder: Path) -> list[Path]:
    """The files MONAI's ``PydicomReader`` reads from a series folder (``glob('*')`` with a DICOM marker), sorted."""
    return sorted(Path(f) for f in glob.glob(os.path.join(str(folder), "*")) if pydicom.misc.is_dicom(f))


def _check_dicom_series(folder: Path, series_uid: str | None = None) -> list[Path]:
    """Validate a DICOM series folder before it is stacked into a volume; return the files of the series to read.

    Refused (``MedicalImageLoadError`` naming the folder): no DICOM file; several Series Instance UIDs (listed with
    their file counts) unless ``series_uid`` picks one; slices of different Rows/Columns; some slices with and some
    without Image Position (Patient); two slices at one position (both files named); a gap larger than
    :data:`SERIES_GAP_FACTOR` times the median slice spacing (a missing slice; the positions and files named); slices
    whose Instance Number order (the order MONAI stacks them in) is not their order along the slice normal, or with
    no Instance Number (MONAI would drop them). Files without a DICOM marker are left out with a warning naming them.
    """
    headers = _read_series_headers(folder)
    headers = _pick_series(folder, headers, series_uid)
    photometric = sorted({str(ds.get("PhotometricInterpretation", "")) for _, ds in headers})
    if "PALETTE COLOR" in photometric or len(photometric) > 1:
        raise MedicalImageLoadError(
            folder,
            f"series with Photometric Interpretation {photometric}: MONAI's PydicomReader would stack raw palette "
            "indices or mix inverted and plain slices; load the files one by one",
        )
    if len(headers) == 1:
        return [headers[0][0]]
    sizes = {(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)) for _, ds in headers}
    if len(sizes) > 1:
        raise MedicalImageLoadError(folder, f"slices of different sizes (Rows, Columns) {sorted(sizes)} in one series")
    no_number = [f.name for f, ds in headers if ds.get("InstanceNumber", None) in (None, "")]
    if no_number:
        raise MedicalImageLoadError(
            folder, f"{len(no_number)} slice(s) without InstanceNumber (the stacking order): {no_number[:5]}"
        )
    has_pos = [ds.get("ImagePositionPatient") is not None for _, ds in headers]
    if not any(has_pos):
        warnings.warn(
            f"'{folder}': no slice has Image Position (Patient): stacked in InstanceNumber order, spacing unchecked",
            stacklevel=5,  # the caller of LoadMedicalImage.__call__
        )
        return [f for f, _ in headers]
    if not all(has_pos):
        missing = [f.name for (f, _), ok in zip(headers, has_pos) if not ok]
        raise MedicalImageLoadError(folder, f"{len(missing)} slice(s) without ImagePositionPatient: {missing[:5]}")
    _check_slice_positions(folder, headers)
    return [f for f, _ in headers]


def _read_series_headers(folder: Path) -> list[tuple[Path, Any]]:
    """``(file, header)`` of each DICOM file of ``folder`` (no pixels); warns about the files without a marker."""
    files = _dicom_files_in(folder)
    known = set(files)
    others = sorted(f.name for f in folder.iterdir() if f.is_file() and not f.name.startswith(".") and f not in known)
    if not files:
        raise MedicalImageLoadError(folder, f"folder holds no DICOM file (files without a DICOM marker: {others[:5]})")
    if others:
        warnings.warn(f"'{folder}': {len(others)} file(s) without a DICOM marker left out: {others[:5]}", stacklevel=6)
    headers = []
    for f in files:
        try:
            headers.append((f, pydicom.dcmread(str(f), stop_before_pixels=True)))
        except Exception as e:
            reason = f"unreadable DICOM header in '{f.name}' ({type(e).__name__}: {e})"
            raise MedicalImageLoadError(folder, reason) from e
    return headers


def _pick_series(folder: Path, headers: list[tuple[Path, Any]], series_uid: str | None) -> list[tuple[Path, Any]]:
    """The headers of the series to read: the one ``series_uid`` names, else the only series of the folder."""
    by_uid: dict[str, list[tuple[Path, Any]]] = {}
    for f, ds in headers:
        by_uid.setdefault(str(ds.get("SeriesInstanceUID", "") or "<missing>"), []).append((f, ds))
    counts = ", ".join(f"{uid} ({len(v)} files)" for uid, v in sorted(by_uid.items(), key=lambda kv: -len(kv[1])))
    if series_uid is not None:
        if series_uid not in by_uid:
            raise MedicalImageLoadError(folder, f"no file of series_uid={series_uid!r}; the folder holds {counts}")
        headers = by_uid[series_uid]
    elif len(by_uid) > 1:
        raise MedicalImageLoadError(
            folder,
            f"folder mixes {len(by_uid)} DICOM series (SeriesInstanceUID: {counts}); put each series in its own "
            "folder or pass series_uid=... to load one",
        )
    return headers


def _check_slice_positions(folder: Path, headers: list[tuple[Path, Any]]) -> None:
    """Refuse duplicate positions, gaps, duplicate Instance Numbers and an Instance Number order that is not the
    order along the slice normal (all slices have Image Position (Patient))."""
    try:
        iop = np.asarray([float(v) for v in headers[0][1].get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])])
        normal = np.cross(iop[:3], iop[3:6])
        if not np.linalg.norm(normal) > 0:
            normal = np.array([0.0, 0.0, 1.0])
        pos = np.asarray([[float(v) for v in ds.ImagePositionPatient] for _, ds in headers], dtype=np.float64) @ normal
        numbers = np.asarray([float(ds.InstanceNumber) for _, ds in headers])
    except (TypeError, ValueError, IndexError) as e:
        raise MedicalImageLoadError(folder, f"invalid ImagePositionPatient/ImageOrientationPatient ({e})") from e
    names = [f.name for f, _ in headers]
    order = np.argsort(pos, kind="stable")
    steps = np.diff(pos[order])
    median = float(np.median(steps))
    tol = max(1e-3 * median, 1e-4)
    dup = np.flatnonzero(steps <= tol)
    if dup.size:
        pairs = [f"'{names[order[k]]}' and '{names[order[k + 1]]}' at {pos[order[k]]:g} mm" for k in dup[:5]]
        raise MedicalImageLoadError(folder, f"{dup.size} duplicate slice position(s): {'; '.join(pairs)}")
    gaps = np.flatnonzero(steps > SERIES_GAP_FACTOR * median)
    if gaps.size:
        where = [
            f"{pos[order[k]]:g} -> {pos[order[k + 1]]:g} mm ('{names[order[k]]}', '{names[order[k + 1]]}')"
            for k in gaps[:5]
        ]
        raise MedicalImageLoadError(
            folder,
            f"{gaps.size} gap(s) between slice positions larger than {SERIES_GAP_FACTOR}x the median spacing "
            f"{median:g} mm (missing slice?): {'; '.join(where)}",
        )
    by_number = np.argsort(numbers, kind="stable")
    same = np.flatnonzero(np.diff(numbers[by_number]) == 0)
    if same.size:
        k = by_number[same[0]], by_number[same[0] + 1]
        raise MedicalImageLoadError(
            folder,
            f"{same.size} duplicate InstanceNumber(s) (the stacking order): '{names[k[0]]}' and '{names[k[1]]}' "
            f"are both number {numbers[k[0]]:g}",
        )
    d = np.diff(pos[by_number])
    if not (np.all(d > 0) or np.all(d < 0)):
        raise MedicalImageLoadError(
            folder,
            "InstanceNumber order (the stacking order) is not the order of the slice positions along the slice "
            f"normal (positions by InstanceNumber: {[round(float(v), 3) for v in pos[by_number][:8]]} ...)",
        )


class LoadMedicalImage(Transform):
    """Load a DICOM file, a DICOM series folder, a NIfTI file or a PNG/JPEG as a channel-first float32 ``MetaTensor``.

    DICOM files (chosen by the ``DICM`` marker at byte 128 or a ``.dcm``/``.dicom`` extension) are decoded by pydicom
    and then, in this order:

    1. ``apply_modality_lut``: Rescale Slope/Intercept (CT to Hounsfield units) or the Modality LUT; for enhanced
       multi-frame files, the functional-group rescale, per frame when it varies (``meta`` Rescale Slope/Intercept
       are then NaN). Signed and 8/12/16-bit data are handled by pydicom.
    2. ``apply_voi_lut`` (VOI LUT sequence or Window Centre/Width, first window) when ``voi="always"``, or when
       ``voi="auto"`` and the modality is a radiograph (:data:`RADIOGRAPH_MODALITIES`, e.g. CR, DX) that carries one.
       CT/MR stay in their calibrated units so that :class:`~monai_transfer.transforms.WindowIntensity` can window them.
    3. MONOCHROME1 inversion ``lowest + highest - x`` so that bone is bright, as in MONOCHROME2, over a fixed range
       (never the image's own min/max, so a crop keeps its pixel values and MONOCHROME1 of ``x`` equals MONOCHROME2
       of ``lowest + highest - x``): the VOI output range when a window/VOI LUT was applied (pydicom's, e.g.
       ``[0, 2**BitsStored - 1]`` through the rescale), else the stored range (``BitsStored``,
       ``PixelRepresentation``) through the Modality LUT or rescale, e.g. ``slope * (2**BitsStored - 1) + intercept``
       and ``intercept`` for unsigned data. Float pixel data has no such range: its own range is used.

    PALETTE COLOR images are turned into RGB with pydicom's ``apply_color_lut`` (``C = 3``, values as the palette
    stores them, often 16-bit ``0..65535``; ``meta["palette_applied"]``); never loaded as raw palette indices. A
    palette that cannot be applied, or a one-sample image whose Photometric Interpretation is not MONOCHROME1/2 or
    PALETTE COLOR, raises.

    DICOM series folders are checked before stacking (see :func:`_check_dicom_series`): a folder that mixes Series
    Instance UIDs is refused (listing them with their file counts) unless ``series_uid`` picks one; two slices at one
    position (both files named), a gap over 1.5x the median slice spacing (the positions named), slices of different
    sizes, and Instance Numbers that are missing, repeated or not in position order are refused. A MONOCHROME1 series
    is inverted like a single file (without VOI); a PALETTE COLOR series is refused.

    PNG/JPEG are decoded in full with Pillow's ``LOAD_TRUNCATED_IMAGES`` switched off (a truncated file raises even
    where the process set that flag), and the EXIF orientation is applied (``ImageOps.exif_transpose``; the original
    tag in ``meta["exif_orientation"]``). NIfTI files with complex values are refused (no silent real part).

    Compressed transfer syntaxes decode when pydicom has a plugin for them: RLE natively, 8-bit JPEG baseline and
    JPEG 2000 with Pillow (a core dependency); HTJ2K with ``pylibjpeg-openjpeg`` (``test`` and ``dicom`` extras);
    JPEG lossless, 12-bit JPEG and JPEG-LS with ``pylibjpeg-libjpeg`` (GPL-3.0, hence only in the opt-in ``dicom``
    extra) or ``pyjpegls``. Without a plugin the error names the file, the transfer syntax UID and the plugin to
    install. Colour DICOM (``SamplesPerPixel == 3``) gives ``C = 3`` (RGB). Per-frame VOI windows (Frame VOI LUT
    functional groups) are not applied: only the first top-level window is.

    Array layouts: see the module docstring (2D: ``(C, rows, cols)``; multi-frame: frames last or as channels;
    NIfTI/DICOM series: MONAI's ``(C, x, y, z)``).

    Metadata (``img.meta``): ``filename_or_obj``, ``spacing`` (per spatial axis), ``affine``, ``spatial_shape``,
    ``source_format`` and, with the same keys for every format so 2D batches of mixed PNG/DICOM collate:
    ``Modality``, ``PhotometricInterpretation``, ``TransferSyntaxUID``, ``RescaleSlope``, ``RescaleIntercept``,
    ``WindowCenter``, ``WindowWidth`` (NaN when absent), ``BitsStored``, ``PixelRepresentation``, ``NumberOfFrames``,
    ``rescale_applied``, ``voi_applied``, ``inverted``, ``palette_applied``, ``exif_orientation``.

    Args:
        voi: ``"auto"`` (default; radiographs only), ``"always"`` or ``"none"``.
        invert_monochrome1: invert MONOCHROME1 images; default ``True``.
        multiframe: ``"spatial"`` (frames on the last spatial axis, default) or ``"channel"``.
        expected_ndim: when given (2 or 3), the number of dimensions the stored image must have (not counting
            colour samples); e.g. a 4D NIfTI with ``expected_ndim=3`` raises instead of becoming 2 channels.
        axcodes: re-orient NIfTI files and DICOM series with MONAI's ``Orientation`` (e.g. ``"RAS"``); default
            ``None`` keeps the stored orientation. Not applied to 2D images.
        grey: read PNG/JPEG as one grey channel (default) or, when ``False``, as 3 RGB channels.
        dtype: output dtype, default ``torch.float32``.
        nan_policy: what to do with NaN/inf values (e.g. in float NIfTI data, or a rescale that overflows float32):
            ``"raise"`` (default) a ``MedicalImageLoadError`` naming the file and the counts; ``"warn"``: replace
            NaN and -inf by the smallest and +inf by the largest finite value and warn naming the file;
            ``"ignore"``: keep them.
        series_uid: for a DICOM series folder that holds several series, the Series Instance UID to load (the
            others are left out); default ``None``: a folder that mixes series raises.

    Every loaded image is also checked for zero variance: a constant image (e.g. a blank DICOM or an all-zero
    volume) loads, with a ``UserWarning`` naming the file, because intensity scaling turns it into a blank input.

    Raises:
        MedicalImageLoadError: on any failure, naming the file and the reason; a DICOM whose decoded pixel array
            disagrees with its header (Rows, Columns, Number of Frames) raises instead of loading a wrong image.

    Example::

        img = LoadMedicalImage(voi="auto")("chest.dcm")  # (1, rows, cols), bone bright
        ct = LoadMedicalImage(axcodes="RAS", expected_ndim=3)("ct.nii.gz")  # (1, x, y, z) in HU
    """

    def __init__(
        self,
        voi: str = "auto",
        invert_monochrome1: bool = True,
        multiframe: str = "spatial",
        expected_ndim: int | None = None,
        axcodes: str | None = None,
        grey: bool = True,
        dtype: torch.dtype = torch.float32,
        nan_policy: str = "raise",
        series_uid: str | None = None,
    ) -> None:
        if voi not in ("auto", "always", "none"):
            raise ValueError(f"voi must be 'auto', 'always' or 'none', got {voi!r}.")
        if multiframe not in ("spatial", "channel"):
            raise ValueError(f"multiframe must be 'spatial' or 'channel', got {multiframe!r}.")
        if expected_ndim is not None and expected_ndim not in (2, 3):
            raise ValueError(f"expected_ndim must be 2, 3 or None, got {expected_ndim!r}.")
        if nan_policy not in ("raise", "warn", "ignore"):
            raise ValueError(f"nan_policy must be 'raise', 'warn' or 'ignore', got {nan_policy!r}.")
        self.voi = voi
        self.invert_monochrome1 = invert_monochrome1
        self.multiframe = multiframe
        self.expected_ndim = expected_ndim
        self.axcodes = axcodes
        self.grey = grey
        self.dtype = dtype
        self.nan_policy = nan_policy
        self.series_uid = series_uid

    def __call__(self, path: PathLike) -> MetaTensor:
        """Load ``path``; see the class docstring.

        Raises:
            MedicalImageLoadError: naming ``path`` and the reason.
        """
        if isinstance(path, (list, tuple)):
            raise MedicalImageLoadError(str(path), "expected one path (a file or a DICOM series folder), got a list")
        p = Path(os.fspath(path))
        kind = detect_image_format(p)
        try:
            if kind == "dicom":
                img = self._load_dicom(p)
            elif kind == "dicom_series":
                img = self._load_monai(p, "PydicomReader", kind)
            elif kind == "nifti":
                img = self._load_monai(p, "NibabelReader", kind)
            else:
                img = self._load_pil(p)
        except MedicalImageLoadError:
            raise
        except Exception as e:  # any reader failure becomes one error type that names the file
            raise MedicalImageLoadError(p, f"{type(e).__name__}: {e}") from e
        self._check_values(p, img)
        return img

    # ----------------------------------------------------------------------------------------------------- checks
    def _check_ndim(self, path: Path, ndim: int, shape: Sequence[int]) -> None:
        if self.expected_ndim is not None and ndim != self.expected_ndim:
            raise MedicalImageLoadError(
                path,
                f"image has {ndim} dimensions (shape {tuple(int(s) for s in shape)}), expected {self.expected_ndim}",
            )

    def _check_values(self, path: Path, img: torch.Tensor) -> None:
        """Apply ``nan_policy`` to NaN/inf values (in place) and warn about a constant (zero-variance) image."""
        data = img.as_tensor() if isinstance(img, MetaTensor) else img
        if data.numel() == 0:
            raise MedicalImageLoadError(path, f"image is empty (shape {tuple(data.shape)})")
        # one pass over the pixels in the common case: min and max are finite only when every value is (aminmax
        # propagates NaN), so the per-pixel NaN/inf count runs only for images that hold some
        lo_v, hi_v = torch.aminmax(data)
        if data.is_floating_point() and self.nan_policy != "ignore" and not bool(torch.isfinite(lo_v + hi_v)):
            finite = torch.isfinite(data)
            if not bool(finite.all()):
                n_nan = int(torch.isnan(data).sum())
                n_inf = int(data.numel() - int(finite.sum()) - n_nan)
                what = f"{n_nan} NaN and {n_inf} infinite value(s) among {data.numel()} (shape {tuple(data.shape)})"
                if self.nan_policy == "raise":
                    raise MedicalImageLoadError(
                        path, f"image holds {what}; pass nan_policy='warn' to replace them by finite values"
                    )
                good = data[finite]
                lo, hi = (float(good.min()), float(good.max())) if good.numel() else (0.0, 0.0)
                data.nan_to_num_(nan=lo, posinf=hi, neginf=lo)
                warnings.warn(
                    f"'{path}': image holds {what}; replaced NaN and -inf by {lo:g} and +inf by {hi:g} "
                    "(nan_policy='warn').",
                    stacklevel=3,
                )
                lo_v, hi_v = torch.aminmax(data)
        if bool(lo_v == hi_v):
            warnings.warn(
                f"'{path}': image is constant (every value is {float(lo_v):g}, zero variance); intensity scaling "
                "will turn it into a blank input.",
                stacklevel=3,
            )

    @staticmethod
    def _common_meta(path: Path, source_format: str) -> dict[str, Any]:
        return {
            "filename_or_obj": str(path),
            "source_format": source_format,
            "Modality": "",
            "PhotometricInterpretation": "",
            "TransferSyntaxUID": "",
            "RescaleSlope": 1.0,
            "RescaleIntercept": 0.0,
            "WindowCenter": float("nan"),
            "WindowWidth": float("nan"),
            "BitsStored": 0,
            "PixelRepresentation": 0,
            "NumberOfFrames": 1,
            "rescale_applied": False,
            "voi_applied": False,
            "inverted": False,
            "palette_applied": False,
            "exif_orientation": 1,
        }

    def _to_meta_tensor(self, arr: np.ndarray, spacing: Sequence[float], meta: dict[str, Any]) -> MetaTensor:
        spatial = arr.shape[1:]
        affine = np.eye(4, dtype=np.float64)
        for i, s in enumerate(list(spacing)[:3]):
            affine[i, i] = float(s)
        meta["spacing"] = np.asarray(spacing, dtype=np.float64)
        meta["spatial_shape"] = np.asarray(spatial, dtype=np.int64)
        meta["original_affine"] = affine.copy()
        t = torch.as_tensor(np.ascontiguousarray(arr), dtype=self.dtype)
        return MetaTensor(t, affine=torch.as_tensor(affine), meta=meta)

    # ------------------------------------------------------------------------------------------------------ DICOM
    def _load_dicom(self, path: Path) -> MetaTensor:
        if not has_pydicom:
            raise MedicalImageLoadError(path, "pydicom is not installed (pip install pydicom)")
        ds, raw, ts_str = self._read_dicom_pixels(path)
        raw = _as_pydicom3_pixels(ds, raw)
        meta = self._common_meta(path, "dicom")
        modality = str(ds.get("Modality", ""))
        pi = str(ds.get("PhotometricInterpretation", ""))
        samples = int(ds.get("SamplesPerPixel", 1))
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        self._check_dicom_shape(path, ds, raw, samples, n_frames)
        meta.update(
            {
                "Modality": modality,
                "PhotometricInterpretation": pi,
                "TransferSyntaxUID": ts_str,
                "BitsStored": int(ds.get("BitsStored", 0) or 0),
                "PixelRepresentation": int(ds.get("PixelRepresentation", 0) or 0),
                "NumberOfFrames": n_frames,
            }
        )
        stored_ndim = raw.ndim - (1 if samples > 1 else 0)
        self._check_ndim(path, stored_ndim, raw.shape)

        arr = raw
        if samples == 1 and pi not in _GREY_PHOTOMETRIC and pi != "PALETTE COLOR":
            raise MedicalImageLoadError(
                path,
                f"PhotometricInterpretation {pi!r} does not describe a one-sample image (SamplesPerPixel=1); "
                f"expected one of {_GREY_PHOTOMETRIC[:2] + ('PALETTE COLOR',)}",
            )
        if samples == 1 and pi != "PALETTE COLOR":
            arr, fg_rescale = self._modality_rescale(path, ds, raw, n_frames, meta)
            arr = self._voi_and_inversion(path, ds, raw, arr, fg_rescale, meta)
        elif samples == 1:  # PALETTE COLOR
            arr = _apply_palette(path, ds, raw)
            samples = 3
            meta["palette_applied"] = True
        return self._dicom_tensor(np.asarray(arr, dtype=np.float32), ds, samples, meta)

    @staticmethod
    def _read_dicom_pixels(path: Path) -> tuple[Any, np.ndarray, str]:
        """``(dataset, pixel array, transfer syntax UID)`` of a DICOM file; every failure named (truncated, no pixel
        data, a compressed syntax without decoder, corrupted compressed data)."""
        from pydicom.errors import InvalidDicomError

        try:
            ds = pydicom.dcmread(str(path))
        except InvalidDicomError as e:
            raise MedicalImageLoadError(path, f"not a DICOM file ({e})") from e
        except Exception as e:
            raise MedicalImageLoadError(path, f"unreadable or truncated DICOM file ({type(e).__name__}: {e})") from e
        if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            if "Rows" in ds and "Columns" in ds:
                raise MedicalImageLoadError(
                    path,
                    "DICOM file is truncated: image attributes (Rows/Columns) are present but no pixel data follows",
                )
            ts_read = str(getattr(ds.get("file_meta", None), "TransferSyntaxUID", "") or "?")
            raise MedicalImageLoadError(
                path,
                f"DICOM file has no pixel data (Modality={ds.get('Modality', '?')!r}, "
                f"SOPClassUID={getattr(ds.get('SOPClassUID'), 'name', ds.get('SOPClassUID', '?'))!r}, "
                f"TransferSyntaxUID={ts_read!r}; a wrong transfer syntax also makes the data set unreadable)",
            )
        ts = ds.file_meta.get("TransferSyntaxUID") if "file_meta" in dir(ds) else None
        ts_str = str(ts) if ts is not None else ""
        try:
            raw = ds.pixel_array
        except Exception as e:
            if ts is not None and getattr(ts, "is_compressed", False) and _decoder_available(ts):
                raise MedicalImageLoadError(
                    path,
                    f"corrupted compressed pixel data: transfer syntax {ts_str} ({getattr(ts, 'name', '')}) has a "
                    f"working decoder here but decoding failed ({type(e).__name__}: {e})",
                ) from e
            if ts is not None and getattr(ts, "is_compressed", False):
                hint = _DECODER_HINTS.get(ts_str, "install 'pylibjpeg' with 'pylibjpeg-libjpeg'/'pylibjpeg-openjpeg'")
                raise MedicalImageLoadError(
                    path,
                    f"unsupported transfer syntax {ts_str} ({getattr(ts, 'name', '')}): no installed decoder could "
                    f"decode it ({hint}); decoder error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                ) from e
            raise MedicalImageLoadError(
                path, f"cannot decode the pixel data, the file may be truncated ({type(e).__name__}: {e})"
            ) from e
        return ds, raw, ts_str

    def _modality_rescale(
        self, path: Path, ds: Any, raw: np.ndarray, n_frames: int, meta: dict[str, Any]
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """Step 1: the Modality LUT / Rescale Slope and Intercept (per frame for enhanced multi-frame files).

        Returns ``(array, functional-group (slopes, intercepts) or None)``; ``meta`` records what was applied.
        """
        arr = raw
        fg_rescale = None
        if "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds:
            arr = _pixel_functions().apply_modality_lut(raw, ds)
            meta["rescale_applied"] = True
            meta["RescaleSlope"] = _first_float(ds.get("RescaleSlope", 1.0))
            meta["RescaleIntercept"] = _first_float(ds.get("RescaleIntercept", 0.0))
        else:  # enhanced multi-frame: rescale in the shared or per-frame functional groups
            pvt = self._functional_group_rescale(path, ds, n_frames)
            if pvt is not None:
                slopes, intercepts = fg_rescale = pvt
                if raw.ndim == 3:  # (frames, rows, cols): frame k gets its own slope and intercept
                    arr = raw.astype(np.float64) * slopes[:, None, None] + intercepts[:, None, None]
                else:
                    arr = raw.astype(np.float64) * slopes[0] + intercepts[0]
                uniform = bool(np.all(slopes == slopes[0]) and np.all(intercepts == intercepts[0]))
                meta.update(
                    rescale_applied=True,
                    RescaleSlope=float(slopes[0]) if uniform else float("nan"),
                    RescaleIntercept=float(intercepts[0]) if uniform else float("nan"),
                )
        return arr, fg_rescale

    def _voi_and_inversion(
        self, path: Path, ds: Any, raw: np.ndarray, arr: np.ndarray, fg_rescale: Any, meta: dict[str, Any]
    ) -> np.ndarray:
        """Steps 2-3: the VOI LUT / window (``voi``) and the MONOCHROME1 inversion over a fixed range."""
        modality, pi = meta["Modality"], meta["PhotometricInterpretation"]
        has_voi = "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)
        if has_voi:
            meta["WindowCenter"] = _first_float(ds.get("WindowCenter"))
            meta["WindowWidth"] = _first_float(ds.get("WindowWidth"))
        voi_kind = None
        if has_voi and (self.voi == "always" or (self.voi == "auto" and modality in RADIOGRAPH_MODALITIES)):
            voi_kind = _voi_kind(ds)
            arr = _pixel_functions().apply_voi_lut(arr, ds, index=0)
            meta["voi_applied"] = voi_kind is not None
        if pi == "MONOCHROME1" and self.invert_monochrome1:
            lo_hi = _monochrome1_range(path, ds, raw, voi_kind, fg_rescale)
            arr = arr.astype(np.float64)
            if lo_hi is None:  # float pixel data: no representable range, the image's own range is used
                arr = arr.max() + arr.min() - arr
            else:
                total = lo_hi[0] + lo_hi[1]
                arr = (total[:, None, None] if np.ndim(total) else total) - arr
            meta["inverted"] = True
        return arr

    def _dicom_tensor(self, arr: np.ndarray, ds: Any, samples: int, meta: dict[str, Any]) -> MetaTensor:
        """Channel-first layout with the pixel (and frame) spacing: colour and frames as documented in the class."""
        row_sp, col_sp = _pixel_spacing(ds)
        if samples > 1:  # (..., rows, cols, 3) -> channels first; frames (if any) on the last spatial axis
            arr = np.moveaxis(arr, -1, 0)
            if arr.ndim == 4:
                arr = np.moveaxis(arr, 1, -1)
                return self._to_meta_tensor(arr, (row_sp, col_sp, _frame_spacing(ds)), meta)
            return self._to_meta_tensor(arr, (row_sp, col_sp), meta)
        if arr.ndim == 3:  # multi-frame (frames, rows, cols)
            if self.multiframe == "channel":
                return self._to_meta_tensor(arr, (row_sp, col_sp), meta)
            arr = np.moveaxis(arr, 0, -1)[None]
            return self._to_meta_tensor(arr, (row_sp, col_sp, _frame_spacing(ds)), meta)
        return self._to_meta_tensor(arr[None], (row_sp, col_sp), meta)

    @staticmethod
    def _check_dicom_shape(path: Path, ds: Any, raw: np.ndarray, samples: int, n_frames: int) -> None:
        """Refuse a decoded array that disagrees with the header (pydicom returns excess frames with a warning)."""
        shape = tuple(int(s) for s in raw.shape)
        spatial = shape[:-1] if samples > 1 else shape
        frames = spatial[0] if len(spatial) == 3 else 1
        rows_cols = spatial[-2:]
        want = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
        if len(spatial) not in (2, 3) or rows_cols != want or frames != n_frames:
            raise MedicalImageLoadError(
                path,
                f"decoded pixel array of shape {shape} disagrees with the header (Rows={want[0]}, Columns={want[1]}, "
                f"NumberOfFrames={n_frames}, SamplesPerPixel={samples}): the header or the pixel data is corrupted",
            )

    @staticmethod
    def _functional_group_rescale(path: Path, ds: Any, n_frames: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-frame ``(slopes, intercepts)`` of an enhanced multi-frame file, or None when it declares no rescale.

        A frame's Pixel Value Transformation comes from its Per-Frame Functional Group when present, else from the
        Shared Functional Group (PS3.3 C.7.6.16). Enhanced CT often varies the rescale per frame.

        Raises:
            MedicalImageLoadError: some frames declare a rescale and others do not, or the per-frame sequence is
                shorter than the number of frames, or a slope/intercept is not a number.
        """

        def pvt_of(group_seq: Any, index: int) -> Any:
            try:
                return group_seq[index].PixelValueTransformationSequence[0]
            except (AttributeError, IndexError, KeyError, TypeError):
                return None

        shared = pvt_of(ds.get("SharedFunctionalGroupsSequence"), 0)
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        frames = [pvt_of(per_frame, k) if per_frame is not None else None for k in range(n_frames)]
        frames = [f if f is not None else shared for f in frames]
        missing = [k for k, f in enumerate(frames) if f is None]
        if len(missing) == n_frames:
            return None
        if missing:
            raise MedicalImageLoadError(
                path,
                f"enhanced multi-frame file declares a Pixel Value Transformation (rescale) for some frames but not "
                f"for {len(missing)} of {n_frames} (first: frame {missing[0]}); the HU/units would be inconsistent",
            )
        try:
            slopes = np.array([float(f.get("RescaleSlope", 1.0)) for f in frames], dtype=np.float64)
            intercepts = np.array([float(f.get("RescaleIntercept", 0.0)) for f in frames], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise MedicalImageLoadError(path, f"invalid functional-group Rescale Slope/Intercept ({e})") from e
        if not (np.all(np.isfinite(slopes)) and np.all(np.isfinite(intercepts))):
            raise MedicalImageLoadError(path, "functional-group Rescale Slope/Intercept is not a finite number")
        return slopes, intercepts

    # -------------------------------------------------------------------------------------- NIfTI / DICOM series
    def _nifti_shape(self, path: Path) -> tuple[int, ...]:
        """The header shape of a NIfTI file without trailing singleton axes; refuses complex data and > 4 axes."""
        if not has_nibabel:
            raise MedicalImageLoadError(path, "nibabel is not installed (pip install nibabel)")
        try:
            nii = nibabel.load(str(path))
            shape, data_dtype = tuple(nii.shape), np.dtype(nii.get_data_dtype())
        except Exception as e:
            reason = f"unreadable or truncated NIfTI file ({type(e).__name__}: {e})"
            raise MedicalImageLoadError(path, reason) from e
        if data_dtype.kind == "c":  # MONAI/numpy would keep only the real part, silently
            raise MedicalImageLoadError(
                path,
                f"NIfTI image holds complex values (dtype {data_dtype.name}); refusing to drop the imaginary part: "
                "convert it first (e.g. to its magnitude, numpy.abs) and save a real-valued NIfTI",
            )
        # trailing singleton axes are dropped: (x, y, z, 1) is 3D, and (x, y, 1) is 2D when a 2D image is expected
        min_dims = 2 if self.expected_ndim == 2 else 3
        while len(shape) > min_dims and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) > 4:
            raise MedicalImageLoadError(
                path,
                f"NIfTI image has {len(shape)} dimensions (shape {shape}); at most 4 (x, y, z, t) are supported",
            )
        self._check_ndim(path, len(shape), shape)
        return shape

    def _series_reader(self, path: Path, reader: Any) -> tuple[Any, list[Path]]:
        """``(reader, files)`` of a checked DICOM series folder: a ``PydicomReader`` restricted to the chosen series
        when the folder holds several."""
        if not has_pydicom:
            raise MedicalImageLoadError(path, "pydicom is not installed (pip install pydicom)")
        if not any(f.is_file() for f in path.iterdir()):
            raise MedicalImageLoadError(path, "folder holds no files (expected a DICOM series)")
        series_files = _check_dicom_series(path, self.series_uid)
        if len(series_files) < len(_dicom_files_in(path)):  # one series chosen among several: read only it
            pattern = "^(?:" + "|".join(re.escape(os.path.join(str(path), f.name)) for f in series_files) + ")$"
            from monai.data import PydicomReader

            reader = PydicomReader(fname_regex=pattern)
        return reader, series_files

    def _load_monai(self, path: Path, reader: str, kind: str) -> MetaTensor:
        from monai.transforms import LoadImage, Orientation

        shape: tuple[int, ...] = ()
        series_files: list[Path] = []
        if kind == "nifti":
            shape = self._nifti_shape(path)
        else:
            reader, series_files = self._series_reader(path, reader)
        try:
            img = LoadImage(reader=reader, image_only=True, ensure_channel_first=True, dtype=np.float32)(str(path))
        except Exception as e:
            what = "NIfTI file" if kind == "nifti" else "DICOM series folder"
            raise MedicalImageLoadError(path, f"unreadable {what} ({type(e).__name__}: {e})") from e
        if kind == "dicom_series":
            self._check_ndim(path, img.ndim - 1, img.shape[1:])
        else:  # MONAI keeps trailing singleton dims of 5D headers, e.g. (x, y, z, 1, 1) -> (1, x, y, z, 1)
            want = (1, *shape) if len(shape) <= 3 else (shape[3], *shape[:3])
            while img.ndim > len(want) and img.shape[-1] == 1:
                img = img.squeeze(-1)
            if tuple(img.shape) != want:
                raise MedicalImageLoadError(
                    path, f"NIfTI reader returned shape {tuple(img.shape)} for header dimensions {shape}"
                )
        if self.axcodes and img.ndim - 1 in (2, 3):
            img = Orientation(axcodes=self.axcodes[: img.ndim - 1], labels=_RAS_LABELS)(img)
        meta = self._common_meta(path, kind)
        for k, v in meta.items():
            if k not in img.meta or k in ("filename_or_obj", "source_format"):
                img.meta[k] = v
        if kind == "dicom_series":
            img.meta.update(self._series_facts(series_files[0]))
            if img.meta["PhotometricInterpretation"] == "MONOCHROME1" and self.invert_monochrome1:
                ds = pydicom.dcmread(str(series_files[0]), stop_before_pixels=True)
                lo_hi = _monochrome1_range(path, ds, np.zeros(0, dtype=np.int32), None, None)
                total = float(lo_hi[0] + lo_hi[1]) if lo_hi is not None else float(img.max() + img.min())
                img.neg_().add_(total)  # PydicomReader applied the rescale; it does not invert
                img.meta["inverted"] = True
        spatial_rank = img.ndim - 1
        aff = img.affine.detach().cpu().numpy()
        img.meta["spacing"] = np.sqrt((aff[:spatial_rank, :spatial_rank] ** 2).sum(axis=0)).astype(np.float64)
        img.meta["spatial_shape"] = np.asarray(img.shape[1:], dtype=np.int64)
        return img.to(self.dtype) if img.dtype != self.dtype else img

    @staticmethod
    def _series_facts(first: Path) -> dict[str, Any]:
        """DICOM facts of a series (from its first file's header), which PydicomReader prunes from the metadata."""
        ds = pydicom.dcmread(str(first), stop_before_pixels=True, force=True)
        has_rescale = "RescaleSlope" in ds or "RescaleIntercept" in ds
        return {
            "Modality": str(ds.get("Modality", "")),
            "PhotometricInterpretation": str(ds.get("PhotometricInterpretation", "")),
            "TransferSyntaxUID": str(getattr(ds.get("file_meta", None), "TransferSyntaxUID", "") or ""),
            "RescaleSlope": _first_float(ds.get("RescaleSlope", 1.0)),
            "RescaleIntercept": _first_float(ds.get("RescaleIntercept", 0.0)),
            "BitsStored": int(ds.get("BitsStored", 0) or 0),
            "PixelRepresentation": int(ds.get("PixelRepresentation", 0) or 0),
            "rescale_applied": has_rescale,  # PydicomReader applies RescaleSlope/Intercept when present
        }

    # --------------------------------------------------------------------------------------------------- PNG/JPEG
    def _load_pil(self, path: Path) -> MetaTensor:
        if not has_pil:
            raise MedicalImageLoadError(path, "Pillow is not installed")
        from PIL import UnidentifiedImageError

        try:
            with _strict_pillow_decode(), PIL_Image.open(path) as im:
                im.load()  # full decode: a truncated file raises here even where LOAD_TRUNCATED_IMAGES is set
                short = _png_missing_rows(path) if im.format == "PNG" else None
                if short:
                    raise MedicalImageLoadError(path, short)
                exif_orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
                if exif_orientation != 1:
                    from PIL import ImageOps

                    ImageOps.exif_transpose(im, in_place=True)  # display orientation, as a viewer shows it
                mode = im.mode
                if self.grey:
                    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                        arr = np.array(im)
                    else:
                        arr = np.array(im.convert("L"))
                else:
                    arr = np.array(im.convert("RGB"))
        except UnidentifiedImageError as e:
            raise MedicalImageLoadError(path, f"unreadable image, not a valid PNG/JPEG ({e})") from e
        except (OSError, SyntaxError, ValueError) as e:
            raise MedicalImageLoadError(path, f"unreadable or truncated image ({type(e).__name__}: {e})") from e
        self._check_ndim(path, 2, arr.shape[:2])
        arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
        meta = self._common_meta(path, "image")
        meta["PhotometricInterpretation"] = "MONOCHROME2" if self.grey else "RGB"
        meta["exif_orientation"] = exif_orientation
        return self._to_meta_tensor(arr.astype(np.float32), (1.0, 1.0), meta)
