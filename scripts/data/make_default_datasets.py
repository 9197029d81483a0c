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
"""Build the small real datasets that ship inside the repository with the two bundles.

A fresh clone has no ``../shared``, so the default ``train.json`` of each bundle reads data stored in the
repository itself. This script derives that data from the MedMNIST v2 files in ``../shared/data``:

- ``bundles/xray/data``: PneumoniaMNIST 28x28 grey PNGs in ``{train,val}/{normal,pneumonia}/``, a few val
  images as real DICOM CR files in ``dicom_samples/``, and ``datalist.csv`` listing every PNG.
- ``bundles/ct_slices/data``: AdrenalMNIST3D 64^3 masks as ``volumes/*.nii.gz`` and ``labels.csv``.
- ``bundles/{xray,ct_slices}/docs/data_license.txt``: licence, attribution, changes, regeneration command.

The output is deterministic (fixed seed, no timestamps in any file) and the script is idempotent: it deletes
the folders and files it generates before writing them again. It is a maintenance tool, never imported by the
library.

Usage::

    python scripts/data/make_default_datasets.py [--shared ../shared/data] [--root .] [--seed 20240611]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

__all__ = [
    "XRAY_CLASSES",
    "CT_CLASSES",
    "REGEN_COMMAND",
    "stratified_subset",
    "build_xray",
    "build_ct",
    "write_xray_dicom",
    "main",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "data"
DEFAULT_SEED = 20240611
XRAY_CLASSES = ("normal", "pneumonia")
CT_CLASSES = ("normal", "adrenal_mass")
REGEN_COMMAND = "python scripts/data/make_default_datasets.py --shared ../shared/data"
PNEUMONIA_REL = Path("pneumoniamnist") / "pneumoniamnist_28_trainval.npz"
ADRENAL_REL = Path("adrenalmnist3d") / "adrenalmnist3d_64_trainval.npz"
#: DICOM CR encoding of an 8-bit grey value p: stored = (255 - p) * 16 (12 bits stored, MONOCHROME1).
DICOM_SCALE = 16
DICOM_MAX_STORED = 255 * DICOM_SCALE
#: Linear VOI window mapping stored 0..4080 exactly onto the display range (DICOM PS3.3 C.11.2.1.2.1).
DICOM_WINDOW_CENTER = DICOM_MAX_STORED / 2 + 0.5
DICOM_WINDOW_WIDTH = DICOM_MAX_STORED + 1
#: Nominal pixel spacing (mm) for the synthesised DICOM header: MedMNIST does not keep the original geometry.
DICOM_PIXEL_SPACING_MM = 8.0
UID_NAMESPACE = "monai-transfer/default-data/v1"

MEDMNIST_CITATION = (
    "Jiancheng Yang, Rui Shi, Donglai Wei, Zequan Liu, Lin Zhao, Bilian Ke, Hanspeter Pfister, Bingbing Ni. "
    '"MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image classification". '
    "Scientific Data 10, 41 (2023). https://doi.org/10.1038/s41597-022-01721-8"
)
CC_BY = "Creative Commons Attribution 4.0 International (CC BY 4.0), https://creativecommons.org/licenses/by/4.0/"


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read the four arrays of a MedMNIST train/val npz; labels flattened to ``(N,)`` int64."""
    if not path.is_file():
        raise FileNotFoundError(
            f"MedMNIST source file not found: {path} (pass --shared DIR with the shared data folder)"
        )
    with np.load(path) as z:
        missing = {"train_images", "train_labels", "val_images", "val_labels"} - set(z.files)
        if missing:
            raise KeyError(f"{path} lacks arrays {sorted(missing)}; found {sorted(z.files)}")
        return {
            "train_images": z["train_images"],
            "train_labels": z["train_labels"].reshape(-1).astype(np.int64),
            "val_images": z["val_images"],
            "val_labels": z["val_labels"].reshape(-1).astype(np.int64),
        }


def stratified_subset(labels: np.ndarray, candidates: np.ndarray, counts: dict[int, int], seed) -> np.ndarray:
    """Draw ``counts[c]`` indices of class ``c`` from ``candidates`` without replacement, sorted ascending.

    Args:
        labels: integer label of every source index.
        candidates: source indices allowed in the draw.
        counts: number of indices wanted per class.
        seed: anything ``numpy.random.default_rng`` accepts; the same seed gives the same draw.

    Returns:
        The chosen source indices, sorted.

    Raises:
        ValueError: when a class has fewer candidates than requested.
    """
    rng = np.random.default_rng(seed)
    chosen = []
    for c in sorted(counts):
        pool = candidates[labels[candidates] == c]
        if counts[c] > len(pool):
            raise ValueError(f"class {c}: asked for counts[{c}]={counts[c]} but only {len(pool)} candidates exist")
        chosen.append(rng.choice(pool, size=counts[c], replace=False))
    return np.sort(np.concatenate(chosen))


def _not_in(images: np.ndarray, forbidden: np.ndarray) -> np.ndarray:
    """Indices of ``images`` whose raw bytes equal none of the ``forbidden`` images."""
    banned = {im.tobytes() for im in forbidden}
    return np.array([i for i, im in enumerate(images) if im.tobytes() not in banned], dtype=np.int64)


def _clear(paths: list[Path]) -> None:
    """Delete generated files/folders so that a rerun rewrites them from scratch."""
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _write_csv(path: Path, rows: list[dict[str, object]], columns: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------------------------------------------
# X-ray
# ----------------------------------------------------------------------------------------------------------------


def write_xray_dicom(image: np.ndarray, path: Path, source_id: str, label: int) -> None:
    """Save one 8-bit grey X-ray as a DICOM Computed Radiography file (MONOCHROME1, 12 of 16 bits).

    Stored value ``s = (255 - p) * 16`` for grey value ``p``, so a reader that applies the linear VOI window
    (centre 2040.5, width 4081) and then the MONOCHROME1 inversion gets exactly ``p / 255``. Identifiers are
    derived from ``source_id`` with :func:`pydicom.uid.generate_uid` ``entropy_srcs``, so reruns are identical.

    Args:
        image: ``(H, W)`` uint8 array.
        path: output ``.dcm`` file.
        source_id: traceable id of the source image, e.g. ``pneumoniamnist_val_00012``.
        label: 0 (normal) or 1 (pneumonia), written to ``ImageComments``.

    Raises:
        ValueError: when ``image`` is not a 2D uint8 array.
    """
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"image for {path} must be 2D uint8, got shape {image.shape} dtype {image.dtype}")
    stored = ((255 - image.astype(np.uint16)) * DICOM_SCALE).astype("<u2")
    uid = {k: generate_uid(entropy_srcs=[UID_NAMESPACE, source_id, k]) for k in ("study", "series", "sop")}

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = uid["sop"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = uid["sop"]
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.Manufacturer = ""
    ds.ReferringPhysicianName = ""
    ds.PatientName = source_id
    ds.PatientID = source_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "MedMNIST v2 public data; header synthesised"
    ds.BodyPartExamined = "CHEST"
    ds.StudyInstanceUID = uid["study"]
    ds.SeriesInstanceUID = uid["series"]
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.Laterality = ""
    ds.ImageComments = f"PneumoniaMNIST (MedMNIST v2, CC BY 4.0) {source_id}, label {label} ({XRAY_CLASSES[label]})"
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.Rows, ds.Columns = (int(s) for s in image.shape)
    ds.PixelSpacing = [DICOM_PIXEL_SPACING_MM, DICOM_PIXEL_SPACING_MM]
    ds.ImagerPixelSpacing = [DICOM_PIXEL_SPACING_MM, DICOM_PIXEL_SPACING_MM]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = DICOM_WINDOW_CENTER
    ds.WindowWidth = DICOM_WINDOW_WIDTH
    ds.VOILUTFunction = "LINEAR"
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def build_xray(
    npz_path: Path, out_dir: Path, n_train: int = 2000, n_dicom: int = 8, seed: int = DEFAULT_SEED
) -> dict[str, object]:
    """Write the default X-ray dataset (PNG class folders, DICOM samples, datalist.csv) into ``out_dir``.

    Train images come only from the npz train split, val images only from the val split (all of it). Train
    images whose bytes equal any val image are excluded. The train subset keeps the natural class ratio of
    the remaining train images.

    Args:
        npz_path: ``pneumoniamnist_28_trainval.npz``.
        out_dir: the bundle's ``data`` folder; its generated entries are deleted first.
        n_train: number of train images to ship.
        n_dicom: number of val images also written as DICOM (half per class).
        seed: random seed of the subset draws.

    Returns:
        A summary dict (counts per split and class, excluded duplicates, DICOM sample ids).

    Raises:
        ValueError: when ``n_train`` exceeds the available train images.
    """
    d = _load_npz(npz_path)
    tx, ty, vx, vy = d["train_images"], d["train_labels"], d["val_images"], d["val_labels"]
    candidates = _not_in(tx, vx)
    n_dup = len(tx) - len(candidates)
    if not 0 < n_train <= len(candidates):
        raise ValueError(f"n_train={n_train} must be in 1..{len(candidates)} (train images not duplicated in val)")
    natural = np.bincount(ty[candidates], minlength=2) / len(candidates)
    n_normal = int(round(n_train * natural[0]))
    train_idx = stratified_subset(ty, candidates, {0: n_normal, 1: n_train - n_normal}, seed=[seed, 0, 0])
    val_idx = np.arange(len(vy))

    _clear([out_dir / p for p in ("train", "val", "dicom_samples", "datalist.csv", "README.md")])
    rows: list[dict[str, object]] = []
    for split, images, labels, indices in (("train", tx, ty, train_idx), ("val", vx, vy, val_idx)):
        for c in XRAY_CLASSES:
            (out_dir / split / c).mkdir(parents=True, exist_ok=True)
        for i in indices:
            label = int(labels[i])
            sid = f"pneumoniamnist_{split}_{i:05d}"
            rel = f"{split}/{XRAY_CLASSES[label]}/{sid}.png"
            Image.fromarray(np.ascontiguousarray(images[i])).save(out_dir / rel, optimize=True)
            rows.append({"image": rel, "label": label, "patient_id": sid, "split": split})
    _write_csv(out_dir / "datalist.csv", rows, ("image", "label", "patient_id", "split"))

    per_class = max(1, n_dicom // 2)
    dicom_idx = stratified_subset(vy, val_idx, {0: per_class, 1: n_dicom - per_class}, seed=[seed, 0, 1])
    dicom_rows: list[dict[str, object]] = []
    for i in dicom_idx:
        sid = f"pneumoniamnist_val_{i:05d}"
        write_xray_dicom(vx[i], out_dir / "dicom_samples" / f"{sid}.dcm", sid, int(vy[i]))
        dicom_rows.append({"image": f"{sid}.dcm", "label": int(vy[i]), "patient_id": sid, "split": "val"})
    _write_csv(out_dir / "dicom_samples" / "labels.csv", dicom_rows, ("image", "label", "patient_id", "split"))

    summary = {
        "train": {c: int((ty[train_idx] == k).sum()) for k, c in enumerate(XRAY_CLASSES)},
        "val": {c: int((vy == k).sum()) for k, c in enumerate(XRAY_CLASSES)},
        "excluded_train_duplicates_of_val": n_dup,
        "source_train": {c: int((ty == k).sum()) for k, c in enumerate(XRAY_CLASSES)},
        "dicom": [r["patient_id"] for r in dicom_rows],
    }
    (out_dir / "README.md").write_text(_xray_readme(summary), encoding="utf-8")
    return summary


# ----------------------------------------------------------------------------------------------------------------
# CT volumes
# ----------------------------------------------------------------------------------------------------------------


def build_ct(
    npz_path: Path, out_dir: Path, n_train: int = 300, positive_fraction: float = 0.38, seed: int = DEFAULT_SEED
) -> dict[str, object]:
    """Write the default CT volume dataset (``volumes/*.nii.gz`` + ``labels.csv``) into ``out_dir``.

    The train subset oversamples the minority class (label 1, adrenal mass): ``positive_fraction`` of the
    ``n_train`` volumes are label 1 (natural rate about 22%), drawn without replacement, so no volume is
    duplicated. All val volumes are shipped with their natural rate. Train volumes identical to a val
    volume (by bytes) are excluded.

    Args:
        npz_path: ``adrenalmnist3d_64_trainval.npz``.
        out_dir: the bundle's ``data`` folder; its generated entries are deleted first.
        n_train: number of train volumes to ship.
        positive_fraction: share of label-1 volumes in the train subset.
        seed: random seed of the subset draw.

    Returns:
        A summary dict (counts per split and class, excluded duplicates).

    Raises:
        ValueError: when ``positive_fraction`` is outside (0, 1) or a class has too few volumes.
    """
    if not 0.0 < positive_fraction < 1.0:
        raise ValueError(f"positive_fraction must be in (0, 1), got {positive_fraction}")
    d = _load_npz(npz_path)
    tx, ty, vx, vy = d["train_images"], d["train_labels"], d["val_images"], d["val_labels"]
    candidates = _not_in(tx, vx)
    n_pos = int(round(n_train * positive_fraction))
    train_idx = stratified_subset(ty, candidates, {0: n_train - n_pos, 1: n_pos}, seed=[seed, 1, 0])
    val_idx = np.arange(len(vy))

    _clear([out_dir / p for p in ("volumes", "labels.csv", "README.md")])
    (out_dir / "volumes").mkdir(parents=True, exist_ok=True)
    affine = np.eye(4)
    rows: list[dict[str, object]] = []
    for split, images, labels, indices in (("train", tx, ty, train_idx), ("val", vx, vy, val_idx)):
        for i in indices:
            label = int(labels[i])
            vid = f"adrenal_{split}_{i:04d}"
            img = nib.Nifti1Image(np.ascontiguousarray(images[i], dtype=np.uint8), affine)
            img.header.set_data_dtype(np.uint8)
            img.header.set_xyzt_units("mm")
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            img.header["descrip"] = f"AdrenalMNIST3D {split} {i} label {label}".encode()
            nib.save(img, out_dir / "volumes" / f"{vid}.nii.gz")
            rows.append({"image": f"volumes/{vid}.nii.gz", "label": label, "patient_id": vid, "split": split})
    _write_csv(out_dir / "labels.csv", rows, ("image", "label", "patient_id", "split"))

    summary = {
        "train": {c: int((ty[train_idx] == k).sum()) for k, c in enumerate(CT_CLASSES)},
        "val": {c: int((vy == k).sum()) for k, c in enumerate(CT_CLASSES)},
        "excluded_train_duplicates_of_val": len(tx) - len(candidates),
        "source_train": {c: int((ty == k).sum()) for k, c in enumerate(CT_CLASSES)},
        "positive_fraction": positive_fraction,
    }
    (out_dir / "README.md").write_text(_ct_readme(summary), encoding="utf-8")
    return summary


# ----------------------------------------------------------------------------------------------------------------
# documentation
# ----------------------------------------------------------------------------------------------------------------


def _counts(summary: dict, split: str) -> str:
    c = summary[split]
    return f"{sum(c.values())} (" + ", ".join(f"{k} {v}" for k, v in c.items()) + ")"


def _xray_readme(s: dict) -> str:
    return f"""# Default data of the `xray` bundle

Real paediatric chest X-rays from **PneumoniaMNIST** (MedMNIST v2, CC BY 4.0; source images Kermany et al.,
Cell 2018), 28x28 8-bit grey, shipped so that a fresh clone trains with no download. Licence and attribution:
[`../docs/data_license.txt`](../docs/data_license.txt). Generated by `{REGEN_COMMAND}` (deterministic).

| folder | content | count |
| --- | --- | --- |
| `train/{{normal,pneumonia}}/*.png` | subset of the MedMNIST **train** split, natural ratio | {_counts(s, "train")} |
| `val/{{normal,pneumonia}}/*.png` | the whole MedMNIST **val** split | {_counts(s, "val")} |
| `dicom_samples/*.dcm` | {len(s["dicom"])} of the val images as DICOM CR files, with `labels.csv` | {len(s["dicom"])} |
| `datalist.csv` | every PNG above: `image,label,patient_id,split` (paths relative to this folder) | |

Labels: 0 = `normal`, 1 = `pneumonia` (class folders are in label order).

- File names carry the source split and index: `pneumoniamnist_train_00123.png` is `train_images[123]` of
  `pneumoniamnist_28_trainval.npz`.
- {s["excluded_train_duplicates_of_val"]} train images whose pixels equal a val image were excluded from the
  train draw, so no image is in both splits.
- `patient_id` is the image id: MedMNIST keeps no patient ids, and the source data has several images per
  child, so the MedMNIST train/val split may put images of one patient on both sides. This cannot be checked.
- DICOM samples: Computed Radiography, Explicit VR Little Endian, 16 bits allocated / 12 stored,
  `MONOCHROME1` with stored value `(255 - p) * 16` for grey value `p`, RescaleSlope/Intercept 1/0, a linear
  window (centre {DICOM_WINDOW_CENTER}, width {DICOM_WINDOW_WIDTH}) that maps back exactly to `p / 255` after
  the MONOCHROME1 inversion, and a nominal PixelSpacing of {DICOM_PIXEL_SPACING_MM} mm (the true spacing is
  unknown). UIDs are generated deterministically from the image id. The header is synthesised; it describes
  no real acquisition.
"""


def _ct_readme(s: dict) -> str:
    n_train = sum(s["train"].values())
    pos = s["train"]["adrenal_mass"]
    src = s["source_train"]
    nat = src["adrenal_mass"] / sum(src.values())
    return f"""# Default data of the `ct_slices` bundle

Real 3D adrenal-gland shape masks from abdominal CT, **AdrenalMNIST3D** (MedMNIST v2, CC BY 4.0; Zhongshan
Hospital), 64x64x64 uint8 with values 0/255, one NIfTI per volume, shipped so that a fresh clone trains with
no download. Licence and attribution: [`../docs/data_license.txt`](../docs/data_license.txt). Generated by
`{REGEN_COMMAND}` (deterministic).

| path | content | count |
| --- | --- | --- |
| `volumes/adrenal_train_NNNN.nii.gz` | subset of the **train** split, label 1 oversampled | {_counts(s, "train")} |
| `volumes/adrenal_val_NNNN.nii.gz` | the whole MedMNIST **val** split, natural class ratio | {_counts(s, "val")} |
| `labels.csv` | `image,label,patient_id,split` (paths relative to this folder) | |

Labels: 0 = `normal`, 1 = `adrenal_mass`.

- `NNNN` is the index in the npz split: `adrenal_train_0042.nii.gz` is `train_images[42]` of
  `adrenalmnist3d_64_trainval.npz`. Volumes are stored as uint8, array axes as in the npz, identity affine
  (1 mm isotropic; MedMNIST resampled the masks and keeps no real geometry).
- **Oversampling**: {pos} of the {n_train} train volumes ({pos / n_train:.0%}) are label 1, against {nat:.0%} in
  the full train split. Volumes were drawn without replacement (no volume appears twice); the training
  metrics are therefore not calibrated to the natural prevalence. Val keeps the natural rate.
- `patient_id` is the volume id: MedMNIST keeps no patient ids, so a split by `patient_id` is a split by
  volume, and volumes of one patient (e.g. left and right gland) may fall on both sides of the MedMNIST
  split. This cannot be checked.
- {s["excluded_train_duplicates_of_val"]} train volumes identical to a val volume were excluded from the draw.
"""


def _license_text(
    dataset: str,
    source: str,
    changes: list[str],
    folder: str,
    script: str = "scripts/data/make_default_datasets.py",
    regenerate: str | None = None,
    what: str = "bundle default data in",
) -> str:
    """The ``data_license.txt`` of data derived from MedMNIST v2: licence, attribution, changes, regeneration.

    Args:
        dataset: the MedMNIST set, e.g. ``"PneumoniaMNIST (28x28)"``.
        source: attribution of the source data (indented continuation lines).
        changes: what the script changed, one bullet each.
        folder: where the data are.
        script: the script that made them.
        regenerate: the "Regenerate" section's lines; default the command of this script.
        what: the title's words before ``folder``.
    """
    bullet = "\n".join(textwrap.fill(c, 110, initial_indent="  - ", subsequent_indent="    ") for c in changes)
    citation = textwrap.fill(MEDMNIST_CITATION, 110, initial_indent="  ", subsequent_indent="  ")
    if regenerate is None:
        regenerate = (
            "  From the repository root, with the MedMNIST npz files in ../shared/data (see that folder's README.md):\n"
            f"    {REGEN_COMMAND}\n"
            f"  The output is deterministic (fixed seed {DEFAULT_SEED}); the script deletes and rewrites the generated"
            " folders."
        )
    title = f"Data licence and attribution: {what} {folder}"
    return f"""{title}
{"=" * len(title)}

Dataset
  {dataset}, from MedMNIST v2:
{citation}

Licence
  {CC_BY}
  The data in {folder} is distributed under the same licence (CC BY 4.0).
  The monai-transfer code is licensed separately (Apache-2.0); that licence does not cover this data.

Source data
  {source}

Changes made by monai-transfer ({script})
{bullet}

Regenerate
{regenerate}

Disclaimer
  For research and software testing only; not for clinical use. Provided "as is", without warranty.
"""


def write_licenses(root: Path, xray: dict | None, ct: dict | None) -> None:
    """Write ``docs/data_license.txt`` of the bundles that were built."""
    if xray is not None:
        text = _license_text(
            "PneumoniaMNIST (28x28)",
            'Kermany D.S., Goldbaum M., et al. "Identifying Medical Diagnoses and Treatable Diseases by Image-Based\n'
            '  Deep Learning". Cell 172(5), 1122-1131 (2018). https://doi.org/10.1016/j.cell.2018.02.010\n'
            "  Chest X-ray images (Mendeley Data, doi:10.17632/rscbjbr9sj), CC BY 4.0.",
            [
                f"subset: {sum(xray['train'].values())} images of the MedMNIST train split (natural class ratio) and"
                f" all {sum(xray['val'].values())} val images; train images identical to a val image removed",
                "format conversion: npz arrays written as 8-bit grey PNG (pixels unchanged) in class folders",
                f"DICOM header synthesised: {len(xray['dicom'])} val images saved as DICOM CR (MONOCHROME1, inverted"
                " and scaled to 12 bits, nominal pixel spacing, generated UIDs); no real acquisition metadata",
                "a datalist.csv listing the PNG files was added",
            ],
            "bundles/xray/data",
        )
        path = root / "bundles" / "xray" / "docs" / "data_license.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if ct is not None:
        n_train = sum(ct["train"].values())
        text = _license_text(
            "AdrenalMNIST3D (64x64x64)",
            "Adrenal gland masks from abdominal CT, Zhongshan Hospital affiliated to Fudan University, as\n"
            "  published in MedMNIST v2 (CC BY 4.0).",
            [
                f"subset: {n_train} volumes of the MedMNIST train split and all {sum(ct['val'].values())} val volumes;"
                " train volumes identical to a val volume removed",
                f"volumes oversampled: label 1 (adrenal mass) is {ct['train']['adrenal_mass']}/{n_train} of the"
                " train subset instead of the natural ~22% (drawn without replacement)",
                "format conversion: npz arrays written as compressed NIfTI-1 (.nii.gz), uint8, identity affine"
                " (1 mm isotropic, nominal), voxel values unchanged",
                "a labels.csv listing the volumes was added",
            ],
            "bundles/ct_slices/data",
        )
        path = root / "bundles" / "ct_slices" / "docs" / "data_license.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="MedMNIST data folder (../shared/data)")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root to write bundles/ into")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--only", choices=("xray", "ct"), default=None, help="build one dataset only")
    parser.add_argument("--xray-train", type=int, default=2000, help="number of X-ray train images")
    parser.add_argument("--xray-dicom", type=int, default=8, help="number of val images also written as DICOM")
    parser.add_argument("--ct-train", type=int, default=300, help="number of CT train volumes")
    parser.add_argument("--ct-positive-fraction", type=float, default=0.38, help="share of label 1 in CT train")
    args = parser.parse_args(argv)

    xray = ct = None
    if args.only in (None, "xray"):
        xray = build_xray(
            args.shared / PNEUMONIA_REL,
            args.root / "bundles" / "xray" / "data",
            args.xray_train,
            args.xray_dicom,
            args.seed,
        )
        print(
            f"xray: train {xray['train']}, val {xray['val']}, dicom {len(xray['dicom'])}, "
            f"excluded duplicates {xray['excluded_train_duplicates_of_val']}"
        )
    if args.only in (None, "ct"):
        ct = build_ct(
            args.shared / ADRENAL_REL,
            args.root / "bundles" / "ct_slices" / "data",
            args.ct_train,
            args.ct_positive_fraction,
            args.seed,
        )
        print(f"ct: train {ct['train']}, val {ct['val']}, excluded duplicates {ct['excluded_train_duplicates_of_val']}")
    write_licenses(args.root, xray, ct)
    return 0


if __name__ == "__main__":
    sys.exit(main())
