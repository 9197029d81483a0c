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
"""Checks of the default data shipped in ``bundles/*/data`` (made by ``scripts/data/make_default_datasets.py``)."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from tests.utils import ADRENAL_NPZ, PNEUMONIA_NPZ, REPO_ROOT, load_script, read_csv, requires_shared_data

__all__: list[str] = []

XRAY_DATA = REPO_ROOT / "bundles" / "xray" / "data"
CT_DATA = REPO_ROOT / "bundles" / "ct_slices" / "data"
SCRIPT = REPO_ROOT / "scripts" / "data" / "make_default_datasets.py"
# documented counts (bundles/*/data/README.md)
XRAY_COUNTS = {"train": {"normal": 518, "pneumonia": 1482}, "val": {"normal": 135, "pneumonia": 389}}
CT_COUNTS = {"train": {0: 186, 1: 114}, "val": {0: 76, 1: 22}}
N_DICOM = 8
PNG_NAME = re.compile(r"^pneumoniamnist_(train|val)_(\d{5})\.png$")
NII_NAME = re.compile(r"^adrenal_(train|val)_(\d{4})\.nii\.gz$")


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L", f"{path}: mode {im.mode}"
        return np.asarray(im)


def _npz_rows(path: Path, key: str, rows: list[int]) -> np.ndarray:
    """Rows of one array of an npz, streamed in index order (the 3D train array is 311 MB uncompressed)."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        assert not fortran
        row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        start = f.tell()
        out = {}
        for r in sorted(set(rows)):
            f.seek(start + r * row_bytes)
            out[r] = np.frombuffer(f.read(row_bytes), dtype=dtype).reshape(shape[1:])
    return np.stack([out[r] for r in rows])


def _npz_labels(path: Path, split: str) -> np.ndarray:
    with np.load(path) as z:
        return z[f"{split}_labels"].reshape(-1).astype(np.int64)


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def xray_rows() -> list[dict[str, str]]:
    return read_csv(XRAY_DATA / "datalist.csv")


@pytest.fixture(scope="module")
def ct_rows() -> list[dict[str, str]]:
    return read_csv(CT_DATA / "labels.csv")


# ---------------------------------------------------------------------------------------------------------------
# X-ray, no shared data needed
# ---------------------------------------------------------------------------------------------------------------


def test_xray_pngs_counts_shape_and_split_disjoint():
    pixels: dict[str, set[bytes]] = {}
    for split, classes in XRAY_COUNTS.items():
        assert sorted(p.name for p in (XRAY_DATA / split).iterdir()) == sorted(classes)
        pixels[split] = set()
        for cls, n in classes.items():
            files = sorted((XRAY_DATA / split / cls).iterdir())
            assert len(files) == n, f"{split}/{cls}"
            for p in files:
                m = PNG_NAME.match(p.name)
                assert m is not None and m.group(1) == split, p
                a = _png(p)
                assert a.shape == (28, 28) and a.dtype == np.uint8, p
                pixels[split].add(a.tobytes())
    # every train image distinct from every val image (the source has 8 duplicates; they were excluded)
    assert not pixels["train"] & pixels["val"]
    assert len(pixels["train"]) == sum(XRAY_COUNTS["train"].values())


def test_xray_datalist_matches_files(xray_rows):
    on_disk = {str(p.relative_to(XRAY_DATA)) for p in XRAY_DATA.glob("*/*/*.png")}
    assert {r["image"] for r in xray_rows} == on_disk
    assert len(xray_rows) == len(on_disk) == 2524
    assert list(xray_rows[0]) == ["image", "label", "patient_id", "split"]
    for r in xray_rows:
        split, cls, name = r["image"].split("/")
        assert r["split"] == split
        assert int(r["label"]) == ("normal", "pneumonia").index(cls)
        assert r["patient_id"] == name[: -len(".png")]


def test_xray_dicom_samples_match_pngs():
    files = sorted((XRAY_DATA / "dicom_samples").glob("*.dcm"))
    assert len(files) == N_DICOM
    labels = {r["image"]: int(r["label"]) for r in read_csv(XRAY_DATA / "dicom_samples" / "labels.csv")}
    assert set(labels) == {p.name for p in files}
    assert sorted(labels.values()) == [0] * (N_DICOM // 2) + [1] * (N_DICOM // 2)
    uids = set()
    for p in files:
        ds = pydicom.dcmread(p)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.Modality == "CR" and ds.PhotometricInterpretation == "MONOCHROME1"
        assert (ds.BitsAllocated, ds.BitsStored, ds.Rows, ds.Columns) == (16, 12, 28, 28)
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)
        assert float(ds.WindowWidth) > 0 and len(ds.PixelSpacing) == 2
        assert ds.PatientID == p.stem
        uids |= {ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID}
        cls = ("normal", "pneumonia")[labels[p.name]]
        png = _png(XRAY_DATA / "val" / cls / f"{p.stem}.png")
        stored = ds.pixel_array
        assert stored.dtype == np.uint16
        np.testing.assert_array_equal(255 - stored // 16, png)  # MONOCHROME1: inverted, 8 -> 12 bits
        # the linear VOI window followed by the MONOCHROME1 inversion gives back p / 255
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)
        shown = 1.0 - np.clip((stored - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)
        np.testing.assert_allclose(shown, png / 255.0, atol=1e-9)
    assert len(uids) == 3 * N_DICOM


# ---------------------------------------------------------------------------------------------------------------
# CT volumes, no shared data needed
# ---------------------------------------------------------------------------------------------------------------


def test_ct_labels_match_files_and_splits_disjoint(ct_rows):
    files = {f"volumes/{p.name}" for p in (CT_DATA / "volumes").iterdir()}
    assert {r["image"] for r in ct_rows} == files
    assert list(ct_rows[0]) == ["image", "label", "patient_id", "split"]
    ids: dict[str, set[str]] = {"train": set(), "val": set()}
    for r in ct_rows:
        m = NII_NAME.match(r["image"].split("/")[1])
        assert m is not None and m.group(1) == r["split"], r
        assert r["patient_id"] == f"adrenal_{r['split']}_{m.group(2)}"
        ids[r["split"]].add(m.group(2) + r["split"])
    for split, counts in CT_COUNTS.items():
        labels = [int(r["label"]) for r in ct_rows if r["split"] == split]
        assert {c: labels.count(c) for c in (0, 1)} == counts
    pos = CT_COUNTS["train"][1] / sum(CT_COUNTS["train"].values())
    assert 0.35 <= pos <= 0.40  # minority class oversampled as documented
    assert len({r["patient_id"] for r in ct_rows}) == len(ct_rows)  # one volume per id, no id in two splits


def test_ct_volumes_are_64_cubed_uint8_masks(ct_rows):
    digests: dict[str, set[str]] = {"train": set(), "val": set()}
    for r in ct_rows:
        img = nib.load(CT_DATA / r["image"])
        assert img.shape == (64, 64, 64), r["image"]
        assert img.get_data_dtype() == np.uint8
        np.testing.assert_allclose(img.affine, np.eye(4))
        a = np.asanyarray(img.dataobj)
        assert a.dtype == np.uint8 and set(np.unique(a)) <= {0, 255} and a.any(), r["image"]
        digests[r["split"]].add(hashlib.sha256(a.tobytes()).hexdigest())
    assert not digests["train"] & digests["val"]


def test_licences_and_readmes():
    for bundle, source in (("xray", "Kermany"), ("ct_slices", "Zhongshan")):
        text = (REPO_ROOT / "bundles" / bundle / "docs" / "data_license.txt").read_text(encoding="utf-8")
        for needle in (
            "MedMNIST v2",
            "Scientific Data 10, 41",
            "CC BY 4.0",
            "https://creativecommons.org/licenses/by/4.0/",
            source,
            "python scripts/data/make_default_datasets.py",
        ):
            assert needle in text, f"{bundle}: {needle!r} missing"
        assert "data_license.txt" in (REPO_ROOT / "bundles" / bundle / "data" / "README.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------
# against the MedMNIST sources in ../shared
# ---------------------------------------------------------------------------------------------------------------


@requires_shared_data(PNEUMONIA_NPZ)
def test_xray_files_equal_npz_source(xray_rows):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        rows = [r for r in xray_rows if r["split"] == split]
        source_labels = _npz_labels(PNEUMONIA_NPZ, split)
        for r in rows:  # every label
            assert int(r["label"]) == source_labels[int(r["patient_id"].rsplit("_", 1)[1])], r
        sample = [rows[i] for i in rng.choice(len(rows), 40, replace=False)]
        idx = [int(r["patient_id"].rsplit("_", 1)[1]) for r in sample]
        source = _npz_rows(PNEUMONIA_NPZ, f"{split}_images", idx)
        for r, src in zip(sample, source):
            np.testing.assert_array_equal(_png(XRAY_DATA / r["image"]), src, err_msg=r["image"])


@requires_shared_data(ADRENAL_NPZ)
def test_ct_volumes_equal_npz_source(ct_rows):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        rows = [r for r in ct_rows if r["split"] == split]
        source_labels = _npz_labels(ADRENAL_NPZ, split)
        for r in rows:
            assert int(r["label"]) == source_labels[int(r["patient_id"].rsplit("_", 1)[1])], r
        sample = [rows[i] for i in rng.choice(len(rows), 10, replace=False)]
        idx = [int(r["patient_id"].rsplit("_", 1)[1]) for r in sample]
        source = _npz_rows(ADRENAL_NPZ, f"{split}_images", idx)
        for r, src in zip(sample, source):
            np.testing.assert_array_equal(
                np.asanyarray(nib.load(CT_DATA / r["image"]).dataobj), src, err_msg=r["image"]
            )


@requires_shared_data(ADRENAL_NPZ)
@requires_shared_data(PNEUMONIA_NPZ)
def test_script_reproduces_shipped_files_and_is_idempotent(tmp_path):
    mod = load_script(SCRIPT)
    args = [
        "--shared",
        str(PNEUMONIA_NPZ.parents[1]),
        "--root",
        str(tmp_path),
        "--xray-train",
        "30",
        "--ct-train",
        "10",
    ]
    assert mod.main(args) == 0
    first = _tree_hashes(tmp_path)
    (tmp_path / "bundles" / "xray" / "data" / "train" / "stale.png").write_bytes(b"x")
    assert mod.main(args) == 0
    assert _tree_hashes(tmp_path) == first  # reruns rewrite the folders: same bytes, stale file gone
    # val files and DICOM samples do not depend on the train size: they must equal the shipped bytes
    shipped = {
        **{f"xray/{k}": v for k, v in _tree_hashes(XRAY_DATA).items()},
        **{f"ct_slices/{k}": v for k, v in _tree_hashes(CT_DATA).items()},
    }
    regen = {k.replace("bundles/", "").replace("/data/", "/"): v for k, v in first.items() if "/data/" in k}
    shared = [k for k in regen if "/val/" in k or "_val_" in k]
    assert len(shared) == 524 + N_DICOM + 98
    assert all(regen[k] == shipped[k] for k in shared)
    assert len([k for k in regen if "/train/" in k]) == 30
    assert len([k for k in regen if "adrenal_train_" in k]) == 10
