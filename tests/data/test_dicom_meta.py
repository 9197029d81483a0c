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
"""Patient/study/series ids from real DICOM headers (pydicom's test files) and patient-disjoint splits."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from monai_transfer.data import bundle_datalists, datalist_from_csv, datalist_from_folder, datalist_from_json
from monai_transfer.data.dicom_meta import add_dicom_ids, read_dicom_ids, summarize_dicom_ids
from monai_transfer.engines.workflow import describe_datalists


def _testfile(name: str) -> Path:
    p = get_testdata_file(name, download=False)
    if p is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return Path(p)


# pydicom's own files and the PatientID in their headers
MR, MR_RLE, CT, NO_PID = "MR_small.dcm", "MR_small_RLE.dcm", "CT_small.dcm", "image_dfl.dcm"


def test_read_dicom_ids_from_real_headers(tmp_path):
    mr = read_dicom_ids(_testfile(MR))
    ds = pydicom.dcmread(_testfile(MR), stop_before_pixels=True)
    assert mr == {"patient_id": "4MR1", "study_uid": ds.StudyInstanceUID, "series_uid": ds.SeriesInstanceUID}
    assert read_dicom_ids(_testfile(CT))["patient_id"] == "1CT1"
    assert read_dicom_ids(_testfile(NO_PID))["patient_id"] == ""  # the header has an empty PatientID
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "x.png")
    assert read_dicom_ids(tmp_path / "x.png") is None
    (tmp_path / "series").mkdir()
    shutil.copy(_testfile(CT), tmp_path / "series" / "1.dcm")
    assert read_dicom_ids(tmp_path / "series")["patient_id"] == "1CT1"  # a series folder: its first file


def _dicom_folder(root: Path) -> None:
    """normal/: MR_small (4MR1), CT_small (1CT1), a PNG; abnormal/: the RLE copy of MR_small (4MR1) and image_dfl
    (empty PatientID)."""
    for c in ("normal", "abnormal"):
        (root / c).mkdir(parents=True)
    shutil.copy(_testfile(MR), root / "normal" / "mr.dcm")
    shutil.copy(_testfile(CT), root / "normal" / "ct.dcm")
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(root / "normal" / "photo.png")
    shutil.copy(_testfile(MR_RLE), root / "abnormal" / "mr_rle.dcm")
    shutil.copy(_testfile(NO_PID), root / "abnormal" / "nopid.dcm")


def test_folder_datalist_fills_ids_and_falls_back_to_the_file(tmp_path):
    _dicom_folder(tmp_path)
    items = {Path(x["image"]).name: x for x in datalist_from_folder(tmp_path)}
    assert items["mr.dcm"]["patient_id"] == items["mr_rle.dcm"]["patient_id"] == "4MR1"
    assert items["mr.dcm"]["patient_id_source"] == "dicom"
    assert items["ct.dcm"]["patient_id"] == "1CT1" and items["ct.dcm"]["series_uid"]
    assert items["nopid.dcm"]["patient_id"] == items["nopid.dcm"]["image"]  # its own id
    assert items["nopid.dcm"]["patient_id_source"] == "file"
    assert items["photo.png"]["patient_id_source"] == "not_dicom" and items["photo.png"]["study_uid"] == ""
    # every item has the same keys, so batches collate
    assert len({tuple(sorted(x)) for x in items.values()}) == 1
    summary = summarize_dicom_ids(list(items.values()))
    assert summary == {
        "items": 5,
        "patients": 4,
        "studies": summary["studies"],
        "series": summary["series"],
        "patient_id_from_dicom": 3,
        "patient_id_from_list": 0,
        "patient_id_fallback_to_file": 1,
        "unreadable_header": 0,
        "not_dicom": 1,
    }
    assert "patient_id" not in datalist_from_folder(tmp_path, dicom_ids=False)[0]


def test_one_patient_never_in_two_splits(tmp_path):
    _dicom_folder(tmp_path)
    for seed in range(6):
        dl = bundle_datalists(tmp_path, val_fraction=0.5, seed=seed, duplicates="off")
        side = {Path(x["image"]).name: s for s in dl for x in dl[s]}
        assert side["mr.dcm"] == side["mr_rle.dcm"], seed  # two films of patient 4MR1
        assert dl.audit["dicom"]["patient_id_fallback_to_file"] == 1
        assert describe_datalists(dl)["audit"]["dicom"]["patients"] == 4


def test_csv_patient_column_wins_and_dicom_fills_the_rest(tmp_path):
    _dicom_folder(tmp_path / "d")
    with open(tmp_path / "l.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "patient_id"])
        w.writerow(["d/normal/mr.dcm", "0", "hospital-7"])
        w.writerow(["d/normal/ct.dcm", "0", ""])
        w.writerow(["d/abnormal/nopid.dcm", "1", "hospital-9"])
    with pytest.raises(Exception, match="line 3: empty 'patient_id'"):
        datalist_from_csv(tmp_path / "l.csv")
    rows = (tmp_path / "l.csv").read_text().splitlines()
    (tmp_path / "l2.csv").write_text(
        "\n".join([rows[0].replace(",patient_id", "")] + [r.rsplit(",", 1)[0] for r in rows[1:]])
    )
    items = datalist_from_csv(tmp_path / "l2.csv")
    assert [x["patient_id"] for x in items] == ["4MR1", "1CT1", items[2]["image"]]
    (tmp_path / "l.json").write_text(
        json.dumps([{"image": "d/normal/ct.dcm", "label": 0}, {"image": "d/normal/mr.dcm", "label": 1}])
    )
    assert [x["patient_id"] for x in datalist_from_json(tmp_path / "l.json")] == ["1CT1", "4MR1"]
    listed = add_dicom_ids([{"image": str(tmp_path / "d/normal/mr.dcm"), "patient_id": "hospital-7"}])[0]
    assert listed["patient_id"] == "hospital-7" and listed["patient_id_source"] == "list" and listed["study_uid"]


def test_pixel_identical_dicoms_in_other_encodings_are_near_duplicates(tmp_path):
    """MR_small in explicit little endian and in RLE: different bytes, same pixels, so one cluster."""
    from monai_transfer.data.duplicates import find_duplicates

    _dicom_folder(tmp_path)
    paths = [tmp_path / "normal" / "mr.dcm", tmp_path / "abnormal" / "mr_rle.dcm", tmp_path / "normal" / "ct.dcm"]
    res = find_duplicates(paths, cache_dir=None)
    assert res.hashing.sha256[0] != res.hashing.sha256[1]
    assert res.clusters == [[0, 1]] and int(res.pairs[0, 2]) == 0


def test_unreadable_header_is_its_own_group_and_logged(tmp_path, monkeypatch, caplog):
    import monai_transfer.data.dicom_meta as dm

    _dicom_folder(tmp_path)
    real = dm.read_dicom_ids

    def flaky(path):
        if Path(path).name == "ct.dcm":
            raise ValueError(f"cannot read the DICOM header of '{path}': test")
        return real(path)

    monkeypatch.setattr(dm, "read_dicom_ids", flaky)
    items = {Path(x["image"]).name: x for x in datalist_from_folder(tmp_path)}
    assert items["ct.dcm"]["patient_id_source"] == "unreadable_header"
    assert items["ct.dcm"]["patient_id"] == items["ct.dcm"]["image"]
    assert "ct.dcm': test; it is a group of its own" in caplog.text
    assert summarize_dicom_ids(list(items.values()))["unreadable_header"] == 1
