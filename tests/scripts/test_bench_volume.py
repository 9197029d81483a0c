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
"""Quick modes of the volume benchmarks (issue #29): ``accuracy_volume.py`` under the CV protocol and the recipe round
``recipe_volume.py``; tiny sizes, results in ``tmp_path`` (CI proof that they run, not timed tests)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.bench import common, recipe_volume
from tests.utils import ADRENAL_NPZ, REPO_ROOT, requires_shared_data

__all__: list[str] = []


def _bench(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(common, "CACHE_DIR", tmp_path / "cache")
    return importlib.import_module(f"scripts.bench.{name}")


@pytest.mark.slow
@requires_shared_data(ADRENAL_NPZ)
def test_accuracy_volume_quick_cv_protocol_with_test_split(tmp_path, monkeypatch):
    mod = _bench("accuracy_volume", tmp_path, monkeypatch)
    with np.load(ADRENAL_NPZ) as z:
        np.savez(tmp_path / "t.npz", test_images=z["val_images"][:8], test_labels=z["val_labels"][:8])
    out = tmp_path / "v"
    work = tmp_path / "work"
    res = mod.main(["--quick", "--threads", "1", "--test", str(tmp_path / "t.npz"), "--output", str(out),
                    "--work-dir", str(work)])  # fmt: skip
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) == {"val", "test", "cv", "selection", "config", "env"}
    for split, n in (("val", 12), ("test", 8)):
        r = saved[split]
        assert r["n"] == n and r["level"] == "volume" and 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["acc"] <= 1.0
        assert r["auc_ci95"][0] <= r["auc"] <= r["auc_ci95"][1] and r["acc_ci95"][0] <= r["acc"] <= r["acc_ci95"][1]
        assert 0.0 <= r["ece"] <= 1.0 and 0.0 <= r["ece_uncalibrated"] <= 1.0
    # one threshold and one temperature, both chosen out-of-fold on the TRAIN volumes, applied to val and test
    cv = saved["cv"]
    assert cv["folds"] == 2 and sum(cv["fold_sizes"]) == 16 and 1 <= cv["chosen"]["epochs"] <= 2
    assert saved["val"]["threshold"] == saved["test"]["threshold"] == res["cv"]["chosen"]["threshold"]
    assert "out-of-fold VOLUME" in saved["config"]["threshold_method"] and "pooled" in saved["config"]["calibration"]
    assert "chose nothing" in saved["selection"]["validation_split"] and "per volume" in saved["selection"]["threshold"]
    # val through the inference path ranks the volumes as the bundle's own validation after the final fit did
    assert saved["val"]["auc"] == pytest.approx(saved["val"]["bundle_report_auc"], abs=1e-6)
    if cv["chosen"]["temperature"] != 1.0:
        assert saved["val"]["ece"] != saved["val"]["ece_uncalibrated"]  # the temperature was applied
    assert saved["config"]["counts"] == {"train": 16, "val": 12} and saved["config"]["quick"] is True
    # the same CV scored with its fold models averaged (no training): same OOF threshold, another model
    ens = mod.main(["--quick", "--threads", "1", "--output", str(tmp_path / "e"), "--work-dir", str(work),
                    "--reuse-cv", "--final-model", "fold_ensemble"])  # fmt: skip
    assert ens["config"]["final_model"] == "fold_ensemble"
    assert ens["config"]["reused_cv"] == str(work / "cv" / "cv.json")
    assert ens["val"]["n"] == 12 and ens["val"]["threshold"] == saved["val"]["threshold"]
    assert ens["cv"]["chosen"] == saved["cv"]["chosen"] and "fold models averaged" in ens["selection"]["final_fit"]
    member_keys = torch.load(work / "models" / "fold_ensemble" / "model.pt", map_location="cpu", weights_only=True)
    assert {k.split(".")[1] for k in member_keys if k.startswith("members.")} == {"0", "1"}  # the 2 quick folds
    record = json.loads((work / "models" / "fold_ensemble" / "model.json").read_text())  # checked when loaded
    assert record["image_size"] == 32 and len(record["run"]["ensemble_members"]) == 2
    # nested CV on the same run: each outer fold's held-out volumes are outside its inner CV and final fit
    nested = importlib.import_module("scripts.bench.nested_volume")
    nres = nested.main(["--quick", "--threads", "1", "--work-dir", str(work), "--output", str(tmp_path / "n")])
    assert set(nres["arms"]) == set(nested.ARMS) and all(a["n"] == 16 for a in nres["arms"].values())
    assert nres["verdict"] == nested.verdict(nres["arms"]) and len(nres["inner_chosen"]) == 2
    for k, outer in enumerate(nested.outer_folds(work)):
        held = {Path(x["image"]).name for x in outer["val"]}
        run = work / "nested" / f"outer_{k}" / "run"
        inner = json.loads((run / "cv" / "final_datalists.json").read_text())
        seen = {Path(x["image"]).name for split in ("train",) for x in inner[split]}
        assert seen == {Path(x["image"]).name for x in outer["train"]} and not seen & held
        assert {p.name for p in (work / "nested" / f"outer_{k}" / "heldout").iterdir()} == held
    # rescored from the kept predictions (no training): the same pooled scores, plus the ECE noise floor
    again = nested.main(["--quick", "--threads", "1", "--work-dir", str(work), "--output", str(tmp_path / "n2"),
                         "--rescore"])  # fmt: skip
    assert again["config"]["rescored_from_kept_predictions"] and again["inner_chosen"] == nres["inner_chosen"]
    for arm in nested.ARMS:
        a, b = again["arms"][arm], nres["arms"][arm]
        assert a["n"] == b["n"] == 16 and a["acc"] == b["acc"] and abs(a["auc"] - b["auc"]) < 1e-3  # CSV: 6 decimals
        assert 0 < a["ece_noise_floor"]["mean"] <= a["ece_noise_floor"]["p95"]
    with pytest.raises(ValueError, match="other settings"):
        mod.main(["--quick", "--threads", "1", "--output", str(tmp_path / "x"), "--work-dir", str(work), "--reuse-cv",
                  "--epochs", "3"])  # fmt: skip


@pytest.mark.slow
@requires_shared_data(ADRENAL_NPZ)
def test_recipe_volume_quick_round(tmp_path, monkeypatch):
    mod = _bench("recipe_volume", tmp_path, monkeypatch)
    out = tmp_path / "r"
    summary = mod.main(["--quick", "--threads", "1", "--output", str(out), "--recipes", "base", "max"])
    assert [r["recipe"] for r in summary["rows"]] == ["base", "max"]
    assert summary["winner"] == mod.choose_winner(summary["rows"], None)["recipe"]
    saved = json.loads((out / "max.json").read_text())
    assert saved["recipe_overrides"] == {"aggregation": "max"} and saved["config"]["aggregation"] == "max"
    assert json.loads((out / "summary.json").read_text())["winner"] == summary["winner"]
    again = mod.main(["--quick", "--threads", "1", "--output", str(out), "--recipes", "base"])  # resumes: skipped
    assert [r["recipe"] for r in again["rows"]] == ["base", "max"]


def test_recipe_volume_candidates_and_budget():
    train_ids = json.loads((REPO_ROOT / "bundles" / "ct_slices" / "configs" / "train.json").read_text())
    unknown = {k for r in recipe_volume.RECIPES.values() for k in r if k not in train_ids}
    assert not unknown, f"recipe_volume.RECIPES override ids that ct_slices' train.json lacks: {unknown}"
    assert recipe_volume.recipe_overrides("base")["ema_decay"] == 0.99
    assert recipe_volume.recipe_overrides("no_ema")["ema_decay"] == 0.0
    assert recipe_volume.recipe_overrides("slices8", quick=True)["train_slices"] == 2  # quick stays tiny
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_volume.recipe_overrides("nope")
    row = {"cv_auc": 0.9, "cv_ece": 0.02, "cv_ece_before": 0.1, "cv_auc_sd": 0.01, "cv_oof_auc": 0.9}
    rows = [{**row, "recipe": "cheap", "cpu_minutes": 20.0}, {**row, "recipe": "dear", "cv_auc": 0.95,
                                                               "cpu_minutes": 60.0}]  # fmt: skip
    eligible = [r for r in rows if r["cpu_minutes"] <= recipe_volume.BUDGET_CPU_MINUTES]
    assert recipe_volume.choose_winner(eligible, None)["recipe"] == "cheap"  # over the budget: reported only
    assert recipe_volume.choose_winner(rows, None)["recipe"] == "dear"
