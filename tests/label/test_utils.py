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
    bundle_task_mode,
    find_classification_bundles,
    has_monailabel,
    is_classification_bundle,
    parse_image_label,
    parse_image_labels,
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
        ("[1]", "is a multi-label label"),
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
    assert "threshold" not in res


def test_scores_to_result_applies_a_binary_threshold():
    """A binary bundle's label follows its stored threshold (``p_1 >= t``), like inference.json, not the arg-max."""
    low = scores_to_result(torch.tensor([0.625, 0.375]), CLASSES, "binary", threshold=0.25)
    assert (low["label"], low["label_index"], low["score"], low["threshold"]) == ("pneumonia", 1, 0.375, 0.25)
    assert low["probabilities"] == {"normal": 0.625, "pneumonia": 0.375}
    high = scores_to_result(torch.tensor([0.25, 0.75]), CLASSES, "binary", threshold=0.875)
    assert (high["label"], high["label_index"], high["score"], high["threshold"]) == ("normal", 0, 0.25, 0.875)
    assert scores_to_result(torch.tensor([0.375, 0.625]), CLASSES, "binary", threshold=0.625)["label"] == "pneumonia"
    with pytest.raises(ValueError, match="2 classes"):
        scores_to_result(torch.tensor([0.2, 0.3, 0.5]), ["a", "b", "c"], "multiclass", threshold=0.5)


def test_scores_to_result_multilabel_at_per_label_thresholds():
    res = scores_to_result(torch.tensor([0.6, 0.3, 0.5]), FINDINGS, "multilabel", [0.5, 0.2, 0.7])
    assert res["mode"] == "multilabel" and res["finding_indices"] == [0, 1]
    assert res["findings"] == FINDINGS[:2] and res["label"] == ";".join(FINDINGS[:2])
    assert [p["positive"] for p in res["prediction"]] == [True, True, False]
    assert res["thresholds"] == dict(zip(FINDINGS, [0.5, 0.2, 0.7]))
    # 0.5 per label by default, p >= t inclusive (the rule of monai_transfer.utils.task.apply_threshold)
    assert scores_to_result(torch.tensor([0.5, 0.49, 0.9]), FINDINGS, "multilabel")["finding_indices"] == [0, 2]
    with pytest.raises(ValueError, match="2 thresholds given for the 3 labels"):
        scores_to_result(torch.tensor([0.5, 0.5, 0.5]), FINDINGS, "multilabel", [0.5, 0.5])


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


FINDINGS = ["Atelectasis", "Effusion", "Pneumothorax"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"label": ["effusion", "Pneumothorax"]}', [0, 1, 1]),
        ('{"label": []}', [0, 0, 0]),
        ('["ATELECTASIS"]', [1, 0, 0]),
        ('{"label": [1, 0, 1.0]}', [1, 0, 1]),
        ('{"label": {"atelectasis": 0, "Effusion": 1, "pneumothorax": 0}}', [0, 1, 0]),
        ('{"Atelectasis": 1, "Effusion": 1, "Pneumothorax": 0}', [1, 1, 0]),
    ],
)
def test_parse_image_labels_text(text, expected):
    assert parse_image_labels(text, FINDINGS, is_text=True) == expected


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"label": "Effusion"}', r"multi-label \(mode 'multilabel', findings .*got 'Effusion'"),
        ('{"label": 1}', r"mode 'multilabel'.*e\.g\. \{\"label\": \[\"Atelectasis\"\]\}"),
        ('{"label": ["Effusion", "Edema"]}', "unknown finding 'Edema'"),
        ('{"label": [1, 0]}', "2 0/1 values"),
        ('{"label": [1, 0, 2]}', "finding names or 0/1 values"),
        ('{"label": ["Effusion", 1, 0]}', "not a mix"),
        ('{"label": {"Effusion": 1}}', r"missing \['Atelectasis', 'Pneumothorax'\]"),
        ("", "is empty"),
    ],
)
def test_parse_image_labels_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_image_labels(text, FINDINGS, is_text=True)


def test_single_label_bundle_refuses_finding_lists(tmp_path):
    with pytest.raises(ValueError, match=r"multi-label label .*one class per image .*mode is 'multilabel'"):
        parse_image_label('{"label": ["pneumonia"]}', CLASSES, is_text=True)
    path = write_image_label(tmp_path, "cxr_1", ["pneumothorax", "effusion"], FINDINGS)
    assert json.loads(path.read_text()) == {"label": ["Effusion", "Pneumothorax"]}  # class order, bundle spelling
    assert parse_image_labels(path, FINDINGS) == [0, 1, 1]
    assert json.loads(write_image_label(tmp_path, "cxr_2", [0, 0, 0], FINDINGS).read_text()) == {"label": []}
    with pytest.raises(ValueError, match="unknown finding 'Edema'"):
        write_image_label(tmp_path, "cxr_3", ["Edema"], FINDINGS)


def test_bundle_task_mode():
    from monai_transfer.utils.io import read_json_file
    from tests.utils import REPO_ROOT

    for mode in ("binary", "multiclass", "multilabel"):
        assert bundle_task_mode(mode, FINDINGS) == mode  # a run folder's configs fix it
    template = read_json_file(REPO_ROOT / "bundles" / "xray" / "configs" / "train.json")["mode"]
    assert template.startswith("$")  # derived from the data: served by class count, as inference.json does
    assert bundle_task_mode(template, CLASSES) == "binary" and bundle_task_mode(None, FINDINGS) == "multiclass"
    with pytest.raises(ValueError, match="'multi-label'"):
        bundle_task_mode("multi-label", FINDINGS)


class _Datastore:
    """The one method of MONAI Label's ``Datastore`` the train task reads."""

    def __init__(self, items):
        self.items = items

    def datalist(self):
        return self.items


def _train_task(class_names, mode):
    """A ``ClassificationBundleTrainTask`` without MONAI Label: the attributes its datalist methods read."""
    task = ClassificationBundleTrainTask.__new__(ClassificationBundleTrainTask)
    task.class_names, task.bundle_config, task.bundle_path = class_names, {"mode": mode}, "/bundles/cxr14"
    return task


def test_train_task_reads_finding_lists_for_a_multilabel_bundle(tmp_path):
    labels = tmp_path / "labels" / "final"
    ds = _Datastore(
        [
            {"image": "a.png", "label": str(write_image_label(labels, "a", ["Effusion"], FINDINGS))},
            {"image": "b.png", "label": str(write_image_label(labels, "b", [], FINDINGS))},
            {"image": "c.png", "label": str(write_image_label(labels, "c", [1, 0, 1], FINDINGS))},
            {"image": "d.png", "label": ""},  # not labelled yet
        ]
    )
    task = _train_task(FINDINGS, "multilabel")
    assert task.train_mode() == "multilabel"
    assert task._fetch_datalist({}, ds) == [
        {"image": "a.png", "label": [0, 1, 0]},
        {"image": "b.png", "label": [0, 0, 0]},
        {"image": "c.png", "label": [1, 0, 1]},
    ]
    # a one-class label file in a multi-label datastore is refused, naming the bundle and its mode
    ds.items.append({"image": "e.png", "label": str(write_image_label(labels, "e", "Effusion", FINDINGS))})
    with pytest.raises(ValueError, match=r"bundle /bundles/cxr14 \(mode 'multilabel'\): label file .*e\.label\.json"):
        task._fetch_datalist({}, ds)
    # and a finding list in a one-class-per-image bundle (the template's mode is an expression: binary by class count)
    binary = _train_task(CLASSES, "$monai_transfer.data.datalist.infer_task_mode(@datalists['train'])")
    ds = _Datastore([{"image": "a.png", "label": str(write_image_label(labels, "f", ["Effusion"], FINDINGS))}])
    with pytest.raises(ValueError, match=r"\(mode 'binary'\): .* is a multi-label label"):
        binary._fetch_datalist({}, ds)
    with pytest.raises(ValueError, match=r'holding \{"label": \["Atelectasis"\]\} \(the findings present'):
        task._fetch_datalist({}, _Datastore([{"image": "a.png", "label": ""}]))


def test_train_split_multilabel_keeps_findings_on_both_sides(caplog):
    from monai_transfer.label.tasks import multilabel_validation_indices

    split = ClassificationBundleTrainTask._partition_datalist
    # finding 0 common, finding 1 on items 1 and 2 only, finding 2 on item 4 only, last items unlabelled
    y = [[1, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0], [1, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0]]
    data = [{"image": f"{i}.png", "label": lab} for i, lab in enumerate(y)]
    with caplog.at_level("WARNING"):
        train, val = split(_train_task(FINDINGS, "multilabel"), data, {"val_split": 0.3})
    assert [d["image"] for d in val] == ["2.png", "8.png", "9.png"]  # finding 1's last positive, then the list's end
    assert len(train) == 7 and {d["image"] for d in train} | {d["image"] for d in val} == {d["image"] for d in data}
    for j in (0, 1):
        assert any(d["label"][j] for d in train) and any(d["label"][j] for d in val)
    assert "finding 'Pneumothorax' has no positive item in the validation split (1 in all)" in caplog.text
    assert multilabel_validation_indices(y, 0.3) == [2, 8, 9]  # deterministic; unbound split without names too
    assert split(None, data, {"val_split": 0.3})[1] == val
    assert split(None, data, {"val_split": 0.01})[1] == [data[2]]  # at least one item validates
    assert split(None, data, {"val_split": 0}) == (data, [])
    assert split(None, data, {"val_split": -1}) == (data, None)
