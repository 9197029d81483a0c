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
"""Real image files from the MedMNIST ``.npz`` sets in ``../shared/data``, and small DICOM/NIfTI writers.

Used by benchmarks and tests to exercise the file loaders on real images: :func:`datalist_from_npz` writes PNG,
DICOM (CR radiographs; CT series for 3D) or NIfTI files and returns a data list. :func:`write_dicom` builds a valid
single-frame DICOM file with pydicom's ``Dataset`` (Explicit VR Little Endian), optionally MONOCHROME1 and with
Rescale Slope/Intercept, so that the loader's modality LUT and inversion can be round-tripped.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SOP_CLASS_UIDS",
    "write_dicom",
    "write_dicom_series",
    "write_nifti",
    "write_png",
    "read_npz",
    "datalist_from_npz",
]

#: SOP Class UIDs of the storage classes the writer supports
SOP_CLASS_UIDS = {
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "OT": "1.2.840.10008.5.1.4.1.1.7",
}


def write_dicom(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    modality: str = "CR",
    monochrome1: bool = False,
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    spacing: Sequence[float] = (1.0, 1.0),
    window: tuple[float, float] | None = None,
    patient_id: str = "ANON",
    study_uid: str | None = None,
    series_uid: str | None = None,
    instance_number: int = 1,
    position: Sequence[float] | None = None,
    slice_thickness: float | None = None,
) -> Path:
    """Write a 2D image as a single-frame DICOM file that :class:`~monai_transfer.transforms.LoadMedicalImage` reads
    back as ``image`` (up to the integer rounding of ``(image - intercept) / slope``).

    Stored values are ``round((image - rescale_intercept) / rescale_slope)``: 8-bit unsigned for a ``uint8`` image
    with the identity rescale, otherwise 16-bit, signed when a value is negative. With ``monochrome1`` the stored
    values are inverted over the stored type's range (e.g. ``65535 - v``) and the Photometric Interpretation is
    MONOCHROME1, so a viewer (and the loader) shows the original. Rescale Slope/Intercept are written only for
    CT/MR or a non-identity rescale.

    Args:
        path: output file (parent folders are created).
        image: 2D array ``(rows, cols)`` of the values the loader should return (e.g. Hounsfield units).
        modality: ``"CR"`` (default), ``"DX"``, ``"CT"``, ``"MR"`` or ``"OT"``.
        monochrome1: store inverted grey levels as MONOCHROME1; default False.
        rescale_slope: Rescale Slope (> 0), default 1.
        rescale_intercept: Rescale Intercept, default 0.
        spacing: Pixel Spacing (row, column) in mm.
        window: optional ``(center, width)`` written as Window Center/Width (in output units).
        patient_id: Patient ID.
        study_uid: Study Instance UID (default: derived from ``patient_id``).
        series_uid: Series Instance UID (default: derived from ``patient_id`` and the modality).
        instance_number: Instance Number.
        position: Image Position (Patient); with it, Image Orientation (Patient) is axial ``[1,0,0,0,1,0]``.
        slice_thickness: Slice Thickness in mm.

    Returns:
        the written path.

    Raises:
        ValueError: not 2D, unknown modality, non-positive slope, or values that do not fit 16 bits.
    """
    img, modality = _checked_image(image, modality, path)
    stored = _stored_values(img, rescale_slope, rescale_intercept, monochrome1, path)
    path = Path(path)
    ds = _new_dataset(path, modality, patient_id, study_uid, series_uid, instance_number)
    _set_image_attributes(ds, stored, monochrome1, spacing, position, slice_thickness, window)
    if modality in ("CT", "MR") or not (rescale_slope == 1.0 and rescale_intercept == 0.0):
        ds.RescaleSlope, ds.RescaleIntercept = f"{float(rescale_slope):g}", f"{float(rescale_intercept):g}"
        ds.RescaleType = "HU" if modality == "CT" else "US"
    _save_dataset(ds, path)
    return path


def _checked_image(image: Any, modality: str, path: Any) -> tuple[np.ndarray, str]:
    """``(2D array, upper-case modality)`` for :func:`write_dicom`; ``ValueError`` naming the value otherwise."""
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"write_dicom writes 2D images, got shape {img.shape} for '{path}'.")
    modality = modality.upper()
    if modality not in SOP_CLASS_UIDS:
        raise ValueError(f"modality must be one of {sorted(SOP_CLASS_UIDS)}, got {modality!r}.")
    return img, modality


def _set_image_attributes(
    ds: Any,
    stored: np.ndarray,
    monochrome1: bool,
    spacing: Sequence[float],
    position: Sequence[float] | None,
    slice_thickness: float | None,
    window: tuple[float, float] | None,
) -> None:
    """Image Pixel module (size, bits, Photometric Interpretation), spacing, position and window of ``stored``."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    bits = stored.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.PixelSpacing = [f"{float(s):g}" for s in spacing]
    ds.PixelData = stored.tobytes()
    if position is not None:
        ds.ImagePositionPatient = [f"{float(p):g}" for p in position]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    if slice_thickness is not None:
        ds.SliceThickness = f"{float(slice_thickness):g}"
    if window is not None:
        ds.WindowCenter = f"{float(window[0]):g}"
        ds.WindowWidth = f"{float(window[1]):g}"


def _stored_values(
    img: np.ndarray, rescale_slope: float, rescale_intercept: float, monochrome1: bool, path: Any
) -> np.ndarray:
    """The stored pixel values of :func:`write_dicom`: ``uint8`` (8-bit image, identity rescale), else ``int16``
    when a value is negative, else ``uint16``; inverted over the type's range for MONOCHROME1."""
    if rescale_slope <= 0:
        raise ValueError(f"rescale_slope must be > 0, got {rescale_slope}.")
    identity = rescale_slope == 1.0 and rescale_intercept == 0.0
    stored = np.rint((img.astype(np.float64) - rescale_intercept) / rescale_slope)
    if img.dtype == np.uint8 and identity:
        dtype: type = np.uint8
    elif stored.min() < 0:
        dtype = np.int16
    else:
        dtype = np.uint16
    info = np.iinfo(dtype)
    if stored.min() < info.min or stored.max() > info.max:
        raise ValueError(
            f"stored values [{stored.min()}, {stored.max()}] do not fit {np.dtype(dtype).name} for '{path}'; "
            "change rescale_slope/rescale_intercept."
        )
    if monochrome1:  # inverted over the representable range, as the loader (and a viewer) inverts it back
        stored = float(info.min) + float(info.max) - stored
    return stored.astype(dtype)


def _new_dataset(
    path: Path, modality: str, patient_id: str, study_uid: str | None, series_uid: str | None, instance_number: int
) -> Any:
    """A DICOM data set with its file meta, UIDs (derived from the patient id when not given) and patient/study
    identification; the image attributes are set by the caller."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    sop_instance = generate_uid(entropy_srcs=[str(path.name), patient_id, str(instance_number), modality])
    study_uid = study_uid or generate_uid(entropy_srcs=["study", patient_id])
    series_uid = series_uid or generate_uid(entropy_srcs=["series", patient_id, modality])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS_UIDS[modality]
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    today = datetime.date(2000, 1, 1).strftime("%Y%m%d")
    ds.SOPClassUID = SOP_CLASS_UIDS[modality]
    ds.SOPInstanceUID = sop_instance
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=["frame", study_uid])
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.StudyDate = ds.SeriesDate = today
    ds.SeriesNumber = 1
    ds.InstanceNumber = int(instance_number)
    return ds


def _save_dataset(ds: Any, path: Path) -> None:
    """Save as explicit VR little endian under pydicom 3 (the encoding follows the transfer syntax) or 2.4."""
    import pydicom

    path.parent.mkdir(parents=True, exist_ok=True)
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(str(path), enforce_file_format=True)
    else:  # pydicom 2.4 (MONAI Label's environment) needs the encoding on the data set
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)


def write_dicom_series(
    folder: str | os.PathLike,
    volume: np.ndarray,
    *,
    modality: str = "CT",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    patient_id: str = "ANON",
) -> Path:
    """Write a 3D volume ``(slices, rows, cols)`` as a DICOM series, one file per slice (``slice_0000.dcm``, ...).

    Slice ``k`` lies at Image Position ``(0, 0, k * spacing[0])``; MONAI's ``PydicomReader`` (used by
    ``LoadMedicalImage`` for folders) reads it back as ``(1, cols, rows, slices)`` (its ``swap_ij``).

    Args:
        folder: output folder (created).
        volume: 3D array.
        modality: default ``"CT"``.
        spacing: ``(slice, row, column)`` spacing in mm.
        rescale_slope, rescale_intercept, patient_id: see :func:`write_dicom`.

    Returns:
        the folder.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"write_dicom_series writes 3D volumes, got shape {vol.shape} for '{folder}'.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from pydicom.uid import generate_uid

    series_uid = generate_uid(entropy_srcs=["series", patient_id, str(folder.name)])
    for k in range(vol.shape[0]):
        write_dicom(
            folder / f"slice_{k:04d}.dcm",
            vol[k],
            modality=modality,
            rescale_slope=rescale_slope,
            rescale_intercept=rescale_intercept,
            spacing=spacing[1:],
            patient_id=patient_id,
            series_uid=series_uid,
            instance_number=k + 1,
            position=(0.0, 0.0, k * float(spacing[0])),
            slice_thickness=float(spacing[0]),
        )
    return folder


def write_nifti(path: str | os.PathLike, array: np.ndarray, spacing: Sequence[float] | None = None) -> Path:
    """Write an array as NIfTI with a diagonal affine of ``spacing`` (default 1 mm); ``.nii`` or ``.nii.gz``."""
    import nibabel as nib

    arr = np.asarray(array)
    sp = list(spacing) if spacing is not None else [1.0] * min(arr.ndim, 3)
    affine = np.eye(4)
    for i, s in enumerate(sp[:3]):
        affine[i, i] = float(s)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a 2D ``uint8`` (or ``uint16``) grey image as PNG."""
    from PIL import Image

    img = np.asarray(image)
    if img.ndim != 2 or img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_png needs a 2D uint8/uint16 image, got {img.shape} {img.dtype} for '{path}'.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(str(path))
    return path


def _balanced_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices drawn round-robin over the classes in a seeded order (all classes present when n allows)."""
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    out: list[int] = []
    while len(out) < n and any(pools):
        for p in pools:
            if p and len(out) < n:
                out.append(int(p.pop(0)))
    return np.asarray(sorted(out), dtype=np.int64)


def read_npz(path: str | os.PathLike, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (all, or ``keys``), read now, with errors that name the file.

    ``np.load`` on a truncated or corrupt download raises ``BadZipFile: File is not a zip file``, ``zlib.error`` or
    ``EOFError`` naming neither the file nor the array; here every such failure is a ``ValueError`` naming both.

    Args:
        path: the ``.npz``.
        keys: the arrays to read; default all. A missing one raises ``KeyError`` naming the file and the arrays found.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        KeyError: a requested array is missing.
        ValueError: the file is not a readable npz (truncated, corrupt, pickled objects).
    """
    import zipfile
    import zlib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"npz file '{path}' does not exist.")
    name = "(the archive)"
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys or () if k not in z.files]
            if missing:
                raise KeyError(f"'{path}' has no {missing} arrays (has {sorted(z.files)}).")
            out = {}
            for name in keys or z.files:
                out[name] = z[name]
            return out
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(
            f"'{path}': cannot read array {name} of the npz ({type(e).__name__}: {e}); the file is truncated or "
            "corrupt (download it again)"
        ) from e


def datalist_from_npz(
    path: str | os.PathLike,
    split: str,
    out_dir: str | os.PathLike,
    fmt: str = "png",
    n: int | None = None,
    seed: int = 0,
    **dicom_kwargs: Any,
) -> list[dict[str, Any]]:
    """Write the images of one split of a MedMNIST ``.npz`` as files and return their data list.

    2D sets (e.g. PneumoniaMNIST ``(N, 28, 28)``) become PNG, single CR DICOM files or 2D NIfTI; 3D sets (e.g.
    AdrenalMNIST3D ``(N, 64, 64, 64)``) become NIfTI volumes or DICOM series folders (one CT file per slice along
    the first axis). Files are named ``<split>_<index>`` after the image's index in the npz; MedMNIST has no patient
    ids, so each image is its own ``patient_id``.

    Args:
        path: the ``.npz`` with ``<split>_images`` and ``<split>_labels``.
        split: e.g. ``"train"`` or ``"val"``.
        out_dir: output folder (created).
        fmt: ``"png"`` (2D only), ``"dcm"`` or ``"nii.gz"``.
        n: write only ``n`` images, drawn class-balanced with ``seed``; default all.
        seed: seed of the subset, default 0.
        dicom_kwargs: passed to :func:`write_dicom` / :func:`write_dicom_series` (e.g. ``monochrome1=True``,
            ``rescale_slope``, ``rescale_intercept``, ``modality``).

    Returns:
        ``[{"image": path, "label": int, "patient_id": str, "npz_index": int}]``.

    Raises:
        FileNotFoundError: missing npz. KeyError: missing split. ValueError: bad ``fmt``, PNG for 3D data, or a
        truncated/corrupt npz (named, :func:`read_npz`).
    """
    if fmt not in ("png", "dcm", "nii.gz"):
        raise ValueError(f"fmt must be 'png', 'dcm' or 'nii.gz', got {fmt!r}.")
    keys = (f"{split}_images", f"{split}_labels")
    arrays = read_npz(path, keys)
    images, labels = arrays[keys[0]], arrays[keys[1]].reshape(-1).astype(np.int64)
    idx = np.arange(len(labels)) if n is None else _balanced_subset(labels, int(n), seed)
    is3d = images.ndim == 4
    if fmt == "png" and is3d:
        raise ValueError(f"'{path}' holds 3D volumes {images.shape[1:]}; use fmt='nii.gz' or 'dcm', not 'png'.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for i in idx:
        name = f"{split}_{int(i):05d}"
        img = images[i]
        if fmt == "png":
            p = write_png(out / f"{name}.png", img)
        elif fmt == "nii.gz":
            p = write_nifti(out / f"{name}.nii.gz", img)
        elif is3d:
            kw = {"modality": "CT", **dicom_kwargs}
            p = write_dicom_series(out / name, img, patient_id=name, **kw)
        else:
            kw = {"modality": "CR", **dicom_kwargs}
            p = write_dicom(out / f"{name}.dcm", img, patient_id=name, **kw)
        items.append({"image": str(p), "label": int(labels[i]), "patient_id": name, "npz_index": int(i)})
    return items
