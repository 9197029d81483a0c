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
"""Cross-validated selection: the validation split chooses nothing; folds, OOF calibration and threshold, final fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_transfer.cv.run import choose_epoch, read_datalists, run_cross_validation
from monai_transfer.metrics import select_threshold
from tests.utils import REPO_ROOT, read_csv

TRAIN = REPO_ROOT / "bundles" / "xray" / "configs" / "train.json"


def test_choose_epoch_and_helpers(tmp_path):
    assert choose_epoch([[0.6, 0.7], [0.8, 0.7], [0.75, 0.75]]) == 2  # mean 0.65, 0.75, 0.75: tie -> earlier
    assert choose_epoch([[float("nan"), 0.6], [0.7, 0.7]]) == 2
    with pytest.raises(ValueError, match="no epoch"):
        choose_epoch([[float("nan")], [float("nan")]])
    bad = tmp_path / "d.json"
    bad.write_text('{"train": []}')
    with pytest.raises(ValueError, match="d.json"):
        read_datalists(bad)


def test_train_cv_config_forwards_the_bundle_overrides(tmp_path, monkeypatch):
    """train_cv.json (merged over train.json) calls run_cross_validation with the user's overrides."""
    import monai_transfer.cv.run as cv_module
    from tests.utils import bundle_workflow

    calls = []
    monkeypatch.setattr(cv_module, "run_cross_validation", lambda *a, **k: calls.append((a, k)) or {"chosen": {}})
    configs = TRAIN.parent
    wf = bundle_workflow(
        configs, [TRAIN, configs / "train_cv.json"], "train", output_dir=str(tmp_path / "run"), epochs=3,
        image_size=32, cv_folds=3, device="cpu", max_items=8,
    )  # fmt: skip
    wf.initialize()
    wf.run()
    wf.finalize()
    assert len(calls) == 1
    args, kwargs = calls[0]
    assert Path(args[0]).resolve() == TRAIN.resolve()
    assert kwargs["folds"] == 3 and kwargs["output_dir"] == str(tmp_path / "run") and kwargs["calibrate"] is True
    assert kwargs["epochs"] == 3 and kwargs["image_size"] == 32 and kwargs["max_items"] == 8
    assert kwargs["device"] == "cpu" and kwargs["class_names"] == ["normal", "pneumonia"]
    assert Path(kwargs["meta_file"]).name == "metadata.json" and kwargs["threshold_method"] == "youden"


@pytest.mark.slow
def test_cross_validation_end_to_end_k2_tiny(tmp_path):
    """2 folds of 16 training items at the default batch size (32): each fold trains on its 8 items in one batch,
    the final fit on all 16, each time with the warning naming --batch_size."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # on the logger itself: the bundles' logging.conf replaces the root's handlers
    logging.getLogger("monai_transfer.engines.utils").addHandler(handler)
    out = tmp_path / "run"
    try:
        summary = run_cross_validation(
            TRAIN, folds=2, output_dir=out, epochs=2, max_items=16, image_size=32, weights="none",
            n_bootstrap=20, device="cpu", num_workers=0,
        )  # fmt: skip
    finally:
        logging.getLogger("monai_transfer.engines.utils").removeHandler(handler)
    small = [r.getMessage() for r in records if r.getMessage().startswith("--batch_size 32 is larger")]
    assert len(small) == 3 and sum("(8 images)" in m for m in small) == 2 and "(16 images)" in small[-1], small
    cv = json.loads((out / "cv" / "cv.json").read_text())
    assert cv["folds"] == 2 and cv["n_train"] == 16 and cv["n_val"] == 16 and sum(cv["fold_sizes"]) == 16
    # per-epoch fold validation, and the number of epochs chosen by the best mean fold AUC
    assert [e["epoch"] for e in cv["per_epoch"]] == [1, 2]
    assert all(len(e["fold_auc"]) == 2 for e in cv["per_epoch"])
    means = [e["mean_fold_auc"] for e in cv["per_epoch"]]
    assert cv["chosen"]["epochs"] == 1 + int(np.argmax(means)) == summary["chosen"]["epochs"]
    # folds: group-disjoint, every training item held out exactly once, the val split in no fold
    folds = [read_datalists(out / "cv" / f"fold_{k}" / "datalists.json") for k in range(2)]
    final = read_datalists(out / "cv" / "final_datalists.json")
    held_out = sorted(x["image"] for f in folds for x in f["val"])
    assert held_out == sorted(x["image"] for x in final["train"])
    val_images = {x["image"] for x in final["val"]}
    for f in folds:
        assert not {x["image"] for x in f["train"]} & {x["image"] for x in f["val"]}
        assert not ({x["image"] for x in f["train"]} | {x["image"] for x in f["val"]}) & val_images
    # calibration fitted on the OOF predictions, then the threshold on the calibrated OOF probabilities
    cal = json.loads((out / "models" / "calibration.json").read_text())
    assert cal["temperature"] > 0 and "out-of-fold" in cal["fitted_on"] and cal["n_samples"] == 16
    assert cal["nll_after"] <= cal["nll_before"] + 1e-9
    thr = json.loads((out / "models" / "threshold.json").read_text())
    rows = read_csv(out / "cv" / "oof" / "predictions.csv")
    assert len(rows) == 16
    assert sorted(r["image"] for r in rows) == held_out  # ids: paths relative to dataset_dir, as every report
    assert all(not Path(r["id"]).is_absolute() and r["image"].endswith(r["id"]) for r in rows)
    p_cal = np.array([float(r["prob_pneumonia"]) for r in rows])
    y = np.array([int(r["label"]) for r in rows])
    assert thr["threshold"] == pytest.approx(select_threshold(p_cal, y, "youden"), abs=1e-5)
    assert "out-of-fold" in thr["chosen_on"] and "temperature scaling" in thr["applies_to"]
    oof_report = json.loads((out / "cv" / "oof" / "metrics.json").read_text())
    assert math.isclose(oof_report["calibration"]["temperature"], cal["temperature"])
    assert (out / "cv" / "oof" / "reliability_uncalibrated.png").is_file()
    # final fit on the whole training split; val scored once, at the CV threshold, with the selection recorded
    report = json.loads((out / "eval" / "val" / "metrics.json").read_text())
    assert report["n_samples"] == 16
    assert report["threshold"]["value"] == pytest.approx(thr["threshold"])
    assert report["threshold"]["source"] == f"file {out / 'models' / 'threshold.json'}"
    assert "chose nothing" in report["selection"]["validation_split"]
    assert report["calibration"]["temperature"] == pytest.approx(cal["temperature"])  # applied by post-processing
    assert {"ece_before", "ece_after"} <= set(report["calibration"])
    assert (out / "eval" / "val" / "reliability_uncalibrated.png").is_file()
    assert report["meta"]["data"]["train"]["n"] == 16  # the final model saw the whole training split
    assert not (out / "models" / "threshold.json.tmp").exists()
    last = sorted(p.name for p in (out / "models" / "last").glob("*.pt"))
    assert last and all(f"={cv['chosen']['epochs']}" in n for n in last), last  # stopped after the chosen epochs
    # the fold models make an ensemble
    from monai_transfer.networks.nets import Pretrained2DNet, ProbabilityEnsemble

    ens = ProbabilityEnsemble(
        network=Pretrained2DNet(
            backbone=json.loads(TRAIN.read_text())["backbone"], weights="none", num_classes=2, in_channels=3
        ),
        checkpoints=cv["files"]["fold_models"],
    ).eval()
    with torch.no_grad():
        p = torch.softmax(ens(torch.rand(2, 3, 32, 32)), 1)
    torch.testing.assert_close(p.sum(1), torch.ones(2))


def test_align_predictions_by_id_and_volume_pooling():
    from monai_transfer.cv.run import align_predictions

    items = [{"image": "/d/b.nii.gz", "label": 1}, {"image": "/d/a.nii.gz", "label": 0}]
    # one row per item, in another order than the items
    p = np.array([[0.8, 0.2], [0.3, 0.7]])
    got, y = align_predictions(p, np.array([0, 1]), ["/d/a.nii.gz", "/d/b.nii.gz"], items)
    np.testing.assert_allclose(got, [[0.3, 0.7], [0.8, 0.2]])
    assert y.tolist() == [1, 0]
    # slices of volumes: pooled per volume with the config's aggregation (mean), then ordered like the items
    slices = np.array([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    ids = ["/d/a.nii.gz", "/d/a.nii.gz", "/d/b.nii.gz", "/d/b.nii.gz", "/d/b.nii.gz"]
    got, y = align_predictions(slices, np.array([0, 0, 1, 1, 1]), ids, items, aggregation="mean")
    np.testing.assert_allclose(got[:, 1], [0.7, 0.2], atol=1e-12)
    assert y.tolist() == [1, 0]
    with pytest.raises(RuntimeError, match="aggregation"):
        align_predictions(slices, np.array([0, 0, 1, 1, 1]), ids, items)
    with pytest.raises(RuntimeError, match="missing"):
        align_predictions(p, np.array([0, 1]), ["/d/a.nii.gz", "/d/c.nii.gz"], items)
    # no ids: loader order
    got, _ = align_predictions(p, np.array([0, 1]), [None, None], items)
    np.testing.assert_allclose(got, p)
