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
"""Tests of ``monai_transfer.utils.task`` (here, not in ``tests/utils/``: ``tests/utils.py`` is the helper module),
and that every path that needs the task mode (data lists, MONAI Label, cross-validation, evaluation, the prediction
writer) derives it the same way."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_transfer.utils.task import TASK_MODES, Task, TaskMode, apply_threshold, as_task, derive_task, look_up_mode

NAMES2, NAMES3 = ["normal", "pneumonia"], ["a", "b", "c"]


def test_mode_values_stay_plain_strings():
    assert TASK_MODES == ("binary", "multiclass", "multilabel")
    assert TaskMode.BINARY == "binary" and "multilabel" == TaskMode.MULTILABEL
    assert json.dumps({"mode": TaskMode.MULTICLASS}) == '{"mode": "multiclass"}'
    assert f"{TaskMode.BINARY}" == "binary" and f"{TaskMode.BINARY!r}" == "'binary'"  # messages read as before
    for m in TASK_MODES:
        assert look_up_mode(m) is TaskMode(m) and look_up_mode(TaskMode(m)) is TaskMode(m)
    assert look_up_mode(Task("multilabel")) is TaskMode.MULTILABEL
    assert as_task("binary") == Task(TaskMode.BINARY) and as_task(t := Task("multiclass", NAMES3)) is t


@pytest.mark.parametrize("bad", ["multi-label", "Binary", "", None, 2])
def test_invalid_mode_fails_in_one_place_listing_the_valid_ones(bad):
    valid = re.escape("['binary', 'multiclass', 'multilabel']")
    with pytest.raises(ValueError, match=rf"mode must be one of {valid}, got {re.escape(repr(bad))}"):
        look_up_mode(bad)
    for call in (lambda: Task(bad), lambda: as_task(bad)):  # every constructor goes through the same check
        with pytest.raises(ValueError, match="mode must be one of"):
            call()
    if bad is not None:  # None means "not fixed" to the derivation
        with pytest.raises(ValueError, match="mode must be one of"):
            derive_task(bad, class_names=NAMES2)


def test_invalid_mode_message_names_the_option_and_suggests():
    with pytest.raises(
        ValueError, match=r"bundle 'mode' must be one of .*got 'multi-label' \(did you mean 'multilabel'\?\)"
    ):
        look_up_mode("multi-label", "bundle 'mode'")


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"class_names": NAMES2}, "binary"),  # 2 classes: always binary
        ({"num_classes": 2}, "binary"),
        ({"labels": [0, 1, 1]}, "binary"),
        ({"labels": [1, 1]}, "binary"),  # one distinct label: K <= 2
        ({"labels": ["normal", "pneumonia"]}, "binary"),  # class names as labels
        ({"class_names": NAMES3}, "multiclass"),
        ({"labels": [0, 2, 1]}, "multiclass"),
        ({"labels": [0, 1], "num_classes": 3}, "multiclass"),  # num_classes over the labels seen
        ({"labels": [0, 1], "class_names": NAMES3}, "multiclass"),
        ({"labels": np.array([0, 1, 2, 1])}, "multiclass"),  # 1-d label array: one class per case
        ({"labels": [[0, 1, 1], [0, 0, 0]]}, "multilabel"),  # multi-label lists
        ({"labels": [np.array([1, 0]), (0, 1)], "num_classes": 2}, "multilabel"),  # vectors win over the class count
        ({"labels": np.eye(3, dtype=int)}, "multilabel"),  # one-hot rows are vectors: data lists hold indices
        ({"labels": [None, [1, 0], None, [0, 1]]}, "multilabel"),  # unlabelled entries are skipped
        ({"mode": "multiclass", "class_names": NAMES2}, "multiclass"),  # a fixed mode wins
        ({"mode": "multilabel", "labels": [[1, 0]], "class_names": NAMES2}, "multilabel"),
    ],
)
def test_derive_task_rules(kwargs, expected):
    task = derive_task(**kwargs)
    assert task.mode is TaskMode(expected)
    assert task.class_names == (tuple(kwargs["class_names"]) if "class_names" in kwargs else None)


def test_derive_task_errors():
    with pytest.raises(ValueError, match="mix vectors"):
        derive_task(labels=[[0, 1], 1])
    with pytest.raises(ValueError, match="no label given"):
        derive_task(labels=[None, None])
    with pytest.raises(ValueError, match="give the mode, the labels, num_classes or class_names"):
        derive_task()
    with pytest.raises(ValueError, match=r"mode 'binary' does not fit the labels, which are 0/1 vectors"):
        derive_task("binary", labels=[[0, 1], [1, 1]])
    with pytest.raises(ValueError, match=r"mode 'multilabel' does not fit the labels, which are single classes"):
        derive_task("multilabel", labels=[0, 1])
    with pytest.raises(ValueError, match=r"num_classes=3 does not match the 2 class names"):
        derive_task(num_classes=3, class_names=NAMES2)


def test_task_properties():
    b, c, m = Task("binary", NAMES2), Task("multiclass", num_classes=3), Task("multilabel", NAMES3)
    assert (b.num_classes, c.num_classes, m.num_classes, Task("binary").num_classes) == (2, 3, 3, None)
    assert [t.activation for t in (b, c, m)] == ["softmax", "softmax", "sigmoid"]
    assert [t.uses_threshold for t in (b, c, m)] == [True, False, True]
    assert [(t.is_binary, t.is_multiclass, t.is_multilabel) for t in (b, c, m)] == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
    ]
    with pytest.raises(AttributeError):
        b.mode = TaskMode.MULTICLASS  # frozen: derived once


def test_positive_scores_and_class_probabilities():
    b = Task("binary")
    p2 = np.array([[0.8, 0.2], [0.3, 0.7]])
    for x in (p2, p2[:, 1], p2[:, 1:], torch.as_tensor(p2), p2.tolist()):
        np.testing.assert_allclose(b.positive_scores(x), [0.2, 0.7])
    np.testing.assert_allclose(b.class_probabilities(p2[:, 1]), p2)
    np.testing.assert_allclose(b.class_probabilities(p2), p2)
    with pytest.raises(ValueError, match=r"binary y_prob must have shape \(N,\), \(N, 1\) or \(N, 2\), got \(2, 3\)"):
        b.positive_scores(np.ones((2, 3)) / 3)
    p3 = np.array([[0.2, 0.5, 0.3]])
    np.testing.assert_allclose(Task("multiclass").positive_scores(p3), p3)
    with pytest.raises(ValueError, match=r"multilabel y_prob must have shape \(N, K\) with K >= 2"):
        Task("multilabel").positive_scores([0.1, 0.9])
    assert Task("binary").class_index([[1], [0]]).tolist() == [1, 0]
    assert Task("multiclass").class_index([[0, 0, 1], [1, 0, 0]]).tolist() == [2, 0]
    with pytest.raises(ValueError, match="no single class"):
        Task("multilabel").class_index([[1, 1]])


def test_apply_threshold_is_the_one_decision_rule():
    p2 = np.array([[0.8, 0.2], [0.5, 0.5], [0.3, 0.7]])
    expected = [[0], [1], [1]]  # p_1 >= t, inclusive
    for x in (p2, p2[:, 1], p2[:, 1:], torch.as_tensor(p2)):
        assert apply_threshold(x, "binary", 0.5).tolist() == expected
    assert apply_threshold(p2, Task("binary"), 0.7).tolist() == [[0], [0], [1]]
    assert Task("binary").predict(p2, [0.2]).tolist() == [[1], [1], [1]]
    with pytest.raises(ValueError, match=r"threshold must be a scalar or hold one value per class \(1\), got 2"):
        apply_threshold(p2, "binary", [0.3, 0.4])
    pm = np.array([[0.9, 0.4, 0.05], [0.2, 0.6, 0.5]])
    assert apply_threshold(pm, "multilabel", [0.5, 0.4, 0.5]).tolist() == [[1, 1, 0], [0, 1, 1]]  # per label
    assert apply_threshold(pm, "multilabel", 0.5).tolist() == [[1, 0, 0], [0, 1, 1]]  # one for every label
    with pytest.raises(ValueError, match=r"one value per class \(3\), got 2 values"):
        apply_threshold(pm, "multilabel", [0.5, 0.5])
    pc = np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]])
    for t in (0.5, 0.99, [0.1, 0.2, 0.3]):  # arg-max (first maximum on ties): the threshold is not used
        assert apply_threshold(pc, "multiclass", t).tolist() == [[0, 1, 0], [1, 0, 0]]
    assert apply_threshold(pc, "multiclass").dtype == np.int64


class _Config(dict):
    """The two methods of a ``ConfigParser`` the MONAI Label infer task reads (the values are parsed already)."""

    def get_parsed_content(self, key):
        return self[key]


@pytest.mark.parametrize(
    "names, labels, expected",
    [(NAMES2, [0, 1, 1], "binary"), (NAMES3, [0, 2, 1], "multiclass"), (NAMES3, [[0, 1, 0], [1, 0, 1]], "multilabel")],
)
def test_every_path_derives_the_same_task(tmp_path, names, labels, expected):
    from monai_transfer.data.datalist import infer_task_mode
    from monai_transfer.evaluate.bundle_inference import _mode
    from monai_transfer.handlers.prediction_writer import ClassificationPredictionWriter
    from monai_transfer.label.tasks import ClassificationBundleInferTask, ClassificationBundleTrainTask
    from monai_transfer.label.utils import bundle_task_mode

    items = [{"image": f"{i}.png", "label": v} for i, v in enumerate(labels)]
    derived = derive_task(labels=labels, class_names=names).mode
    assert derived == expected
    # training data lists (the xray train.json's mode id), with and without the class count
    assert infer_task_mode(items, num_classes=len(names)) == expected
    if expected != "multiclass":  # [0, 1, 1] has 2 distinct labels; [0, 2, 1] 3
        assert infer_task_mode(items) == expected
    # configs without a literal mode: by class count (single-label), for MONAI Label's train and infer tasks, the
    # evaluation CLI and the prediction writer alike; a literal mode is taken as it is
    by_count = "binary" if len(names) == 2 else "multiclass"
    train = ClassificationBundleTrainTask.__new__(ClassificationBundleTrainTask)
    train.class_names, train.bundle_path = names, "/bundles/b"
    infer = ClassificationBundleInferTask.__new__(ClassificationBundleInferTask)
    infer.class_names = names
    for raw, want in (("$@expression", by_count), (None, by_count), (expected, expected)):
        train.bundle_config = {"mode": raw}
        assert train.train_mode() == bundle_task_mode(raw, names) == want
        infer.bundle_config = _Config(mode=raw if raw != "$@expression" else None)
        assert infer.output_mode() == want
        parser = _Config(mode=raw) if raw not in (None, "$@expression") else _Config()
        assert _mode(parser, names, Path("b")) == want
    assert ClassificationPredictionWriter(tmp_path)._task(names).mode == by_count
    # MONAI Label's train/validation split takes label vectors as multi-label, as the derivation does
    train.class_names = names
    train_items, val_items = train._partition_datalist(items * 3, {"val_split": 0.34})
    assert len(train_items) + len(val_items) == 3 * len(items) and val_items


def test_cross_validation_uses_the_derivation(tmp_path):
    """``engines/cv.py`` took binary/multi-class from the class count and ignored multi-label data; it now derives
    the task like the training, so multi-label data are refused before any fold is trained."""
    from monai_transfer.cv.run import run_cross_validation

    items = [{"image": f"{i}.png", "label": [i % 2, 1 - i % 2, 1]} for i in range(6)]
    cfg = {
        "imports": ["$import monai_transfer"],
        "class_names": NAMES3,
        "datalists": {"train": items, "val": items[:2]},
        "output_dir": str(tmp_path / "run"),
        "seed": 0,
        "epochs": 1,
        "mode": "$monai_transfer.data.datalist.infer_task_mode(@datalists['train'], num_classes=3)",
    }
    (tmp_path / "train.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="cross-validation takes binary and multiclass tasks; the training data are"):
        run_cross_validation(tmp_path / "train.json", folds=2)
    cfg["mode"] = "binary"  # a fixed mode that contradicts the data is refused by the same derivation
    (tmp_path / "train.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="mode 'binary' does not fit the labels"):
        run_cross_validation(tmp_path / "train.json", folds=2)
