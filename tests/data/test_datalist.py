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
"""Data lists from folders, CSV and JSON; every invalid input names the file/row; validate_datalist's report."""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from monai_transfer.data import (
    DatalistError,
    datalist_from_csv,
    datalist_from_folder,
    datalist_from_json,
    load_datalist,
    validate_datalist,
    write_png,
)
from monai_transfer.transforms import LoadMedicalImage, MedicalImageLoadError


def _img(path, v=0):
    return write_png(path, np.full((6, 6), v, dtype=np.uint8))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "train"
    for cname, n in (("pneumonia", 3), ("normal", 2)):
        for i in range(n):
            _img(root / cname / f"{i}.png", i)
    return root


def test_folder_labels_sorted(tree):
    items = datalist_from_folder(tree)
    assert [(it["class_name"], it["label"]) for it in items] == [("normal", 0)] * 2 + [("pneumonia", 1)] * 3
    assert all(it["image"].endswith(".png") for it in items)
    fixed = datalist_from_folder(tree, class_names=["pneumonia", "normal"])
    assert {it["class_name"]: it["label"] for it in fixed} == {"pneumonia": 0, "normal": 1}


def test_folder_dicom_without_extension_and_series(tree):
    ct = get_testdata_file("CT_small.dcm", download=False)
    shutil.copy(ct, tree / "normal" / "IM0001")
    (tree / "normal" / "series1").mkdir()
    shutil.copy(ct, tree / "normal" / "series1" / "a.dcm")
    names = sorted(it["image"].rsplit("/", 1)[-1] for it in datalist_from_folder(tree) if it["label"] == 0)
    assert names == ["0.png", "1.png", "IM0001", "series1"]


def test_folder_empty_class_raises(tree):
    (tree / "empty").mkdir()
    with pytest.raises(DatalistError, match="empty.*holds no image"):
        datalist_from_folder(tree)


def test_folder_single_class_raises(tmp_path):
    _img(tmp_path / "only" / "a.png")
    with pytest.raises(DatalistError, match="at least two class folders"):
        datalist_from_folder(tmp_path)


def test_folder_non_image_raises_or_warns(tree, caplog):
    (tree / "normal" / "notes.txt").write_text("x")
    (tree / "normal" / ".DS_Store").write_text("x")  # hidden files are ignored
    with pytest.raises(DatalistError, match="notes.txt"):
        datalist_from_folder(tree)
    with caplog.at_level(logging.WARNING):
        items = datalist_from_folder(tree, on_unknown="warn")
    assert len(items) == 5 and "1 non-image entry" in caplog.text and "notes.txt" in caplog.text


def test_folder_missing_root(tmp_path):
    with pytest.raises(DatalistError, match="nowhere"):
        datalist_from_folder(tmp_path / "nowhere")


def _csv(path, rows, header="image,label,patient_id"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_csv_relative_paths_text_labels_patient(tmp_path):
    _img(tmp_path / "imgs" / "a.png")
    _img(tmp_path / "imgs" / "b.png")
    p = _csv(tmp_path / "list.csv", ["imgs/a.png,sick,P1", "imgs/b.png,healthy,P2"])
    items = datalist_from_csv(p)
    assert items[0]["image"] == str((tmp_path / "imgs" / "a.png").resolve())
    assert [(it["label"], it["class_name"], it["patient_id"]) for it in items] == [
        (1, "sick", "P1"),
        (0, "healthy", "P2"),
    ]
    ints = datalist_from_csv(_csv(tmp_path / "ints.csv", ["imgs/a.png,1,P1", "imgs/b.png,0,P1"]))
    assert [it["label"] for it in ints] == [1, 0] and "class_name" not in ints[0]
    other_root = datalist_from_csv(_csv(tmp_path / "sub.csv", ["a.png,0,P1"]), root=tmp_path / "imgs")
    assert other_root[0]["image"].endswith("imgs/a.png")


def test_csv_unknown_label_names_row(tmp_path):
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    p = _csv(tmp_path / "l.csv", ["a.png,normal,P1", "b.png,cat,P2"])
    with pytest.raises(DatalistError, match=r"l.csv' line 3: unknown label 'cat'"):
        datalist_from_csv(p, class_names=["normal", "pneumonia"])


def test_csv_duplicate_path_names_rows(tmp_path):
    _img(tmp_path / "a.png")
    p = _csv(tmp_path / "l.csv", ["a.png,0,P1", "./a.png,1,P2"])
    with pytest.raises(DatalistError, match=r"line 3: duplicate image .*already at .*line 2"):
        datalist_from_csv(p)


def test_csv_missing_file_names_row(tmp_path):
    _img(tmp_path / "a.png")
    p = _csv(tmp_path / "l.csv", ["a.png,0,P1", "gone.png,1,P2"])
    with pytest.raises(DatalistError, match=r"line 3: image file .*gone.png' does not exist"):
        datalist_from_csv(p)


def test_csv_path_escaping_root(tmp_path):
    _img(tmp_path / "outside.png")
    (tmp_path / "data").mkdir()
    p = _csv(tmp_path / "data" / "l.csv", ["../outside.png,0,P1"])
    with pytest.raises(DatalistError, match=r"line 2: image path '../outside.png' escapes the data root"):
        datalist_from_csv(p)
    assert len(datalist_from_csv(p, allow_outside_root=True)) == 1


def test_csv_missing_column(tmp_path):
    p = _csv(tmp_path / "l.csv", ["a.png"], header="path")
    with pytest.raises(DatalistError, match=r"no column\(s\) \['image', 'label'\]"):
        datalist_from_csv(p)


def test_json_monai_and_plain(tmp_path):
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    monai = tmp_path / "dl.json"
    monai.write_text(json.dumps({"training": [{"image": "a.png", "label": 0}, {"image": "b.png", "label": 1}]}))
    items = datalist_from_json(monai)
    assert [it["label"] for it in items] == [0, 1] and items[1]["image"] == str((tmp_path / "b.png").resolve())
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([{"image": "a.png", "label": "x", "patient_id": 3}]))
    assert datalist_from_json(plain, class_names=["x", "y"]) == [
        {"image": str((tmp_path / "a.png").resolve()), "patient_id": "3", "label": 0, "class_name": "x"}
    ]
    with pytest.raises(DatalistError, match="no 'validation' section"):
        datalist_from_json(monai, key="validation")


def test_load_datalist_dispatch(tree, tmp_path):
    assert len(load_datalist(tree)) == 5
    p = _csv(tmp_path / "l.csv", [f"{tree}/normal/0.png,0,P1"])
    assert load_datalist(p, allow_outside_root=True)[0]["patient_id"] == "P1"
    with pytest.raises(DatalistError, match="must be a folder, a .csv or a .json"):
        load_datalist(_img(tmp_path / "x.png"))


def test_validate_datalist_skip_reports_and_logs(tree, caplog):
    items = datalist_from_folder(tree)
    bad = tree / "normal" / "9.png"
    bad.write_bytes(b"not an image")
    items.append({"image": str(bad), "label": 0})
    with pytest.raises(MedicalImageLoadError, match="9.png"):
        validate_datalist(items)
    with caplog.at_level(logging.WARNING):
        good, report = validate_datalist(items, loader=LoadMedicalImage(), on_error="skip")
    assert len(good) == 5 and [r["image"] for r in report] == [str(bad)]
    assert "unreadable" in report[0]["error"]
    assert "skipped 1 of 6" in caplog.text and str(bad) in caplog.text


# ------------------------------------------------------------------------------ reliability round 2 (issue 19)
def test_csv_not_utf8_names_file_and_line(tmp_path):
    for name in ("a.png", "b.png"):
        _img(tmp_path / name)
    p = tmp_path / "latin1.csv"
    p.write_bytes("image,label\na.png,normal\nb.png,anomalía\n".encode("latin-1"))  # saved by a spreadsheet
    with pytest.raises(DatalistError, match=r"latin1.csv' line 3: not valid UTF-8 \(byte 0xed at column 13\)"):
        datalist_from_csv(p)


def test_csv_nul_byte_in_path_names_file_and_line(tmp_path):
    _img(tmp_path / "a.png")
    p = tmp_path / "nul.csv"
    p.write_bytes(b"image,label\na.png,0\nb\x00.png,1\n")
    with pytest.raises(DatalistError, match=r"nul.csv' line 3: image path 'b\\x00.png' contains a NUL byte"):
        datalist_from_csv(p)
    # a row the csv module refuses (a field over its size limit) names the file and line too
    p.write_bytes(b"image,label\na.png,0\n" + b"x" * 200 + b",1\n")
    limit = csv.field_size_limit(100)
    try:
        with pytest.raises(DatalistError, match=r"nul.csv' line 3: not a valid CSV row \(field larger"):
            datalist_from_csv(p)
    finally:
        csv.field_size_limit(limit)


def test_equal_numeric_labels_are_one_class(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        _img(tmp_path / name)
    p = _csv(tmp_path / "l.csv", ["a.png,0", "b.png,1", "c.png,1.0", "d.png,0.0"], header="image,label")
    assert [it["label"] for it in datalist_from_csv(p)] == [0, 1, 1, 0]
    assert [it["label"] for it in datalist_from_csv(p, class_names=["neg", "pos"])] == [0, 1, 1, 0]
    # JSON numbers 1 and 1.0, mixed with a class name: "1" and "1.0" are still one class
    j = tmp_path / "l.json"
    j.write_text(json.dumps([{"image": "a.png", "label": 1}, {"image": "b.png", "label": 1.0}]))
    assert [it["label"] for it in datalist_from_json(j)] == [1, 1]
    mixed = _csv(tmp_path / "m.csv", ["a.png,1", "b.png,1.0", "c.png,cat", "d.png,+1"], header="image,label")
    assert [(it["label"], it["class_name"]) for it in datalist_from_csv(mixed)] == [
        (0, "1"),
        (0, "1"),
        (1, "cat"),
        (0, "1"),
    ]
    # genuinely different strings stay different classes
    text = _csv(tmp_path / "t.csv", ["a.png,Cat", "b.png,cat", "c.png,cat ", "d.png,1.5"], header="image,label")
    assert [it["class_name"] for it in datalist_from_csv(text)] == ["Cat", "cat", "cat", "1.5"]
    assert len({it["label"] for it in datalist_from_csv(text)}) == 3


# ------------------------------------------------------------------------------------------------- multi-label


def test_csv_multilabel_columns_uncertain_policies(tmp_path):
    for n in ("a", "b", "c"):
        _img(tmp_path / f"{n}.png")
    p = _csv(tmp_path / "ml.csv", ["a.png,1,0,P1", "b.png,0.0,-1,P2", "c.png,0,1,P3"], header="image,Edema,Mass,pid")
    with pytest.raises(
        DatalistError, match=r"ml.csv' line 3: label 'Mass' is uncertain .*uncertain='zeros', 'ones' or 'ignore'"
    ):
        datalist_from_csv(p, label_cols=["Edema", "Mass"])
    zeros = datalist_from_csv(p, label_cols=["Edema", "Mass"], uncertain="zeros", patient_col="pid")
    assert [it["label"] for it in zeros] == [[1, 0], [0, 0], [0, 1]]
    assert zeros[0]["patient_id"] == "P1" and "Edema" not in zeros[0] and "class_name" not in zeros[0]
    ones = datalist_from_csv(p, label_cols=["Edema", "Mass"], uncertain="ones")
    assert [it["label"] for it in ones] == [[1, 0], [0, 1], [0, 1]]
    # no 'label' column but one column per class name: multi-label without label_cols
    assert [it["label"] for it in datalist_from_csv(p, class_names=["Edema", "Mass"], uncertain="zeros")] == [
        [1, 0],
        [0, 0],
        [0, 1],
    ]
    ignored = datalist_from_csv(p, label_cols=["Edema", "Mass"], uncertain="ignore")
    assert [it["label"] for it in ignored] == [[1, 0], [0, -1], [0, 1]]  # -1: left out of the loss
    with pytest.raises(ValueError, match="uncertain must be"):
        datalist_from_csv(p, label_cols=["Edema", "Mass"], uncertain="maybe")
    with pytest.raises(DatalistError, match=r"no label column\(s\) \['Fibrosis'\]"):
        datalist_from_csv(p, label_cols=["Edema", "Fibrosis"])
    bad = _csv(tmp_path / "bad.csv", ["a.png,1,", "b.png,2,0"], header="image,Edema,Mass")
    with pytest.raises(DatalistError, match=r"bad.csv' line 2: empty value for label 'Mass'"):
        datalist_from_csv(bad, label_cols=["Edema", "Mass"])
    bad2 = _csv(tmp_path / "bad2.csv", ["a.png,1,0", "b.png,2,0"], header="image,Edema,Mass")
    with pytest.raises(DatalistError, match=r"bad2.csv' line 3: label 'Edema' must be 0 or 1"):
        datalist_from_csv(bad2, label_cols=["Edema", "Mass"])


def test_json_multilabel_names_and_vectors_never_class_names(tmp_path):
    from monai_transfer.data.datalist import infer_task_mode

    for n in ("a", "b", "c"):
        _img(tmp_path / f"{n}.png")
    names = tmp_path / "names.json"
    names.write_text(json.dumps([{"image": "a.png", "label": ["Mass", "Edema"]}, {"image": "b.png", "label": []}]))
    items = datalist_from_json(names)
    assert [it["label"] for it in items] == [[1, 1], [0, 0]]  # sorted names: Edema, Mass
    assert [it["label"] for it in datalist_from_json(names, class_names=["Mass", "Edema", "Nodule"])] == [
        [1, 1, 0],
        [0, 0, 0],
    ]
    with pytest.raises(DatalistError, match=r"item 0: unknown finding 'Edema'"):
        datalist_from_json(names, class_names=["Mass"])
    vec = tmp_path / "vec.json"
    vec.write_text(json.dumps([{"image": "a.png", "label": [1, 0, 1]}, {"image": "c.png", "label": [0, -1, 0]}]))
    items = datalist_from_json(vec, class_names=["x", "y", "z"], uncertain="ones")
    assert [it["label"] for it in items] == [[1, 0, 1], [0, 1, 0]]
    assert all("class_name" not in it for it in items)  # '[1, 0, 1]' never becomes a class
    assert infer_task_mode(items) == "multilabel"
    with pytest.raises(DatalistError, match=r"item 1: label 'class_1' is uncertain"):
        datalist_from_json(vec)
    with pytest.raises(DatalistError, match=r"item 0: label vector \[1, 0, 1\] has 3 values"):
        datalist_from_json(vec, class_names=["x", "y"], uncertain="zeros")
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([{"image": "a.png", "label": [1, 0]}, {"image": "b.png", "label": 1}]))
    with pytest.raises(DatalistError, match="item 1: label 1 is not a list"):
        datalist_from_json(mixed)
    # a CSV cell holding a vector is refused instead of becoming a class named '[1, 0, 1]'
    p = _csv(tmp_path / "v.csv", ['a.png,"[1, 0, 1]",P1', "b.png,0,P2"])
    with pytest.raises(DatalistError, match=r"v.csv' line 2: label '\[1, 0, 1\]' looks like a multi-label vector"):
        datalist_from_csv(p)


def test_infer_task_mode():
    from monai_transfer.data.datalist import infer_task_mode

    assert infer_task_mode([{"label": 0}, {"label": 1}]) == "binary"
    assert infer_task_mode([{"label": 0}, {"label": 2}, {"label": 1}]) == "multiclass"
    assert infer_task_mode([{"label": 0}, {"label": 1}], num_classes=3) == "multiclass"
    assert infer_task_mode([{"label": [0, 1]}, {"label": np.array([1, 1])}]) == "multilabel"
    with pytest.raises(DatalistError, match="mix vectors"):
        infer_task_mode([{"label": [0, 1]}, {"label": 1}])
    with pytest.raises(DatalistError, match="no item has a 'label'"):
        infer_task_mode([{"image": "x.png"}])


def test_bundle_datalists_ignore_uncertain_train_only(tmp_path):
    from monai_transfer.data import bundle_datalists

    for n in ("a", "b", "c", "d"):
        _img(tmp_path / f"{n}.png")
    rows = ["a.png,train,1,-1", "b.png,train,0,1", "c.png,val,1,0", "d.png,val,0,1"]
    p = _csv(tmp_path / "ml.csv", rows, header="image,split,Edema,Mass")
    out = bundle_datalists(p, class_names=["Edema", "Mass"], uncertain="ignore")
    assert [x["label"] for x in out["train"]] == [[1, -1], [0, 1]] and [x["label"] for x in out["val"]] == [
        [1, 0],
        [0, 1],
    ]
    p2 = _csv(tmp_path / "ml2.csv", [*rows[:2], "c.png,val,1,-1", rows[3]], header="image,split,Edema,Mass")
    with pytest.raises(DatalistError, match=r"1 'val' item\(s\) have uncertain labels .*c.png \[1, -1\]"):
        bundle_datalists(p2, class_names=["Edema", "Mass"], uncertain="ignore")
    # unsplit multi-label lists are split without stratification (and max_items works on label vectors)
    many = [f"{n}.png,{int(i % 2)},{int(i % 3 == 0)}" for i, n in enumerate("abcd")]
    split = bundle_datalists(_csv(tmp_path / "ml3.csv", many, header="image,Edema,Mass"), class_names=["Edema", "Mass"],
                             val_fraction=0.5, max_items=2, duplicates="off")  # identical test images  # fmt: skip
    assert len(split["train"]) == 2 and len(split["val"]) == 2


def test_list_image_files_flat_recursive_hidden_and_dangling(tmp_path):
    """The one listing of an unlabelled image folder: sorted, hidden entries skipped, broken links kept."""
    from monai_transfer.data.datalist import list_image_files

    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ("b.png", "a.dcm", "notes.txt", ".x.png", "sub/c.nii.gz", ".hidden/d.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "ghost.png").symlink_to(tmp_path / "missing.png")
    flat = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path, recursive=False)]
    assert flat == ["a.dcm", "b.png", "ghost.png"]
    deep = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path, (".nii.gz", ".png"))]
    assert deep == ["b.png", "ghost.png", "sub/c.nii.gz"]


def test_inference_datalist_recurses_and_refuses_an_empty_or_missing_folder(tmp_path):
    """The bundles' inference ``datalist``: sub-folders searched; nothing to predict is an error naming the folder."""
    from monai_transfer.data.datalist import inference_datalist

    (tmp_path / "site_a").mkdir()
    (tmp_path / "site_a" / "b.png").write_bytes(b"x")
    (tmp_path / "a.dcm").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    items = inference_datalist(tmp_path)
    assert [Path(d["image"]).relative_to(tmp_path).as_posix() for d in items] == ["a.dcm", "site_a/b.png"]
    assert inference_datalist(tmp_path, [".png"]) == [{"image": str(tmp_path / "site_a" / "b.png")}]
    with pytest.raises(DatalistError, match=rf"{re.escape(str(tmp_path))} holds no image file \(\.nii\.gz"):
        inference_datalist(tmp_path, [".nii.gz"])
    with pytest.raises(DatalistError, match="does not exist or is not a folder"):
        inference_datalist(tmp_path / "missing")
