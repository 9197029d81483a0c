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
``apply_voi_lut``) so the grey levels match what a DICOM viewer shows.

Array layout (documented contract):

- 2D images (PNG/JPEG, single-frame DICOM): ``(C, H, W)`` = ``(C, rows, columns)``, the display orientation that
  ImageNet backbones were trained on (MONAI's ``PILReader`` would transpose to ``(W, H)``; we do not).
- Multi-frame DICOM: ``multiframe="spatial"`` (default) puts frames on the last spatial axis ``(1, rows, cols,
  frames)``; ``multiframe="channel"`` puts them first ``(frames, rows, cols)``.
- NIfTI and DICOM series: MONAI's world-aligned ``(C, x, y, z)`` layout, optionally re-oriented to ``axcodes``.
"""

from __future__ import annotations

import logging
import os
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


def _is_dicom_file(path: Path) -> bool:
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
    if name.endswith(DICOM_EXTENSIONS) or _is_dicom_file(p):
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


def _decoder_available(ts: Any) -> bool:
    """Whether pydicom has a working decoder plugin for transfer syntax ``ts``."""
    try:
        from pydicom.pixels import get_decoder

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
    3. MONOCHROME1 inversion ``max + min - x`` (of the image's own range) so that bone is bright, as in MONOCHROME2.

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
    ``rescale_applied``, ``voi_applied``, ``inverted``.

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
        from pydicom.errors import InvalidDicomError
        from pydicom.pixels import apply_modality_lut, apply_voi_lut

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
        if samples == 1:
            if "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds:
                arr = apply_modality_lut(raw, ds)
                meta["rescale_applied"] = True
                meta["RescaleSlope"] = _first_float(ds.get("RescaleSlope", 1.0))
                meta["RescaleIntercept"] = _first_float(ds.get("RescaleIntercept", 0.0))
            else:  # enhanced multi-frame: rescale in the shared or per-frame functional groups
                pvt = self._functional_group_rescale(path, ds, n_frames)
                if pvt is not None:
                    slopes, intercepts = pvt
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
            has_voi = "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)
            if has_voi:
                meta["WindowCenter"] = _first_float(ds.get("WindowCenter"))
                meta["WindowWidth"] = _first_float(ds.get("WindowWidth"))
            if has_voi and (self.voi == "always" or (self.voi == "auto" and modality in RADIOGRAPH_MODALITIES)):
                arr = apply_voi_lut(arr, ds, index=0)
                meta["voi_applied"] = True
            if pi == "MONOCHROME1" and self.invert_monochrome1:
                arr = arr.astype(np.float64)
                arr = arr.max() + arr.min() - arr
                meta["inverted"] = True
        arr = np.asarray(arr, dtype=np.float32)

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
    def _load_monai(self, path: Path, reader: str, kind: str) -> MetaTensor:
        from monai.transforms import LoadImage, Orientation

        if kind == "nifti":
            if not has_nibabel:
                raise MedicalImageLoadError(path, "nibabel is not installed (pip install nibabel)")
            try:
                shape = tuple(nibabel.load(str(path)).shape)
            except Exception as e:
                reason = f"unreadable or truncated NIfTI file ({type(e).__name__}: {e})"
                raise MedicalImageLoadError(path, reason) from e
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
        else:
            if not has_pydicom:
                raise MedicalImageLoadError(path, "pydicom is not installed (pip install pydicom)")
            if not any(f.is_file() for f in path.iterdir()):
                raise MedicalImageLoadError(path, "folder holds no files (expected a DICOM series)")
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
            img.meta.update(self._series_facts(path))
        spatial_rank = img.ndim - 1
        aff = img.affine.detach().cpu().numpy()
        img.meta["spacing"] = np.sqrt((aff[:spatial_rank, :spatial_rank] ** 2).sum(axis=0)).astype(np.float64)
        img.meta["spatial_shape"] = np.asarray(img.shape[1:], dtype=np.int64)
        return img.to(self.dtype) if img.dtype != self.dtype else img

    @staticmethod
    def _series_facts(folder: Path) -> dict[str, Any]:
        """DICOM facts of a series (from its first file's header), which PydicomReader prunes from the metadata."""
        first = next(iter(sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))))
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
            with PIL_Image.open(path) as im:
                im.load()
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
        return self._to_meta_tensor(arr.astype(np.float32), (1.0, 1.0), meta)
