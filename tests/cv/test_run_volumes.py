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
"""Cross-validation of the volume bundle (ct_slices, issue #29): folds over volumes, the temperature and threshold
chosen on the pooled out-of-fold VOLUME predictions, and the validation split not read before the final scoring."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.utils import REPO_ROOT, read_csv

__all__: list[str] = []

BUNDLE = REPO_ROOT / "bundles" / "ct_slices"
TRAIN = BUNDLE / "configs" / "train.json"
TINY = {
    "epochs": 2, "image_size": 32, "train_slices": 2, "val_slices": 3, "batch_size": 6, "n_bootstrap": 20,
    "device": "cpu", "weights": "none", "duplicates": "off", "cache_rate": 0.0,
}  # fmt: skip


def _dataset(tmp_path, n_train=12, n_val=4):
    """A labels CSV of shipped volumes: ``n_train`` train volumes (half per class) and ``n_val`` val volumes whose
    files are POISONED (not NIfTI): any read of them fails. Returns the CSV and ``{val path: real volume}``."""
    rows = list(csv.DictReader(open(BUNDLE / "data" / "labels.csv", encoding="utf-8")))
    pick = []
    for split, n in (("train", n_train), ("val", n_val)):
        for label in ("0", "1"):
            pick += [r for r in rows if r["split"] == split and r["label"] == label][: n // 2]
    (tmp_path / "volumes").mkdir()
    real = {}
    for r in pick:
        src, dst = BUNDLE / "data" / r["image"], tmp_path / r["image"]
        if r["split"] == "val":
            dst.write_bytes(b"poisoned: the validation split must not be read before the final scoring")
            real[dst] = src
        else:
            shutil.copy(src, dst)
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["image", "label", "patient_id", "split"])
        w.writeheader()
        w.writerows(pick)
    return path, real


def test_volume_cv_chooses_on_pooled_oof_volumes_and_reads_val_only_at_the_end(tmp_path, monkeypatch):
    import monai_transfer.cv.run as cv_module

    labels_csv, real_val = _dataset(tmp_path)
    final_fit, events = cv_module._final_fit, []

    def unpoison_then_final_fit(plan, *args, **kwargs):
        events.append(("final_fit", sorted(p.read_bytes()[:9] for p in real_val)))
        for dst, src in real_val.items():  # the val volumes become readable only now
            shutil.copy(src, dst)
        return final_fit(plan, *args, **kwargs)

    monkeypatch.setattr(cv_module, "_final_fit", unpoison_then_final_fit)
    out = tmp_path / "run"
    cv = cv_module.run_cross_validation(TRAIN, folds=2, output_dir=out, dataset_dir=str(labels_csv), **TINY)
    # every fold and every choice ran while the val files were unreadable; the final fit came last, once
    assert events == [("final_fit", [b"poisoned:"] * 4)]
    # folds over volumes: each held-out part is whole volumes, every train volume held out once, val in no fold
    folds = [cv_module.read_datalists(out / "cv" / f"fold_{k}" / "datalists.json") for k in range(2)]
    train_ids = sorted(str(tmp_path / r["image"]) for r in read_csv(labels_csv) if r["split"] == "train")
    assert sorted(x["image"] for f in folds for x in f["val"]) == train_ids
    for f in folds:
        assert not {x["image"] for x in f["train"]} & {x["image"] for x in f["val"]}
        assert not {x["image"] for x in f["train"] + f["val"]} & {str(p) for p in real_val}
    # the temperature: chosen on the pooled out-of-fold VOLUME probabilities (12 volumes, 3 slices each)
    cal = json.loads((out / "models" / "calibration.json").read_text())
    assert cal["level"] == "volume" and cal["n_samples"] == 12 and cal["n_slices"] == 36
    assert "out-of-fold" in cal["fitted_on"] and "pooled volume" in cal["fitted_on"]
    assert cal["nll_after"] <= cal["nll_before"] + 1e-9
    oof = read_csv(out / "cv" / "oof" / "predictions.csv")
    assert len(oof) == 12  # one row per volume
    p1 = np.array([float(r["prob_adrenal_mass"]) for r in oof])
    y = np.array([int(r["label"]) for r in oof])
    nll = -np.mean(np.log(np.clip(np.where(y == 1, p1, 1 - p1), 1e-12, 1)))
    assert math.isclose(nll, cal["nll_after"], rel_tol=1e-4)  # the report holds the calibrated volume probabilities
    # the threshold: on the calibrated out-of-fold volume probabilities
    from monai_transfer.metrics import select_threshold

    thr = json.loads((out / "models" / "threshold.json").read_text())
    assert thr["n_samples"] == 12 and thr["threshold"] == pytest.approx(select_threshold(p1, y, "youden"), abs=1e-5)
    # val scored once, volume by volume, with the OOF choices; the report says which data chose what
    report = json.loads((out / "eval" / "val" / "metrics.json").read_text())
    assert report["n_samples"] == 4 and report["meta"]["aggregation"]["level"] == "volume"
    assert report["threshold"]["value"] == pytest.approx(thr["threshold"])
    sel = report["selection"]
    assert "per volume" in sel["epochs"] and "pooled volume" in sel["temperature"] and "per volume" in sel["threshold"]
    assert "chose nothing" in sel["validation_split"] and cv["chosen"]["temperature"] == cal["temperature"]


def test_val_poison_is_seen_by_a_read(tmp_path):
    """The poisoned files of the test above fail any read (so a read before the final fit would fail the run)."""
    from monai.transforms import LoadImage

    _, real_val = _dataset(tmp_path, n_train=2, n_val=2)
    path = next(iter(real_val))
    with pytest.raises(Exception, match=path.name):  # nibabel's ImageFileError names the file
        LoadImage()(str(path))


def test_ct_slices_train_cv_config_forwards_the_volume_settings(tmp_path, monkeypatch):
    """``train_cv.json`` merged over ct_slices' ``train.json`` calls the cross-validation with the slicing, pooling
    and recipe ids of the run (``run_values``), so the folds and the final fit train what the user asked for."""
    import monai_transfer.cv.run as cv_module
    from tests.utils import bundle_workflow

    calls = []
    monkeypatch.setattr(cv_module, "run_cross_validation", lambda *a, **k: calls.append((a, k)) or {"chosen": {}})
    configs = TRAIN.parent
    wf = bundle_workflow(
        configs, [TRAIN, configs / "train_cv.json"], "train", output_dir=str(tmp_path / "run"), cv_folds=3,
        max_items=8, duplicates="off", device="cpu", train_slices=6, aggregation="max", ema_decay=0.9,
        aug_strength=0.5,
    )  # fmt: skip
    wf.initialize()
    wf.run()
    wf.finalize()
    ((args, kwargs),) = calls
    assert Path(args[0]).resolve() == TRAIN.resolve() and kwargs["folds"] == 3 and kwargs["group_key"] == "patient_id"
    assert (kwargs["train_slices"], kwargs["aggregation"], kwargs["ema_decay"], kwargs["aug_strength"]) == (
        6, "max", 0.9, 0.5,
    )  # fmt: skip
    assert kwargs["val_slices"] == 16 and kwargs["slice_offsets"] == [-2, 0, 2] and kwargs["calibrate"] is True


def test_volume_temperature_minimises_the_pooled_volume_nll(tmp_path):
    """Synthetic slice probabilities whose mean-pooled volume probabilities are under-confident: the volume
    temperature sharpens them (T < 1), is the grid minimum of the pooled-volume NLL, and lowers the volume ECE."""
    from types import SimpleNamespace

    from monai_transfer.cv.run import _fit_volume_temperature, _Plan
    from monai_transfer.utils.task import derive_task

    rng = np.random.default_rng(0)
    n_vol, n_slices = 40, 5
    labels = np.array([0, 1] * (n_vol // 2))
    items = [{"image": f"v{i}.nii.gz", "label": int(y)} for i, y in enumerate(labels)]
    fold_of = [i % 2 for i in range(n_vol)]
    per_fold = []
    for k in range(2):
        idx = [i for i in range(n_vol) if fold_of[i] == k]
        logit = np.concatenate([(labels[i] * 2 - 1) * 0.4 + rng.normal(0, 0.3, n_slices) for i in idx])
        p1 = 1 / (1 + np.exp(-logit))
        probs = np.stack([1 - p1, p1], 1)
        y = np.repeat(labels[idx], n_slices)
        ids = [items[i]["image"] for i in idx for _ in range(n_slices)]
        per_fold.append(SimpleNamespace(epochs={1: (probs, y, ids)}))
    plan = _Plan(
        files=[], meta="", log_file=False, class_names=["normal", "adrenal_mass"],
        task=derive_task("binary", class_names=["normal", "adrenal_mass"]), dataset_dir=None, seed=0, epochs=1,
        aggregation="mean", aggregation_k=3, train_items=items, val_items=[], fold_of=fold_of, folds=2,
        group_key=None, out=tmp_path, override={}, base={},
    )  # fmt: skip
    t, info = _fit_volume_temperature(plan, per_fold, 1, "synthetic")
    assert t < 1 and info["level"] == "volume" and info["n_samples"] == n_vol and info["n_slices"] == n_vol * n_slices
    assert info["nll_after"] < info["nll_before"] and info["ece_after"] < info["ece_before"]
    from monai_transfer.cv.run import _oof, _volume_nll

    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 120))
    nll = [_volume_nll(_oof(plan, per_fold, 1, g), labels) for g in grid]
    assert info["nll_after"] <= min(nll) + 1e-6


def _synthetic_plan(tmp_path, slice_p1, labels, method="mean"):
    """A 2-fold volume plan over known slice probabilities ``slice_p1[i]`` (one array per volume) and its folds."""
    from types import SimpleNamespace

    from monai_transfer.cv.run import _Plan
    from monai_transfer.utils.task import derive_task

    items = [{"image": f"v{i}.nii.gz", "label": int(y)} for i, y in enumerate(labels)]
    fold_of = [i % 2 for i in range(len(items))]
    per_fold = []
    for k in range(2):
        idx = [i for i in range(len(items)) if fold_of[i] == k]
        p1 = np.concatenate([slice_p1[i] for i in idx])
        y = np.concatenate([[labels[i]] * len(slice_p1[i]) for i in idx])
        ids = [items[i]["image"] for i in idx for _ in slice_p1[i]]
        per_fold.append(SimpleNamespace(epochs={1: (np.stack([1 - p1, p1], 1), y, ids)}))
    plan = _Plan(
        files=[], meta="", log_file=False, class_names=["normal", "adrenal_mass"],
        task=derive_task("binary", class_names=["normal", "adrenal_mass"]), dataset_dir=None, seed=0, epochs=1,
        aggregation=method, aggregation_k=3, train_items=items, val_items=[], fold_of=fold_of, folds=2,
        group_key=None, out=tmp_path, override={}, base={},
    )  # fmt: skip
    return plan, per_fold


def test_volume_platt_is_kept_when_pooling_biases_the_volumes_and_applied_after_pooling(tmp_path):
    """Max pooling over 12 noisy slices puts every volume too high; one slice temperature cannot move the volumes
    as a whole, the Platt step of the pooled probabilities can: it is kept by its cross-fitted rule, stored with its
    pooling, and the OOF probabilities (hence the threshold and report) are the Platt-scaled ones."""
    from monai_transfer.cv.run import _calibrate, _oof
    from monai_transfer.metrics import compute_ece
    from monai_transfer.metrics.volume_calibration import load_volume_platt, positive_class_ece

    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 150)
    slices = [1 / (1 + np.exp(-((2 * y - 1) * 0.5 + rng.normal(0, 1.5, 12)))) for y in labels]
    plan, per_fold = _synthetic_plan(tmp_path, slices, labels, method="max")
    plan.models_dir.mkdir(parents=True)
    t, platt, info, path = _calibrate(plan, per_fold, 1, "synthetic OOF")
    sel = info["volume_platt_selection"]
    assert platt is not None and sel["kept"] and platt.aggregation == "max" and platt.slope > 0
    assert sel["nll_crossfit"] < sel["nll_temperature_only"]
    assert info["nll_after"] < info["nll_after_temperature_only"] and "Platt" in info["fitted_on"]
    stored = json.loads(path.read_text())
    assert stored["volume_platt"] == platt.to_dict() and stored["temperature"] == t
    assert load_volume_platt(path, "max") == platt and load_volume_platt(path, "mean") is None
    p_t, p_tp = _oof(plan, per_fold, 1, t)[:, 1], _oof(plan, per_fold, 1, t, platt)[:, 1]
    np.testing.assert_allclose(p_tp, platt(p_t))
    assert positive_class_ece(p_tp, labels) < positive_class_ece(p_t, labels)
    assert info["ece_after"] == pytest.approx(compute_ece(p_tp, labels, "binary"))


def test_volume_platt_is_not_kept_on_calibrated_volumes(tmp_path):
    """Volumes whose mean-pooled probabilities are already calibrated: the Platt step does not beat the temperature
    alone out of sample, so calibration.json holds the temperature only."""
    from monai_transfer.cv.run import _calibrate

    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.95, 300)
    labels = (rng.random(300) < p).astype(int)
    plan, per_fold = _synthetic_plan(tmp_path, [np.array([v, v]) for v in p], labels)
    plan.models_dir.mkdir(parents=True)
    _, platt, info, path = _calibrate(plan, per_fold, 1, "synthetic OOF")
    sel = info["volume_platt_selection"]
    assert platt is None and not sel["kept"] and sel["nll_crossfit"] >= sel["nll_temperature_only"]
    assert "volume_platt" not in json.loads(path.read_text()) and "nll_after_temperature_only" not in info
