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
"""Accuracy of the xray bundle on PneumoniaMNIST (MedMNIST v2), trained through the bundle's own code path.

The npz splits are written once as PNG files plus a CSV data list with a ``split`` column (the bundle's
``dataset_dir`` accepts it). Then :func:`monai_transfer.cv.run_cross_validation` runs the bundle's own
``bundles/xray/configs/train.json`` (``monai.bundle.ConfigWorkflow``, the RECIPE as overrides) as ``K``-fold
cross-validation on the TRAIN split only: the number of epochs (best mean fold AUC), the temperature (fitted on the
out-of-fold predictions) and the Youden threshold (on the calibrated out-of-fold predictions) are chosen there; the
final model is trained on the whole train split for the chosen number of epochs. Val (and, with ``--test``, a
held-out split) are scored once, with that calibration and threshold: neither split chooses anything.

Output ``<output>/results.json``: ``{"val": {...}, "test": {...} (only with --test), "cv": {...}, "config": {...},
"env": {...}}`` with AUC, ACC (95% stratified bootstrap CIs), ECE after calibration (``ece``) and before
(``ece_uncalibrated``), sensitivity and specificity at the threshold.

Usage (from the repository root)::

    python -m scripts.bench.accuracy_xray --output benchmarks/results/accuracy_xray
    python -m scripts.bench.accuracy_xray --test pneumoniamnist_28_test.npz --output /tmp/acc
    python -m scripts.bench.accuracy_xray --quick --output /tmp/acc_quick

The maintainers score a held-out split with the path form, which runs the same module::

    python scripts/bench/accuracy_xray.py --test PATH.npz --output DIR
"""

from __future__ import annotations

import argparse
import logging
import runpy
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if __name__ == "__main__" and not __package__:  # run as a path (python scripts/bench/<name>.py): run as the module
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    runpy.run_module(f"scripts.bench.{Path(__file__).stem}", run_name="__main__", alter_sys=True)
    sys.exit()

from scripts.bench import common

__all__ = [
    "RECIPE",
    "QUICK_RECIPE",
    "CLASS_NAMES",
    "prepare_data",
    "train_bundle",
    "predict",
    "inference_overrides",
    "summarise",
    "cross_validate",
    "cv_block",
    "run",
    "CV_FOLDS",
    "main",
    "no_val_choice_overrides",
    "SHIFT_CASES",
    "shift_probs",
    "oof_shift",
    "shift_summary",
    "shift_robust_choice",
    "fold_ensemble",
    "FINAL_VARIANT_KEYS",
]

CLASS_NAMES = ["normal", "pneumonia"]
BUNDLE = common.REPO_ROOT / "bundles" / "xray"
#: the recipe before the CV recipe comparison (scripts/bench/recipe_xray.py): bundle defaults (EfficientNet-Lite0,
#: packaged ImageNet weights, full fine-tuning, AdamW 1e-3, cosine, RandAffine/intensity augmentation, class weights)
#: at 64x64 for 3 epochs over the full train split
BASE_RECIPE: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0",
    "weights": "packaged",
    "fine_tune": "full",
    "image_size": 64,
    "epochs": 3,
    "batch_size": 32,
    "learning_rate": 0.001,
    "seed": 0,
    "label_smoothing": 0.0,
    "ema_decay": 0.0,
    "aug_strength": 1.0,
    "shift_aug_prob": 0.0,
}
#: the recipe: BASE_RECIPE plus the winner of recipe_xray.py (3-fold CV on the train split, never val), by its
#: pre-declared rule (best mean fold AUC within the 30 single-thread CPU-minute budget, differences under TIE_AUC
#: 0.001 broken by the lower calibrated out-of-fold ECE). Round 1 (2026-12-02): weight EMA (decay 0.99) tied the base
#: (0.9937 vs 0.9939) with the lower ECE (0.0091 vs 0.0104). Round 2: EMA with 6 planned epochs has the best CV AUC
#: (0.9958) but costs 36.5 CPU minutes, over the budget: the documented longer recipe ``--epochs 6``. Round 3: mixup,
#: cutmix, layer decay and a 10x head LR did not beat it; EMA on EfficientNet-Lite1 (packaged weights, installed with
#: the project) has the best CV AUC within the budget (0.9944, ties the base) and the lowest calibrated out-of-fold
#: ECE (0.0039), 20.3 CPU minutes. Round 4 (issue 31, 2026-12-07), with the shift-aware rule (among recipes within
#: 0.003 of the best mean fold AUC, the best out-of-fold shift-suite AUC): the acquisition-shift augmentation
#: (``shift_aug_prob`` 0.3) won. See benchmarks/results/recipe_xray/summary.json.
RECIPE: dict[str, Any] = {**BASE_RECIPE, "ema_decay": 0.99, "backbone": "tf_efficientnet_lite1", "shift_aug_prob": 0.3}
QUICK_BASE_RECIPE: dict[str, Any] = {**BASE_RECIPE, "image_size": 32, "epochs": 1, "batch_size": 16}
QUICK_RECIPE: dict[str, Any] = {**RECIPE, "image_size": 32, "epochs": 1, "batch_size": 16}


def no_val_choice_overrides(epochs: int, threshold: float | str = 0.5) -> dict[str, Any]:
    """Bundle overrides under which val chooses nothing: one validation after the last epoch, no early stop, no
    threshold selection (``threshold``: a value or a ``threshold.json`` chosen elsewhere) and no calibration (the
    best-model saver then keeps the last epoch)."""
    return {
        "val_interval": epochs,
        "early_stop_patience": 0,
        "calibrate": False,
        "validate#report_writer#select_threshold_on": None,
        "validate#report_writer#threshold_path": None,
        "validate#report_writer#threshold": threshold,
    }


#: folds of the cross-validation on the train split that chooses epochs, temperature and threshold
CV_FOLDS = 3
#: recipe keys this script consumes itself (not bundle ids): ``final_model`` ("single", or "fold_ensemble": the CV fold
#: models averaged (``ProbabilityEnsemble``) are scored in place of the final fit, with the OOF temperature and
#: threshold) and ``use_tta`` (the bundle's test-time augmentation for every prediction of the run: val, test and the
#: out-of-fold shift suite, so the shift-robust threshold is fitted under TTA)
FINAL_VARIANT_KEYS = ("final_model", "use_tta")
#: cases of each shift-suite run (16 families x 5 severities = 80 passes over them): a class-stratified, seeded
#: subsample of the out-of-fold items (pooled over the fold models), of val and of test; quick runs use the tiny sets
SHIFT_CASES = 200
#: the pre-declared rule for the xray default operating point (issue 31), on out-of-fold data only: the shift-robust
#: threshold replaces the Youden threshold as the default when, on the OOF shift suite, it raises the worst family's
#: balanced accuracy by at least this much ...
SHIFT_ROBUST_MIN_GAIN = 0.01
#: ... while the clean OOF balanced accuracy drops by at most this much
SHIFT_ROBUST_MAX_CLEAN_LOSS = 0.005
QUICK_LIMITS = {"train": 64, "val": 48, "test": 32}


def prepare_data(
    npz: Path, cache: Path, fraction: float = 1.0, seed: int = 0, quick: bool = False
) -> tuple[Path, dict[str, int]]:
    """PNG files + CSV for the train (optionally a stratified ``fraction``) and val splits; returns (csv, counts)."""
    with np.load(npz) as z:
        y_train = z["train_labels"].reshape(-1)
    subset = common.stratified_fraction(y_train, fraction, seed) if fraction < 1.0 else None
    tag = f"f{fraction:g}_s{seed}" + ("_quick" if quick else "")
    csv = common.npz_to_png_csv(
        npz,
        cache,
        f"datalist_{tag}.csv",
        {"train": "train", "val": "val"},
        CLASS_NAMES,
        subsets={"train": subset},
        limit=QUICK_LIMITS if quick else None,
    )
    counts: dict[str, int] = {}
    for line in csv.read_text().splitlines()[1:]:
        s = line.rsplit(",", 1)[1]
        counts[s] = counts.get(s, 0) + 1
    return csv, counts


def train_bundle(dataset_dir: Path, output_dir: Path, recipe: dict[str, Any], **extra: Any) -> Any:
    """Run ``bundles/xray/configs/train.json`` through ``ConfigWorkflow`` with the recipe as overrides.

    Returns:
        the finished workflow; the model it kept is ``output_dir/models/model.pt``.
    """
    from monai.bundle import ConfigWorkflow

    overrides = {**recipe, **extra, "dataset_dir": str(dataset_dir), "output_dir": str(output_dir)}
    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "train.json"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def inference_overrides(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe's values for the ids that ``bundles/xray/configs/inference.json`` also has (backbone, head, image
    size, ...), so inference builds the network and preprocessing the recipe trained; training-only ids are dropped."""
    ids = set(common.read_result(BUNDLE / "configs" / "inference.json")) - {"dataset_dir", "output_dir", "input_dir"}
    return {k: v for k, v in recipe.items() if k in ids}


def predict(
    ckpt: Path,
    items: list[dict[str, Any]],
    recipe: dict[str, Any],
    calibrated: bool = True,
    batch_size: int = 128,
    tta: bool = False,
) -> np.ndarray:
    """Positive-class probabilities of ``items`` through the bundle's one inference path.

    :func:`monai_transfer.evaluate.evaluate_bundle` runs ``bundles/xray/configs/inference.json`` (its preprocessing,
    network and temperature) on the checkpoint ``ckpt``, as ``python -m monai_transfer.evaluate`` would.

    Args:
        ckpt: the trained ``models/model.pt``; its ``calibration.json`` applies when ``calibrated``.
        items: ``{"image": path, ...}`` dicts; the result is in their order.
        recipe: the recipe the checkpoint was trained with (see :func:`inference_overrides`).
        calibrated: apply the ``calibration.json`` beside ``ckpt`` (when there is one); False: raw probabilities.
        batch_size: inference batch size.
        tta: run the bundle's test-time augmentation (``use_tta``: its ``tta_inferer``); False: the recipe's
            ``use_tta`` (off unless a recipe sets it, see :data:`FINAL_VARIANT_KEYS`).

    Raises:
        RuntimeError: some item could not be evaluated (the message names it and the reason).
    """
    from monai_transfer.evaluate import evaluate_bundle

    with tempfile.TemporaryDirectory(prefix="bench_xray_predict_") as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        for i, item in enumerate(items):  # one flat folder, the item index as the name: order survives
            src = Path(item["image"])
            shutil.copyfile(src, images / f"{i:07d}{src.suffix}")
        result = evaluate_bundle(
            BUNDLE, images, Path(tmp) / "eval", ckpt=ckpt, threshold=0.5, batch_size=batch_size,
            calibration=None if calibrated else "none", overrides=inference_overrides(recipe), progress=False,
            tta=True if tta else None,
        )  # fmt: skip
        if result.failures:
            f = result.failures[0]
            raise RuntimeError(f"{len(result.failures)} of {len(items)} items failed; first: {f.path}: {f.reason}")
        probs = np.full(len(items), np.nan)
        for pred in result.predictions:
            probs[int(Path(pred.path).name.split(".")[0])] = float(np.asarray(pred.probs).reshape(-1)[1])
    if np.isnan(probs).any():
        raise RuntimeError(f"{int(np.isnan(probs).sum())} of {len(items)} items got no prediction")
    return probs


def summarise(
    y_prob: np.ndarray,
    y_true: np.ndarray,
    threshold: float,
    n_bootstrap: int = 1000,
    class_names: list[str] | None = None,
    y_prob_uncalibrated: np.ndarray | None = None,
) -> dict[str, Any]:
    """AUC, ACC (at ``threshold``), ECE and more, with 95% stratified bootstrap CIs for AUC and ACC.

    ``y_prob`` are the probabilities the threshold applies to (calibrated when a temperature was fitted);
    ``y_prob_uncalibrated`` adds ``ece_uncalibrated``; ``ece_noise_floor`` is the ECE that sampling alone gives a
    perfectly calibrated model with these probabilities on this many cases (:func:`compute_ece_noise_floor`).
    """
    from monai_transfer.metrics.bootstrap import bootstrap_ci
    from monai_transfer.metrics.functional import compute_classification_metrics, compute_ece, compute_ece_noise_floor

    names = list(class_names or CLASS_NAMES)
    m = compute_classification_metrics(y_prob, y_true, "binary", threshold, names)
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "n_positive": int(np.sum(y_true)),
        "threshold": float(threshold),
        "auc": m["auc"],
        "acc": m["accuracy"],
        "ece": compute_ece(y_prob, y_true, "binary"),
        "balanced_accuracy": m["balanced_accuracy"],
        "sensitivity": m["sensitivity"],
        "specificity": m["specificity"],
        "acc_at_0.5": compute_classification_metrics(y_prob, y_true, "binary", 0.5, names)["accuracy"],
    }
    if y_prob_uncalibrated is not None:
        out["ece_uncalibrated"] = compute_ece(y_prob_uncalibrated, y_true, "binary")
    # the ECE a perfectly calibrated model with these probabilities shows on this many cases (sampling alone)
    out["ece_noise_floor"] = compute_ece_noise_floor(y_prob)
    if n_bootstrap > 0:
        for key, metric in (("auc", "auc"), ("acc", "accuracy")):
            ci = bootstrap_ci(y_prob, y_true, metric, threshold=threshold, n_resamples=n_bootstrap, seed=0)
            out[f"{key}_ci95"] = [ci["lower"], ci["upper"]]
    return out


def cross_validate(
    dataset_dir: Path,
    output_dir: Path,
    recipe: dict[str, Any],
    folds: int,
    final_fit: bool = True,
    reuse_cv: bool = False,
    **extra: Any,
) -> Any:
    """K-fold CV on the train split + final fit (:func:`monai_transfer.cv.run_cross_validation`).

    With ``reuse_cv`` and a CV-only run already in ``output_dir`` (``cv/cv.json``), the folds are not rerun: the final
    fit uses that run's chosen epochs and ``models/threshold.json`` (the same settings ``run_cross_validation``
    applies in its own final fit).

    Returns:
        ``(cv summary, parser)``: the parser holds the bundle config with the recipe (its ``datalists``); the final
        model is ``output_dir/models/model.pt``. ``None`` in place of the parser when ``final_fit`` is False.
    """
    from monai.bundle import ConfigParser

    from monai_transfer.cv import run_cross_validation

    overrides = {**recipe, **extra, "dataset_dir": str(dataset_dir), "output_dir": str(output_dir)}
    cv_json = Path(output_dir) / "cv" / "cv.json"
    if reuse_cv and final_fit and cv_json.is_file():
        summary = common.read_result(cv_json)
        best = int(summary["chosen"]["epochs"])
        train_bundle(
            dataset_dir, output_dir, recipe, **extra,
            **{"train#trainer#max_epochs": best, **no_val_choice_overrides(best, summary["files"]["threshold"])},
        )  # fmt: skip
        summary["files"]["model"] = str(Path(output_dir) / "models" / "model.pt")
        summary["final_fit_reused_cv"] = True
    else:
        summary = run_cross_validation(
            str(BUNDLE / "configs" / "train.json"),
            folds=folds,
            meta_file=str(BUNDLE / "configs" / "metadata.json"),
            logging_file=False,
            threshold_method="youden",
            calibrate=True,
            final_fit=final_fit,
            **overrides,
        )
    if not final_fit:
        return summary, None
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update(pairs=overrides)
    return summary, parser


def cv_block(summary: dict[str, Any]) -> dict[str, Any]:
    """The parts of ``cv/cv.json`` a benchmark JSON keeps (per-epoch fold AUCs, choices, OOF calibration/AUC CI)."""
    oof = common.read_result(summary["files"]["oof_report"]) or {}
    metrics = oof.get("metrics", {})
    cal = summary.get("calibration") or {}
    chosen = summary["chosen"]
    ci = oof.get("confidence_intervals", {}).get("auc")
    best = next(e for e in summary["per_epoch"] if e["epoch"] == chosen["epochs"])
    fold_auc = [a for a in best["fold_auc"] if a is not None]
    return {
        "folds": summary["folds"],
        "fold_sizes": summary["fold_sizes"],
        "epochs_planned": summary["epochs_planned"],
        "per_epoch": summary["per_epoch"],
        "chosen": chosen,
        "mean_fold_auc": float(np.mean(fold_auc)),
        "fold_auc_sd": float(np.std(fold_auc, ddof=1)) if len(fold_auc) > 1 else None,
        "oof_auc": metrics.get("auc"),
        "oof_auc_ci95": [ci["lower"], ci["upper"]] if ci else None,
        "oof_ece_before": cal.get("ece_before"),
        "oof_ece_after": cal.get("ece_after"),
        "oof_metrics": metrics,
        "selection": summary["selection"],
    }


def shift_probs(
    ckpt: Path, paths: list[str], recipe: dict[str, Any], calibration: Path | str | None = None
) -> tuple[np.ndarray, dict[str, dict[int, np.ndarray]]]:
    """Clean and shifted positive-class probabilities of ``paths`` through the bundle's inference components
    (:func:`monai_transfer.evaluate.shift.bundle_shift_predictions`, the path of ``evaluate --shift_suite``)."""
    from monai_transfer.evaluate.shift import bundle_shift_predictions

    return bundle_shift_predictions(
        BUNDLE, ckpt, paths, overrides=inference_overrides(recipe), calibration=calibration, device="cpu"
    )


def fold_ensemble(
    work_dir: Path, recipe: dict[str, Any], bundle: Path = BUNDLE, overrides: dict[str, Any] | None = None
) -> tuple[Path, dict[str, Any]]:
    """The CV fold models (``cv/fold_<k>/models/model.pt``) combined into one ``ProbabilityEnsemble`` checkpoint
    (``models/fold_ensemble/model.pt``, with the OOF ``calibration.json`` and ``threshold.json`` beside it); returns it
    and the recipe with ``num_members`` (the bundle's ensemble id). ``bundle`` is the bundle folder whose
    ``inference.json`` builds the members, with ``overrides`` (default this script's :func:`inference_overrides`)."""
    from monai.bundle import ConfigParser

    from monai_transfer.networks.checkpoint_record import write_ensemble_record
    from monai_transfer.networks.nets import save_ensemble_checkpoint

    members = sorted((Path(work_dir) / "cv").glob("fold_*/models/model.pt"), key=lambda p: int(p.parts[-3][5:]))
    if len(members) < 2:
        raise RuntimeError(f"{work_dir}/cv holds {len(members)} fold model(s); a fold ensemble needs 2 or more")
    parser = ConfigParser()
    parser.read_config(str(Path(bundle) / "configs" / "inference.json"))
    ids = inference_overrides(recipe) if overrides is None else overrides
    parser.update(pairs={**ids, "bundle_root": str(bundle)})
    parser.get_parsed_content("imports")
    dest = Path(work_dir) / "models" / "fold_ensemble" / "model.pt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_ensemble_checkpoint(parser.get_parsed_content("member_def"), [str(m) for m in members], dest)
    write_ensemble_record(members, dest)  # loading the ensemble checks the members' settings
    for name in ("calibration.json", "threshold.json"):  # the OOF choices, for the ensemble of the same fold models
        if (Path(work_dir) / "models" / name).is_file():
            shutil.copyfile(Path(work_dir) / "models" / name, dest.parent / name)
    return dest, {**recipe, "num_members": len(members)}


def _subsample(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a class-stratified, seeded subsample of ``n`` (all when ``len(y) <= n``)."""
    if len(y) <= n:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(y == c), max(1, round(n * np.mean(y == c))), replace=False) for c in (0, 1)]
    return np.sort(np.concatenate(keep))


def oof_shift(
    work_dir: Path, recipe: dict[str, Any], n_cases: int = SHIFT_CASES
) -> tuple[np.ndarray, np.ndarray, dict[str, dict[int, np.ndarray]]]:
    """Out-of-fold predictions under the shift suite: each CV fold model (``cv/fold_<k>/models/model.pt``, its best
    epoch on its own held-out fold) predicts a stratified subsample of its held-out items (``n_cases`` in all), with
    the temperature fitted on the OOF predictions (``models/calibration.json``); pooled over the folds.

    Returns:
        ``(labels, clean probabilities, {family: {severity: probabilities}})``.
    """
    folds = sorted(
        (d.parent for d in (Path(work_dir) / "cv").glob("fold_*/datalists.json")), key=lambda d: int(d.name[5:])
    )
    if not folds:
        raise RuntimeError(f"{work_dir}/cv has no fold_<k> folder: the CV fold models are needed for the OOF suite")
    calibration = Path(work_dir) / "models" / "calibration.json"
    ys, cleans, shifted_parts = [], [], []
    for fold in folds:
        held = common.read_result(fold / "datalists.json")["val"]
        y = np.asarray([int(x["label"]) for x in held])
        idx = _subsample(y, max(2, n_cases // len(folds)), seed=int(fold.name[5:]))
        clean, shifted = shift_probs(fold / "models" / "model.pt", [held[i]["image"] for i in idx], recipe,
                                     calibration if calibration.is_file() else "none")  # fmt: skip
        ys.append(y[idx])
        cleans.append(clean)
        shifted_parts.append(shifted)
    pooled = {f: {s: np.concatenate([p[f][s] for p in shifted_parts]) for s in shifted_parts[0][f]}
              for f in shifted_parts[0]}  # fmt: skip
    return np.concatenate(ys), np.concatenate(cleans), pooled


def shift_summary(scores: dict[str, Any]) -> dict[str, Any]:
    """The parts of :func:`~monai_transfer.metrics.shift.score_shift_suite`'s scores a results JSON keeps."""
    fams = {
        k: {m: f[m] for m in ("mean_auc", "worst_auc", "worst_sensitivity", "worst_specificity", "worst_ece")}
        for k, f in scores["families"].items()
    }
    keep = ("threshold", "clean", "suite_auc", "worst", "worst_family_auc", "worst_family_balanced_accuracy")
    return {**{k: scores[k] for k in keep}, "families": fams}


def shift_robust_choice(
    y: np.ndarray, clean: np.ndarray, shifted: dict[str, dict[int, np.ndarray]], youden: float
) -> dict[str, Any]:
    """The shift-robust threshold on the OOF suite, how it was chosen, and the pre-declared rule's verdict on making it
    the default (:data:`SHIFT_ROBUST_MIN_GAIN`, :data:`SHIFT_ROBUST_MAX_CLEAN_LOSS`; OOF data only)."""
    from monai_transfer.metrics.shift import score_shift_suite
    from monai_transfer.metrics.threshold import select_shift_robust_threshold

    t, info = select_shift_robust_threshold(y, clean, shifted)
    at = {name: score_shift_suite(y, clean, shifted, thr, prevalence_levels=None) for name, thr in
          (("youden", youden), ("shift_robust", t))}  # fmt: skip
    worst = {k: min(f["mean_balanced_accuracy"] for f in v["families"].values()) for k, v in at.items()}
    worst = {k: min(w, at[k]["clean"]["balanced_accuracy"]) for k, w in worst.items()}
    gain = worst["shift_robust"] - worst["youden"]
    loss = at["youden"]["clean"]["balanced_accuracy"] - at["shift_robust"]["clean"]["balanced_accuracy"]
    adopt = gain >= SHIFT_ROBUST_MIN_GAIN and loss <= SHIFT_ROBUST_MAX_CLEAN_LOSS
    return {
        "threshold": t,
        "chosen_on": f"out-of-fold predictions of the CV fold models under the shift suite ({len(y)} cases)",
        **info,
        "youden_threshold": youden,
        "worst_family_balanced_accuracy": worst,
        "clean_balanced_accuracy": {k: v["clean"]["balanced_accuracy"] for k, v in at.items()},
        "rule": (
            f"{info['rule']}; becomes the default if the worst-family balanced accuracy gains >= "
            f"{SHIFT_ROBUST_MIN_GAIN} over Youden and the clean OOF balanced accuracy loses <= "
            f"{SHIFT_ROBUST_MAX_CLEAN_LOSS}"
        ),  # fmt: skip
        "meets_default_rule": bool(adopt),
    }


def run(
    npz: Path,
    output: Path,
    recipe: dict[str, Any],
    test_npz: Path | None = None,
    fraction: float = 1.0,
    data_seed: int = 0,
    quick: bool = False,
    n_bootstrap: int = 1000,
    work_dir: Path | None = None,
    extra: dict[str, Any] | None = None,
    folds: int | None = None,
    cv_only: bool = False,
    reuse_cv: bool = False,
    val_chooses: bool = True,
    shift_cases: int = SHIFT_CASES,
) -> dict[str, Any]:
    """Train with the bundle, score val (and test) and write ``output/results.json``; returns the results.

    With ``folds`` (>= 2), epochs, temperature and threshold are chosen by ``folds``-fold CV on the train split
    (:func:`cross_validate`) and val only reports. Without (``None``: the protocol ``label_efficiency.py`` still
    used before 2026-12-02), the bundle keeps the best epoch on val and the Youden threshold on val; with
    ``val_chooses=False`` as well, val chooses nothing: the run validates once, after its last epoch (the weights scored
    are the last epoch's), and the threshold is 0.5 (``label_efficiency.py``). ``cv_only``: stop after the CV
    (no final fit, val not scored; keep ``work_dir`` to finish it later with ``reuse_cv``, see :func:`cross_validate`).

    Shift suite (``shift_cases`` > 0, issue 31): with CV, the fold models' out-of-fold predictions under the suite
    (:func:`oof_shift`) give ``cv["shift"]`` (suite AUC etc. at the CV threshold) and the shift-robust operating point
    (``results["operating_points"]``, chosen there, never on val/test); val and test are re-scored under the suite
    (``<split>["shift"]``, ``<output>/shift_<split>/shift.{json,md,png}``) at the shipped threshold, and at the
    shift-robust one (``<split>["at_shift_robust"]``). ``shift_cases`` cases of each (stratified subsample).
    """
    import torch

    from monai_transfer.metrics.calibration import load_calibration
    from monai_transfer.metrics.shift import score_shift_suite
    from monai_transfer.metrics.threshold import load_threshold

    recipe = dict(recipe)
    variants = {k: recipe.pop(k) for k in FINAL_VARIANT_KEYS if k in recipe}
    tta = {"use_tta": True} if variants.get("use_tta") else {}
    env = common.environment()
    cpu0 = _cpu_seconds()
    cache = common.CACHE_DIR / ("pneumonia_png_quick" if quick else "pneumonia_png")
    csv, counts = prepare_data(npz, cache, fraction, data_seed, quick)
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_xray_")
        work_dir = Path(tmp.name)
    t0 = time.perf_counter()
    cv: dict[str, Any] | None = None
    robust: dict[str, Any] | None = None
    temperature = 1.0
    if folds:
        summary, parser = cross_validate(
            csv, work_dir, recipe, int(folds), final_fit=not cv_only, reuse_cv=reuse_cv, n_bootstrap=n_bootstrap,
            **(extra or {}),
        )  # fmt: skip
        cv = cv_block(summary)
        temperature = float(load_calibration(work_dir / "models" / "calibration.json"))
        if shift_cases:
            oof = oof_shift(work_dir, {**recipe, **(extra or {}), **tta}, shift_cases)
            youden = float(cv["chosen"]["threshold"])
            cv["shift"] = shift_summary(score_shift_suite(*oof, youden))
            robust = shift_robust_choice(*oof, youden)
            _save_shift_robust(Path(output), robust, work_dir / "models" / "calibration.json")
        if parser is None:  # CV only
            results = {"cv": cv, "config": {**recipe, **(extra or {}), "counts": counts, "cv_folds": folds,
                                            "cv_only": True, "train_wall_s": round(time.perf_counter() - t0, 1),
                                            "cpu_minutes": round((_cpu_seconds() - cpu0) / 60.0, 2),
                                            "torch_threads": torch.get_num_threads(), "quick": quick}}  # fmt: skip
            results["env"] = common.finish_environment(env)
            common.write_result(Path(output) / "results.json", results)
            if tmp is not None:
                tmp.cleanup()
            return results
    else:
        fixed = {} if val_chooses else no_val_choice_overrides(int(recipe["epochs"]))
        parser = train_bundle(csv, work_dir, recipe, n_bootstrap=n_bootstrap, **{**(extra or {}), **fixed}).parser
    train_s = time.perf_counter() - t0
    ckpt = work_dir / "models" / "model.pt"
    scored_with = {**recipe, **(extra or {}), **tta}
    if variants.get("final_model", "single") == "fold_ensemble":
        if not folds:
            raise ValueError("final_model 'fold_ensemble' needs the CV fold models: run with --folds")
        ckpt, scored_with = fold_ensemble(work_dir, scored_with)
    threshold = float(load_threshold(work_dir / "models" / "threshold.json")) if folds or val_chooses else 0.5
    datalists = parser.get_parsed_content("datalists")
    bundle_val = common.read_result(work_dir / "eval" / "val" / "metrics.json") or {}

    def score(items: list[dict[str, Any]], split: str) -> dict[str, Any]:
        p_raw = predict(ckpt, items, scored_with, calibrated=False)
        p_cal = predict(ckpt, items, scored_with) if folds else p_raw
        y = np.asarray([x["label"] for x in items])
        out = summarise(p_cal, y, threshold, n_bootstrap, y_prob_uncalibrated=p_raw)
        if shift_cases:
            where = Path(output) / f"shift_{split}"
            out.update(_score_shift(ckpt, items, y, p_cal, scored_with, threshold, robust, where, shift_cases,
                                    calibrated=bool(folds)))  # fmt: skip
        return out

    results: dict[str, Any] = {"val": score(datalists["val"], "val")}
    results["val"]["bundle_report_auc"] = bundle_val.get("metrics", {}).get("auc")
    if test_npz is not None:
        test_dir = Path(tempfile.mkdtemp(prefix="bench_xray_test_"))
        from monai_transfer.data.npz import datalist_from_npz

        items = datalist_from_npz(test_npz, "test", test_dir, fmt="png")
        if quick:
            items = items[: QUICK_LIMITS["test"]]
        results["test"] = score(items, "test")
        results["test"]["source"] = str(test_npz)
        shutil.rmtree(test_dir, ignore_errors=True)
    if cv is not None:
        results["cv"] = cv
    if robust is not None:
        results["operating_points"] = {"shipped": "youden (models/threshold.json)", "shift_robust": robust}
    results["config"] = {
        **recipe,
        **(extra or {}),
        "bundle": "bundles/xray/configs/train.json",
        "data": str(npz),
        "train_fraction": fraction,
        "data_seed": data_seed,
        "counts": counts,
        "cv_folds": folds,
        "threshold_method": (
            f"youden on the calibrated out-of-fold predictions of {folds}-fold CV on train (models/threshold.json)"
            if folds
            else "youden on val (models/threshold.json)"
            if val_chooses
            else "fixed 0.5; last epoch's weights (val chose nothing)"
        ),
        "calibration": f"temperature {temperature:.4g} fitted on the out-of-fold predictions" if folds else None,
        "final_model": variants.get("final_model", "single"),
        "use_tta": bool(variants.get("use_tta", False)),
        "shift_cases": shift_cases,
        "n_bootstrap": n_bootstrap,
        "train_wall_s": round(train_s, 1),
        "cpu_minutes": round((_cpu_seconds() - cpu0) / 60.0, 2),
        "torch_threads": torch.get_num_threads(),
        "quick": quick,
    }
    results["env"] = common.finish_environment(env)
    common.write_result(Path(output) / "results.json", results)
    if tmp is not None:
        tmp.cleanup()
    return results


def _save_shift_robust(output: Path, robust: dict[str, Any], calibration: Path) -> Path:
    """``<output>/threshold_shift_robust.json``: the shift-robust threshold as a threshold file (how it was chosen,
    bound to the OOF calibration), usable as ``python -m monai_transfer.evaluate --threshold FILE``."""
    from monai_transfer.metrics.threshold import calibration_binding, save_threshold

    info = {k: v for k, v in robust.items() if k not in ("threshold", "method", "target_sensitivity")}
    binding = calibration_binding(calibration if calibration.is_file() else None)
    output.mkdir(parents=True, exist_ok=True)
    return save_threshold(
        output / "threshold_shift_robust.json",
        robust["threshold"],
        method=robust["method"],
        target_sensitivity=robust["target_sensitivity"],
        mode="binary",
        **info,
        **binding,
    )


def _score_shift(
    ckpt: Path,
    items: list[dict[str, Any]],
    y: np.ndarray,
    p_cal: np.ndarray,
    recipe: dict[str, Any],
    threshold: float,
    robust: dict[str, Any] | None,
    out_dir: Path,
    n_cases: int,
    calibrated: bool,
) -> dict[str, Any]:
    """``{"shift": ..., "at_shift_robust": ...}`` of one scored split: the suite on a stratified subsample at the
    shipped threshold (report files in ``out_dir``), and the split's clean and shifted rates at the shift-robust
    threshold chosen out-of-fold (``robust``)."""
    from monai_transfer.metrics.shift import score_condition, score_shift_suite
    from monai_transfer.reports.shift import write_shift_report

    t0 = time.perf_counter()
    idx = _subsample(y, n_cases)
    clean, shifted = shift_probs(ckpt, [items[i]["image"] for i in idx], recipe, None if calibrated else "none")
    scores = score_shift_suite(y[idx], clean, shifted, threshold)
    scores["meta"] = {"n_cases": int(len(idx)), "n_split": int(len(y)), "wall_s": round(time.perf_counter() - t0, 1)}
    write_shift_report(out_dir, scores)
    out: dict[str, Any] = {"shift": {**shift_summary(scores), "n_cases": int(len(idx)), "files": str(out_dir)}}
    if robust is not None:
        t = float(robust["threshold"])
        at = shift_summary(score_shift_suite(y[idx], clean, shifted, t))
        full = score_condition(p_cal, y, t)
        full["acc"] = float(np.mean((p_cal >= t) == (y == 1)))
        out["at_shift_robust"] = {"threshold": t, "clean": full, "shift": at}
    return out


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its children so far."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "accuracy_xray")
    parser.add_argument("--npz", type=Path, default=common.PNEUMONIA_NPZ, help="train/val npz (MedMNIST keys)")
    parser.add_argument("--test", type=Path, default=None, help="npz with test_images/test_labels to score")
    parser.add_argument("--weights", default=None, help="'packaged' (ImageNet, default) or 'none' (from scratch)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--n-bootstrap", type=int, default=None)
    parser.add_argument("--folds", type=int, default=None, help=f"CV folds on train (default {CV_FOLDS}; quick 2)")
    parser.add_argument(
        "--shift-cases",
        type=int,
        default=SHIFT_CASES,
        help=f"cases per shift-suite run (default {SHIFT_CASES}; 0: off)",
    )
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    common.set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    recipe = dict(QUICK_RECIPE if args.quick else RECIPE)
    for key, val in (
        ("weights", args.weights),
        ("epochs", args.epochs),
        ("image_size", args.image_size),
        ("seed", args.seed),
    ):
        if val is not None:
            recipe[key] = val
    n_boot = args.n_bootstrap if args.n_bootstrap is not None else (50 if args.quick else 1000)
    folds = args.folds if args.folds is not None else (2 if args.quick else CV_FOLDS)
    res = run(
        args.npz, args.output, recipe, args.test, quick=args.quick, n_bootstrap=n_boot, folds=folds,
        shift_cases=args.shift_cases,
    )  # fmt: skip
    for split in ("val", "test"):
        if split in res:
            r = res[split]
            print(
                f"{split}: AUC {r['auc']:.4f} {r.get('auc_ci95')}  ACC {r['acc']:.4f} {r.get('acc_ci95')}"
                f"  ECE {r['ece']:.4f}  (threshold {r['threshold']:.3f}, n={r['n']})"
            )
            if "shift" in r:
                w = r["shift"]["worst"].get("auc", {})
                suite = r["shift"]["suite_auc"]
                print(f"{split} shift suite: AUC {suite:.4f}, worst {w.get('value')} ({w.get('family')})")
    print(f"wrote {Path(args.output) / 'results.json'}")
    return res


if __name__ == "__main__":
    main()
