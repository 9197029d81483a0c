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
"""Quick modes of the benchmark scripts in ``scripts.bench`` (CI proof that they still run; not timed tests).

Each test calls a script's ``main([...,"--quick", "--output", tmp])`` in-process; the file caches go to a temporary
folder, and nothing is written to ``benchmarks/results``.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from scripts.bench import common, recipe_xray
from tests.utils import ADRENAL_NPZ, PNEUMONIA_NPZ, REPO_ROOT, requires_shared_data

__all__: list[str] = []

RESULTS = REPO_ROOT / "benchmarks" / "results"

pytestmark = pytest.mark.slow


def _bench(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Import ``scripts.bench.<name>`` with the cache folder redirected to ``tmp_path``."""
    monkeypatch.setattr(common, "CACHE_DIR", tmp_path / "cache")
    return importlib.import_module(f"scripts.bench.{name}")


def _results_snapshot() -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in RESULTS.rglob("*") if p.is_file()} if RESULTS.is_dir() else {}


@pytest.fixture(autouse=True)
def _results_untouched():
    """No quick run may change or add a file in benchmarks/results (a full benchmark may run beside CI)."""
    before = _results_snapshot()
    yield
    after = _results_snapshot()
    assert all(after.get(p) == t for p, t in before.items()), "a quick benchmark overwrote benchmarks/results"
    for p in set(after) - set(before):
        if p.endswith(".json"):
            assert not json.loads(Path(p).read_text()).get("config", {}).get("quick"), f"quick result written to {p}"


@requires_shared_data(PNEUMONIA_NPZ)
def test_accuracy_xray_quick_with_test_split(tmp_path, monkeypatch):
    mod = _bench("accuracy_xray", tmp_path, monkeypatch)
    with np.load(PNEUMONIA_NPZ) as z:
        np.savez(tmp_path / "t.npz", test_images=z["val_images"][:40], test_labels=z["val_labels"][:40])
    res = mod.main(["--quick", "--threads", "1", "--test", str(tmp_path / "t.npz"), "--output", str(tmp_path / "o")])
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    assert set(saved) == {"val", "test", "cv", "config", "env", "operating_points"}
    for split, n in (("val", 48), ("test", 32)):
        r = saved[split]
        assert r["n"] == n and 0.0 <= r["auc"] <= 1.0 and 0.0 <= r["acc"] <= 1.0
        assert r["auc_ci95"][0] <= r["auc"] <= r["auc_ci95"][1]
        assert 0.0 <= r["ece"] <= 1.0 and 0.0 <= r["ece_uncalibrated"] <= 1.0
    # one threshold and one temperature, both chosen out-of-fold on TRAIN (2 folds in quick mode), applied to both
    cv = saved["cv"]
    assert cv["folds"] == 2 and sum(cv["fold_sizes"]) == 64 and cv["chosen"]["epochs"] == 1
    assert (
        saved["val"]["threshold"] == saved["test"]["threshold"] == res["val"]["threshold"] == cv["chosen"]["threshold"]
    )
    assert saved["config"]["cv_folds"] == 2 and "out-of-fold" in saved["config"]["threshold_method"]
    # val is scored through the inference path (evaluate_bundle on inference.json); its AUC (rank-based, so the
    # temperature does not change it) is the one the bundle's own validation reported after the final fit
    assert saved["val"]["auc"] == pytest.approx(saved["val"]["bundle_report_auc"], abs=1e-6)
    if cv["chosen"]["temperature"] != 1.0:
        assert saved["val"]["ece"] != saved["val"]["ece_uncalibrated"]  # the calibration was applied
    assert saved["config"]["counts"] == {"train": 64, "val": 48} and saved["config"]["quick"] is True
    assert saved["env"]["command"].startswith("python -m scripts.bench.accuracy_xray --quick")
    # the shift suite (issue 31): out-of-fold (the fold models, pooled), val and test at the shipped threshold, the
    # shift-robust operating point chosen out-of-fold and its rates on val/test
    fams = {"pixelate", "jpeg", "gaussian_noise", "exposure", "windowing", "resolution", "prevalence"}
    assert fams <= set(cv["shift"]["families"]) and 0.0 <= cv["shift"]["suite_auc"] <= 1.0
    assert cv["shift"]["threshold"] == cv["chosen"]["threshold"]
    robust = saved["operating_points"]["shift_robust"]
    assert robust["method"] == "shift_robust" and "out-of-fold" in robust["chosen_on"]
    assert isinstance(robust["meets_default_rule"], bool) and 0.0 <= robust["threshold"] <= 1.0
    from monai_transfer.metrics.threshold import load_threshold

    saved_t = json.loads((tmp_path / "o" / "threshold_shift_robust.json").read_text())
    assert load_threshold(tmp_path / "o" / "threshold_shift_robust.json") == robust["threshold"]
    assert saved_t["method"] == "shift_robust" and "out-of-fold" in saved_t["chosen_on"] and saved_t["applies_to"]
    for split in ("val", "test"):
        sh = saved[split]["shift"]
        assert sh["threshold"] == saved[split]["threshold"] and fams <= set(sh["families"])
        assert sh["worst"]["auc"]["value"] <= sh["suite_auc"] + 1e-12
        assert (tmp_path / "o" / f"shift_{split}" / "shift.md").is_file()
        assert saved[split]["at_shift_robust"]["threshold"] == robust["threshold"]
    (tmp_path / "res" / "shift_xray").mkdir(parents=True)
    (tmp_path / "res" / "shift_xray" / "results.json").write_text(json.dumps(saved))
    text = _bench("make_report", tmp_path, monkeypatch).build_report(tmp_path / "res", tmp_path / "r")
    assert "## 1d. Shift suite" in text and "| out of fold (fold models) |" in text and "| test |" in text
    assert "Shift-robust operating point (out of fold)" in text and "quick mode" in text


@requires_shared_data(PNEUMONIA_NPZ)
def test_recipe_xray_quick_cv_only_then_final_fit(tmp_path, monkeypatch):
    """CV-only runs of two recipes, the winner chosen on CV numbers, then its final fit reusing the kept CV run."""
    mod = _bench("recipe_xray", tmp_path, monkeypatch)
    out = tmp_path / "r"
    common = ["--quick", "--threads", "1", "--output", str(out)]
    summary = mod.main([*common, "--cv-only", "--recipes", "base", "ls0.1"])
    assert [r["recipe"] for r in summary["rows"]] == ["base", "ls0.1"]
    assert all(r["val_auc"] is None and not r["final_fit"] for r in summary["rows"])  # val not scored yet
    winner = mod.choose_winner(summary["rows"])["recipe"]
    assert summary["winner"] == winner
    saved = json.loads((out / "ls0.1.json").read_text())
    assert saved["recipe_overrides"] == {"label_smoothing": 0.1} and saved["config"]["label_smoothing"] == 0.1
    final = mod.main([*common, "--final-fit"])
    rows = {r["recipe"]: r for r in final["rows"]}
    assert rows[winner]["final_fit"] and 0.0 <= rows[winner]["val_auc"] <= 1.0 and rows[winner]["val_ece"] >= 0.0
    loser = next(n for n in rows if n != winner)
    assert rows[loser]["val_auc"] is None
    assert rows[winner]["cv_auc"] == next(r for r in summary["rows"] if r["recipe"] == winner)["cv_auc"]
    res = json.loads((out / f"{winner}.json").read_text())
    assert res["config"]["final_fit_reused_cv"] and res["val"]["threshold"] == res["cv"]["chosen"]["threshold"]


def test_recipe_winner_rule_sees_shift():
    """With out-of-fold shift-suite AUCs, recipes equivalent on clean CV (within CLEAN_BAND_AUC) are told apart by
    the shift suite; rows without it (earlier rounds) do not compete; without any, the clean rule applies."""
    band, tie = recipe_xray.CLEAN_BAND_AUC, recipe_xray.TIE_SHIFT_AUC
    rows = [
        {"recipe": "clean_best", "cv_auc": 0.996, "cv_ece": 0.004, "cpu_minutes": 10.0, "cv_shift_auc": 0.930},
        {"recipe": "robust", "cv_auc": 0.996 - band / 2, "cv_ece": 0.009, "cpu_minutes": 20.0, "cv_shift_auc": 0.960},
        {"recipe": "too_weak", "cv_auc": 0.996 - 2 * band, "cv_ece": 0.001, "cpu_minutes": 1.0, "cv_shift_auc": 0.99},
        {"recipe": "old_round", "cv_auc": 0.999, "cv_ece": 0.001, "cpu_minutes": 1.0},
    ]
    assert recipe_xray.choose_winner(rows)["recipe"] == "robust"
    assert recipe_xray.choose_winner(rows, use_shift=False)["recipe"] == "old_round"
    rows[0]["cv_shift_auc"] = 0.960 - tie / 2  # a shift tie: the lower OOF ECE wins
    assert recipe_xray.choose_winner(rows)["recipe"] == "clean_best"
    assert recipe_xray.choose_winner([{**r, "cv_shift_auc": None} for r in rows])["recipe"] == "old_round"
    # the crop candidate keeps the bundle's own list; the bundle's acquisition-shift augmentation (the transforms
    # switched by shift_aug_prob) is of other kinds than the suite's corruptions, and off in the recipes before it
    base = json.loads((REPO_ROOT / "bundles" / "xray" / "configs" / "train.json").read_text())["train"]["augmentation"]
    assert recipe_xray.RRC_AUGMENTATION[: len(base)] == base and len(recipe_xray.RRC_AUGMENTATION) > len(base)
    from monai_transfer.transforms.pipelines import acquisition_shift_augmentation

    shift = {type(t).__name__ for t in acquisition_shift_augmentation()}
    assert not shift & {"RandGaussianNoised", "RandGaussianSmoothd", "RandAdjustContrastd", "RandScaleIntensityd"}
    assert recipe_xray.recipe_overrides("ema_lite1")["shift_aug_prob"] == 0.0
    assert recipe_xray.recipe_overrides("lite1_shiftaug")["shift_aug_prob"] == 0.3


@requires_shared_data(PNEUMONIA_NPZ)
def test_recipe_xray_quick_shift_candidates(tmp_path, monkeypatch):
    """The shift candidates run in quick mode (CV only): their augmentation lists build and train, and each row has
    the out-of-fold shift-suite AUC the rule reads."""
    mod = _bench("recipe_xray", tmp_path, monkeypatch)
    out = tmp_path / "r"
    summary = mod.main(["--quick", "--threads", "1", "--output", str(out), "--cv-only", "--recipes",
                        "lite1_shiftaug", "lite1_rrc"])  # fmt: skip
    assert [r["recipe"] for r in summary["rows"]] == ["lite1_shiftaug", "lite1_rrc"]
    assert all(0.0 <= r["cv_shift_auc"] <= 1.0 and r["cv_shift_worst_family"] for r in summary["rows"])
    assert "shift-suite AUC" in summary["rule"] and summary["winner"] in ("lite1_shiftaug", "lite1_rrc")


@requires_shared_data(PNEUMONIA_NPZ)
def test_accuracy_xray_quick_fold_ensemble_and_tta(tmp_path, monkeypatch):
    """The final-model variants: the CV fold models averaged, and TTA (also for the OOF shift suite)."""
    mod = _bench("accuracy_xray", tmp_path, monkeypatch)
    recipe = {**mod.QUICK_RECIPE, "final_model": "fold_ensemble", "use_tta": True}
    res = mod.run(PNEUMONIA_NPZ, tmp_path / "o", recipe, quick=True, n_bootstrap=0, folds=2, shift_cases=16)
    assert res["config"]["final_model"] == "fold_ensemble" and res["config"]["use_tta"] is True
    assert "final_model" not in res["config"]["counts"] and 0.0 <= res["val"]["auc"] <= 1.0
    assert 0.0 <= res["val"]["shift"]["suite_auc"] <= 1.0


@requires_shared_data(PNEUMONIA_NPZ)
def test_tta_xray_quick(tmp_path, monkeypatch):
    """Without a kept CV run, a quick CV-only run is made; each fold model scores its held-out fold with and without
    the bundle's TTA through the one inference path; every train image is scored once out of fold."""
    mod = _bench("tta_xray", tmp_path, monkeypatch)
    res = mod.main(["--quick", "--threads", "1", "--output", str(tmp_path / "tta.json")])
    assert res["recipe"] == mod.default_recipe_name(quick=True) and len(res["per_fold"]) == 2
    assert res["n"] == sum(f["n"] for f in res["per_fold"])
    for arm in ("plain", "tta"):
        assert 0.0 <= res[arm]["auc"] <= 1.0 and res[arm]["ece"] >= 0.0 and res[arm]["seconds"] > 0
    d = res["auc_difference_tta_minus_plain"]
    assert d["lower"] <= d["estimate"] <= d["upper"] and res["pays"] == (d["lower"] > 0)
    assert json.loads((tmp_path / "tta.json").read_text())["verdict"] == res["verdict"]


def test_paired_auc_difference():
    from monai_transfer.metrics.functional import compute_auc
    from scripts.bench.tta_xray import paired_auc_difference

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    noise = rng.random(100)
    same = paired_auc_difference(noise, noise, y, n_resamples=50)
    assert same == {"estimate": 0.0, "lower": 0.0, "upper": 0.0}  # one model against itself: exactly no difference
    better = paired_auc_difference(noise, (y + 0.1 * noise) / 1.1, y, n_resamples=50)  # b separates the classes
    assert better["estimate"] == pytest.approx(1.0 - compute_auc(noise, y)) and better["lower"] > 0


def test_recipe_winner_rule():
    rows = [
        {"recipe": "a", "cv_auc": 0.9800, "cv_ece": 0.02, "cpu_minutes": 10.0},
        {"recipe": "b", "cv_auc": 0.9805, "cv_ece": 0.01, "cpu_minutes": 20.0},  # tie on AUC, better ECE
        {"recipe": "c", "cv_auc": 0.9700, "cv_ece": 0.001, "cpu_minutes": 1.0},
    ]
    assert recipe_xray.choose_winner(rows)["recipe"] == "b"
    rows[1]["cv_ece"] = 0.02
    assert recipe_xray.choose_winner(rows)["recipe"] == "a"  # same ECE: fewer CPU minutes
    rows[0]["cv_auc"] = 0.9790
    assert recipe_xray.choose_winner(rows)["recipe"] == "b"  # no longer a tie
    with pytest.raises(ValueError, match="no recipe"):
        recipe_xray.choose_winner([])
    # over the CPU budget: reported, not eligible as the default (a CV-only row counts with its projected cost)
    rows.append({"recipe": "d", "cv_auc": 0.9900, "cv_ece": 0.001, "cpu_minutes": 25.0, "cpu_minutes_full": 37.5})
    assert recipe_xray.choose_winner(rows)["recipe"] == "b"
    assert recipe_xray.choose_winner(rows, budget=None)["recipe"] == "d"
    with pytest.raises(ValueError, match="budget"):
        recipe_xray.choose_winner(rows, budget=0.5)
    assert recipe_xray.recipe_overrides("ema")["ema_decay"] > 0
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_xray.recipe_overrides("nope")
    train_ids = json.loads((REPO_ROOT / "bundles" / "xray" / "configs" / "train.json").read_text())
    from scripts.bench.accuracy_xray import FINAL_VARIANT_KEYS

    def known(k: str) -> bool:  # a top-level id, a path into one (train#augmentation) or a key the script consumes
        return k.split("#")[0] in train_ids or k in FINAL_VARIANT_KEYS

    unknown = {k for r in recipe_xray.RECIPES.values() for k in r if not known(k)}
    assert not unknown, f"recipe_xray.RECIPES override ids that bundles/xray/configs/train.json lacks: {unknown}"


@requires_shared_data(PNEUMONIA_NPZ)
def test_label_efficiency_quick_is_resumable(tmp_path, monkeypatch):
    mod = _bench("label_efficiency", tmp_path, monkeypatch)
    out = tmp_path / "le"
    done = mod.main(["--quick", "--threads", "1", "--weights", "packaged", "--output", str(out)])
    assert [p.name for p in sorted(out.glob("*.json"))] == ["packaged_f0.5_s0.json"]
    r = json.loads((out / "packaged_f0.5_s0.json").read_text())
    assert r["run"]["fraction"] == 0.5 and r["run"]["weights"] == "packaged" and 0.0 <= r["val"]["auc"] <= 1.0
    assert len(done) == 1
    assert mod.main(["--quick", "--weights", "packaged", "--output", str(out)]) == []  # skipped: already done
    assert mod.plan([0.25, 0.01], [0, 1], ["packaged", "none"])[:2] == [("packaged", 0.01, 0), ("none", 0.01, 0)]
    assert mod.epochs_for(47, 32, 3, 100) == 100 and mod.epochs_for(4690, 32, 3, 100) == 3
    # val chose nothing: one validation after the last epoch, ACC at the fixed threshold 0.5
    assert r["val"]["threshold"] == 0.5 and r["run"]["val_interval"] == r["run"]["epochs"]
    assert r["config"]["threshold_method"].startswith("fixed 0.5") and r["config"]["ema_decay"] > 0


@requires_shared_data(PNEUMONIA_NPZ)
def test_speed_train_quick(tmp_path, monkeypatch):
    mod = _bench("speed_train", tmp_path, monkeypatch)
    res = mod.main(["--quick", "--threads", "1", "--output", str(tmp_path / "st.json")])
    saved = json.loads((tmp_path / "st.json").read_text())
    assert set(saved["throughput_img_s"]) == {"hand", "engine_bare", "engine_bundle"}
    assert all(v > 0 for v in saved["throughput_img_s"].values())
    assert saved["ratio_vs_hand"]["hand"] == 1.0
    assert res["images_per_round"] == 24


@requires_shared_data(PNEUMONIA_NPZ)
def test_speed_pipeline_quick(tmp_path, monkeypatch):
    mod = _bench("speed_pipeline", tmp_path, monkeypatch)
    res = mod.main(["--quick", "--threads", "1", "--output", str(tmp_path / "sp.json")])
    assert res["images"] == 4 and res["config"]["size"] == 256
    assert all(v > 0 for v in res["images_per_s"].values())
    # both pipelines produce [-1, 1] images of the same size, and the default resize is a block mean like the naive loop
    assert res["max_abs_diff_ours_vs_naive_first_image"] < 0.05
    assert json.loads((tmp_path / "sp.json").read_text())["caching_recommendation"]


def test_speed_inference_quick(tmp_path, monkeypatch):
    mod = _bench("speed_inference", tmp_path, monkeypatch)
    res = mod.main(["--quick", "--threads", "1", "--device", "cpu", "--output", str(tmp_path / "si.json")])
    assert res["gpu_measured"] is False
    assert {(r["variant"], r["batch"]) for r in res["rows"]} == {
        ("fp32", 1),
        ("fp32", 4),
        ("fp32_channels_last", 1),
        ("fp32_channels_last", 4),
    }
    assert all(r["latency_ms_per_image"] > 0 for r in res["rows"])


@requires_shared_data(ADRENAL_NPZ)
def test_volume_eval_memory_quick(tmp_path, monkeypatch):
    mod = _bench("volume_eval_memory", tmp_path, monkeypatch)
    res = mod.main(["--quick", "--threads", "1", "--output", str(tmp_path / "vm.json")])
    assert [r["volumes"] for r in res["rows"]] == [2, 4]
    assert res["all_exit_ok"], [r["log_tail"] for r in res["rows"]]
    assert all(r["peak_rss_mb"] > 50 for r in res["rows"])


@requires_shared_data(PNEUMONIA_NPZ)
def test_dedup_speed_quick(tmp_path, monkeypatch):
    mod = _bench("dedup_speed", tmp_path, monkeypatch)
    res = mod.main(["--quick", "--output", str(tmp_path / "dd.json")])
    a = res["accuracy"]
    assert a["n_true_pairs"] == 60 and a["recall"] >= 0.95 and a["precision"] >= 0.95
    for key in ("speed_png_256", "speed_dicom"):
        assert res[key]["cold_images_per_s"] > 0 and res[key]["cached_images_per_s"] > res[key]["cold_images_per_s"]
    report = _bench("make_report", tmp_path, monkeypatch).build_report(tmp_path, tmp_path / "r")
    assert "(`monai_transfer.data.duplicates`)\n\nNot run (no `dedup.json`)" in report
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "dedup.json").write_text((tmp_path / "dd.json").read_text())
    text = _bench("make_report", tmp_path, monkeypatch).build_report(tmp_path / "res", tmp_path / "r")
    assert "near-duplicate pairs built from 12 real PneumoniaMNIST radiographs" in text and "quick mode" in text


def test_make_report_from_results(tmp_path, monkeypatch):
    mod = _bench("make_report", tmp_path, monkeypatch)
    results = tmp_path / "results"
    (results / "label_efficiency").mkdir(parents=True)
    env = {"command": "python scripts/bench/x.py", "date": "2026-01-01", "machine": {"cpu": "test"}, "note": "n"}
    for w, f, s, auc in (("packaged", 0.01, 0, 0.9), ("packaged", 0.01, 1, 0.8), ("none", 0.01, 0, 0.6)):
        run = {"weights": w, "fraction": f, "seed": s, "n_train": 47, "min_steps": 100}
        (results / "label_efficiency" / f"{w}_f{f:g}_s{s}.json").write_text(
            json.dumps({"val": {"auc": auc}, "run": run, "env": env, "config": {}})
        )
    out = mod.main(["--results", str(results), "--output", str(tmp_path / "README.md")])
    text = out.read_text()
    assert "| 1% | 47 | 0.850 ± 0.050 | 2 | 0.600 (one seed) | 1 | +0.250 |" in text
    assert "Runs not done (27)" in text and "`none_f0.01_s1`" in text
    assert (tmp_path / "label_efficiency.png").stat().st_size > 1000
    assert "## 1. Accuracy: PneumoniaMNIST (xray bundle)\n\nNot run" in text
    assert "ResNet-50 + 3D | 0.828 | 0.745" in text
    assert "## 1b. Recipe comparison" in text and "Not run (no `recipe_xray/summary.json`)" in text
    assert "## 1d. Shift suite" in text and "Not run (no `shift_xray/results.json`)" in text


def test_make_report_recipe_table(tmp_path, monkeypatch):
    mod = _bench("make_report", tmp_path, monkeypatch)
    rx = _bench("recipe_xray", tmp_path, monkeypatch)
    results = tmp_path / "results"
    (results / "recipe_xray").mkdir(parents=True)
    env = {"command": "python scripts/bench/recipe_xray.py --recipes R", "date": "2026-01-01", "machine": {}}
    for name, auc, val in (("base", 0.990, 0.995), ("ls0.1", 0.992, None)):
        cv = {"folds": 3, "fold_sizes": [3, 3, 3], "epochs_planned": 3, "chosen": {"epochs": 2, "temperature": 1.5,
              "threshold": 0.4}, "mean_fold_auc": auc, "fold_auc_sd": 0.002, "oof_auc": auc, "oof_auc_ci95":
              [auc - 0.004, auc + 0.003], "oof_ece_before": 0.04, "oof_ece_after": 0.02}  # fmt: skip
        cfg = {"counts": {"train": 9, "val": 5}, "cpu_minutes": 12.5, "train_wall_s": 600}
        cmd = env["command"].replace("R", name)
        res = {"cv": cv, "config": cfg, "env": {**env, "command": cmd}, "recipe_overrides": rx.RECIPES[name]}
        if val is not None:
            res["val"] = {"auc": val, "auc_ci95": [0.99, 0.999], "acc": 0.97, "ece": 0.025, "ece_uncalibrated": 0.05,
                          "specificity": 0.9}  # fmt: skip
        (results / "recipe_xray" / f"{name}.json").write_text(json.dumps(res))
    summary = rx.summary_table(results / "recipe_xray")
    (results / "recipe_xray" / "summary.json").write_text(json.dumps(summary))
    text = mod.main(["--results", str(results), "--output", str(tmp_path / "README.md")]).read_text()
    assert summary["winner"] == "ls0.1"
    assert "| **ls0.1** (winner) | `label_smoothing=0.1` | 0.9920 ± 0.0020 | 0.9920 [0.9880, 0.9950] |" in text
    # no final fit yet: the cost with a final fit is projected (CV x folds / (folds - 1))
    assert "| 0.040 → 0.020 | 2/3 | n/a | n/a | n/a (n/a) | 12.5 (CV only; with final fit ≤ 18.8) | n/a |" in text
    base_row = (
        "| base | (base) | 0.9900 ± 0.0020 | 0.9900 [0.9860, 0.9930] | 0.040 → 0.020 | 2/3 | 0.9950 [0.9900, 0.9990]"
    )
    assert base_row in text and "| 0.970 | 0.025 (0.050) | 12.5 | yes |" in text
    assert "`python scripts/bench/recipe_xray.py --recipes base`" in text
    assert "| `recipe_xray.py` | 2 run(s) |" in text


def test_speed_gpu_quick_on_cpu(tmp_path, monkeypatch):
    """The GPU check's quick mode on CPU: the bundle trainer and the hand loop each time their iterations."""
    mod = _bench("speed_gpu", tmp_path, monkeypatch)
    res = mod.main(["--quick", "--threads", "1", "--device", "cpu", "--output", str(tmp_path / "gpu.json")])
    assert res["device_name"] == "cpu" and res["config"]["quick"] is True
    assert [(r["amp"], r["channels_last"], r["num_workers"]) for r in res["rows"]] == [
        (False, False, "0"), (False, True, "0")
    ]  # fmt: skip
    for r in res["rows"]:
        assert r["bundle"] > 0 and r["hand"] > 0 and r["bundle_over_hand"] == round(r["bundle"] / r["hand"], 3)
    assert (tmp_path / "gpu.md").read_text().startswith("Training images/s on cpu")


def test_scale_loader_and_memory_quick(tmp_path, monkeypatch):
    """Loader throughput per cache mode and workers; peak RSS per cache mode in fresh processes, auto's choice."""
    loader = _bench("scale_loader", tmp_path, monkeypatch).main(["--quick", "--output", str(tmp_path / "l.json")])
    assert set(loader["images_per_s"]) == {
        "ram_w0",
        "ram_auto",
        "disk_w0",
        "disk_auto",
        "ram_w0_item",
        "ram_auto_item",
        "ram_w0_tracked",
        "persistent_w0",
        "ram_auto_f32",
        "ram_w0_monai_affine",
    }
    assert all(v > 0 for v in loader["images_per_s"].values())
    assert set(loader["targets"]) == {"ram_auto_over_ram_w0", "disk_auto_over_ram_auto", "ram_w0_per_core"}
    assert all(isinstance(t["met"], bool) and t["value"] > 0 for t in loader["targets"].values())
    mod = _bench("scale_memory", tmp_path, monkeypatch)
    monkeypatch.setenv("MONAI_TRANSFER_BENCH_CACHE", str(tmp_path / "cache"))
    res = mod.main(["--quick", "--modes", "disk", "auto", "--output", str(tmp_path / "m.json")])
    assert [(r["mode"], r["n"]) for r in res["rows"]] == [("disk", 16), ("disk", 48), ("auto", 16), ("auto", 48)]
    assert res["summary"]["auto"]["chosen"] == {"16": "disk", "48": "disk"}  # a 0.05 MB budget holds neither
    assert all(r["peak_rss_mb"] > 0 for r in res["rows"]) and "growth_kb_per_image" in res["summary"]["disk"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
