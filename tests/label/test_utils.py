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
"""Pure-Python parts of the MONAI Label integration (no MONAI Label needed)."""

from __future__ import annotations

import json

import pytest
import torch
from monai.utils import OptionalImportError

from monai_transfer.label import (
    LABEL_FILE_SUFFIX,
    ClassificationBundleInferTask,
    ClassificationBundleTrainTask,
    find_classification_bundles,
    has_monailabel,
    is_classification_bundle,
    parse_image_label,
    parse_model_names,
    read_class_names,
    resolve_bundles_dir,
    scores_to_result,
    write_image_label,
)
from tests.label._bundle import CLASS_NAMES, make_tiny_bundle

CLASSES = ["normal", "pneumonia"]


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ("", None),
        ("all", None),
        ("xray", ["xray"]),
        (" xray, volume ,xray,", ["xray", "volume"]),
        (["volume", "xray"], ["volume", "xray"]),
    ],
)
def test_parse_model_names(value, expected):
    assert parse_model_names(value) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"label": "pneumonia"}', 1),
        ('{"label": "Normal"}', 0),
        ('{"label": 1}', 1),
        ('{"label": "0"}', 0),
        ('"pneumonia"', 1),
        ("0", 0),
        ("pneumonia\n", 1),
        ("  NORMAL ", 0),
        ('{"label": 1.0}', 1),
    ],
)
def test_parse_image_label_text(text, expected):
    assert parse_image_label(text, CLASSES, is_text=True) == expected


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"label": "covid"}', "unknown class 'covid'"),
        ('{"label": 2}', "index 2 out of range"),
        ('{"class": 1}', "needs a 'label' key"),
        ("", "is empty"),
        ("true", "class name or index"),
        ("[1]", "class name or index"),
    ],
)
def test_parse_image_label_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_image_label(text, CLASSES, is_text=True)


def test_write_and_parse_label_file(tmp_path):
    path = write_image_label(tmp_path / "labels" / "final", "img_007", "Pneumonia", CLASSES)
    assert path == tmp_path / "labels" / "final" / f"img_007{LABEL_FILE_SUFFIX}"
    assert json.loads(path.read_text()) == {"label": "pneumonia"}
    assert parse_image_label(path, CLASSES) == 1
    assert parse_image_label(write_image_label(path.parent, "img_008", 0, CLASSES), CLASSES) == 0
    with pytest.raises(ValueError, match="unknown class 'covid'"):
        write_image_label(path.parent, "img_009", "covid", CLASSES)
    with pytest.raises(ValueError, match="plain file stem"):
        write_image_label(path.parent, "a/b", 0, CLASSES)
    bad = tmp_path / "bad.label.json"
    bad.write_text('{"label": 5}')
    with pytest.raises(ValueError, match=str(bad)):
        parse_image_label(bad, CLASSES)
    with pytest.raises(FileNotFoundError, match="missing.label.json"):
        parse_image_label(tmp_path / "missing.label.json", CLASSES)


def _write_meta(bundle, channel_def, infer=True):
    (bundle / "configs").mkdir(parents=True)
    meta = {"network_data_format": {"inputs": {"image": {}}, "outputs": {"pred": {"channel_def": channel_def}}}}
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    if infer:
        (bundle / "configs" / "inference.json").write_text("{}")


def test_read_class_names_and_discovery(tmp_path):
    root = tmp_path / "bundles"
    _write_meta(root / "volume", {"1": "malignant", "0": "benign", "2": "background"})
    _write_meta(root / "seg", {"0": "background", "2": "liver"})  # indices not 0..n-1
    _write_meta(root / "notinfer", {"0": "a", "1": "b"}, infer=False)
    (root / "empty").mkdir()
    make_tiny_bundle(root, "xray")

    assert read_class_names(root / "volume") == ["benign", "malignant", "background"]
    assert read_class_names(root / "xray") == CLASS_NAMES
    with pytest.raises(ValueError, match="indices must be 0..1"):
        read_class_names(root / "seg")
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        read_class_names(root / "empty")
    assert [is_classification_bundle(root / n) for n in ("volume", "seg", "notinfer", "empty", "xray")] == [
        True,
        False,
        False,
        False,
        True,
    ]

    found = find_classification_bundles(root)
    assert list(found) == ["volume", "xray"]
    assert found["xray"] == str((root / "xray").resolve())
    assert list(find_classification_bundles(root, ["xray", "volume"])) == ["xray", "volume"]
    with pytest.raises(FileNotFoundError, match=r"\['seg'\] not found.*available: \['volume', 'xray'\]"):
        find_classification_bundles(root, ["xray", "seg"])
    with pytest.raises(FileNotFoundError, match="bundles folder not found"):
        find_classification_bundles(tmp_path / "nope")


def test_bundles_named_by_path(tmp_path):
    """``--conf models`` takes bundle folder paths too (training run folders), served under their folder name."""
    root = tmp_path / "bundles"
    make_tiny_bundle(root, "xray")
    run = make_tiny_bundle(tmp_path / "runs", "brain_mri")
    # only paths: bundles_dir is not needed
    assert find_classification_bundles(tmp_path / "nope", [str(run)]) == {"brain_mri": str(run.resolve())}
    mixed = find_classification_bundles(root, ["xray", str(run)])
    assert list(mixed) == ["xray", "brain_mri"] and mixed["brain_mri"] == str(run.resolve())
    _write_meta(tmp_path / "runs" / "broken", {"0": "a"}, infer=False)
    with pytest.raises(FileNotFoundError, match="runs/broken: not a classification bundle"):
        find_classification_bundles(root, [str(tmp_path / "runs" / "broken")])
    other = make_tiny_bundle(tmp_path / "other", "brain_mri")
    with pytest.raises(ValueError, match="two bundles named 'brain_mri'"):
        find_classification_bundles(root, [str(run), str(other)])


def test_read_class_names_errors(tmp_path):
    _write_meta(tmp_path / "a", None)
    with pytest.raises(ValueError, match="has no 'channel_def'"):
        read_class_names(tmp_path / "a")
    _write_meta(tmp_path / "b", {"0": "x", "1": "X"})
    with pytest.raises(ValueError, match="unique"):
        read_class_names(tmp_path / "b")
    _write_meta(tmp_path / "c", {"zero": "x"})
    with pytest.raises(ValueError, match="integer indices"):
        read_class_names(tmp_path / "c")


def test_resolve_bundles_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MONAI_TRANSFER_BUNDLES_DIR", raising=False)
    app = tmp_path / "repo" / "apps" / "monailabel"
    assert resolve_bundles_dir(app) == str((tmp_path / "repo" / "bundles").resolve())
    monkeypatch.setenv("MONAI_TRANSFER_BUNDLES_DIR", str(tmp_path / "env"))
    assert resolve_bundles_dir(app, {}) == str((tmp_path / "env").resolve())
    assert resolve_bundles_dir(app, {"bundles_dir": str(tmp_path / "conf")}) == str((tmp_path / "conf").resolve())


def test_scores_to_result():
    res = scores_to_result(torch.tensor([0.25, 0.75]), CLASSES)
    assert res["label"] == "pneumonia" and res["label_index"] == 1
    assert res["probabilities"] == {"normal": 0.25, "pneumonia": 0.75}
    assert res["score"] == 0.75
    assert res["prediction"] == [
        {"idx": 0, "label": "normal", "score": 0.25},
        {"idx": 1, "label": "pneumonia", "score": 0.75},
    ]
    assert scores_to_result(torch.tensor([[0.9], [0.1]]), CLASSES)["label"] == "normal"
    with pytest.raises(ValueError, match="3 scores"):
        scores_to_result(torch.tensor([0.2, 0.3, 0.5]), CLASSES)


@pytest.mark.skipif(has_monailabel, reason="checks the error raised when MONAI Label is NOT installed")
def test_tasks_need_monailabel(tmp_path):
    bundle = make_tiny_bundle(tmp_path)
    for cls in (ClassificationBundleInferTask, ClassificationBundleTrainTask):
        with pytest.raises(OptionalImportError, match="monailabel"):
            cls(str(bundle), {})


def test_train_split_per_class():
    # the method needs no MONAI Label state: call it unbound (the class cannot be instantiated without MONAI Label)
    split = ClassificationBundleTrainTask._partition_datalist
    data = [{"image": f"{i}.png", "label": lab} for i, lab in enumerate([0, 0, 0, 1, 1, 1, 1, 0])]
    train, val = split(None, data, {"val_split": 0.25})
    assert [d["image"] for d in val] == ["6.png", "7.png"]  # the last item of each class, datastore order kept
    assert [d["image"] for d in train] == ["0.png", "1.png", "2.png", "3.png", "4.png", "5.png"]
    # a class with a single item stays in training; a tiny val_split still validates one item of each other class
    train, val = split(None, data + [{"image": "8.png", "label": 2}], {"val_split": 0.05})
    assert sorted(d["label"] for d in val) == [0, 1] and len(train) == 7
    assert split(None, data, {"val_split": 0}) == (data, [])
    assert split(None, data, {"val_split": -1}) == (data, None)
    with pytest.raises(ValueError, match="val_split"):
        split(None, data, {"val_split": 1.0})
