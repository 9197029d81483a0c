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
"""Volume-level accuracy of the ct_slices bundle on AdrenalMNIST3D (MedMNIST v2) under the cross-validation protocol.

The npz volumes are written once as NIfTI files (:func:`monai_transfer.data.datalist_from_npz`) with a CSV data list
(``split`` column; ``patient_id`` = the volume) that the bundle's ``dataset_dir`` accepts. Then
:func:`monai_transfer.cv.run_cross_validation` runs ``bundles/ct_slices/configs/train.json`` (2.5D slices of an
ImageNet-pretrained EfficientNet-Lite0, slice probabilities pooled per volume) as ``K``-fold cross-validation on the
TRAIN volumes only (folds over volumes, near-duplicate volumes in one fold): the number of epochs (best mean fold
volume AUC), the temperature (one temperature of the slice logits, chosen to minimise the NLL of the pooled
out-of-fold VOLUME probabilities) and the Youden threshold (on the calibrated out-of-fold volume probabilities) are
chosen there; one final fit on all train volumes follows. Val and, with ``--test`` (keys ``test_images``,
``test_labels``), a held-out split are then scored once, volume by volume, through the bundle's inference path
``monai_transfer.evaluate.evaluate_bundle`` (what ``python -m monai_transfer.evaluate`` runs) with that calibration and
threshold: val and test choose nothing.

Output ``<output>/results.json``: ``{"val": {...}, "test": {...} (only with --test), "cv": {...}, "selection": {...},
"config": {...}, "env": {...}}``: AUC and ACC with 95% stratified bootstrap CIs, ECE after (``ece``) and before
(``ece_uncalibrated``) the temperature, sensitivity/specificity at the threshold; ``cv`` holds the fold AUCs per
epoch and the out-of-fold AUC (CI) and ECE; ``selection`` says which data chose what.

Runtime (design; not measured end to end: the machine of this change was shared by five engineers): a fold-epoch
trains on 792 volumes x 4 slices (3168 slices) and evaluates 396 held-out volumes x 16 slices (6336 slices); at the
idle 2-core rates of the bundle README (25 s per 4752 training slices, 6 s per 1568 evaluated slices) that is about
41 s, so 3 folds x 4 epochs take about 8 minutes, the final fit at most 2, and writing the NIfTI files, hashing and
scoring val/test about 2-3: about 13 minutes on an idle 2-core machine, within the 30-minute limit with a 2x margin.
``--epochs 6`` (the bundle's default schedule) would be about 18 minutes. On the busy machine (load 6-7 on 2 cores,
one thread) a training iteration of 8 volumes took 2.1 s instead of about 0.17 s.

Usage (from the repository root)::

    python -m scripts.bench.accuracy_volume --output benchmarks/results/accuracy_volume
    python -m scripts.bench.accuracy_volume --test adrenalmnist3d_64_test.npz --output /tmp/vol
    python -m scripts.bench.accuracy_volume --quick --output /tmp/vol_quick
    python -m scripts.bench.accuracy_volume --work-dir /tmp/vol_run --output /tmp/vol        # keep the run folder
    python -m scripts.bench.accuracy_volume --work-dir /tmp/vol_run --reuse-cv --final-model fold_ensemble \
        --output /tmp/vol_ens    # score the same CV's fold models averaged (a variant; no training)

The maintainers score a held-out split with the path form, which runs the same module::

    python scripts/bench/accuracy_volume.py --test PATH.npz --output DIR
"""

from __future__ import annotations

import argparse
import csv
import logging
import runpy
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

from scripts.bench import accuracy_xray, common

__all__ = [
    "RECIPE",
    "QUICK_RECIPE",
    "CLASS_NAMES",
    "CV_FOLDS",
    "FINAL_MODELS",
    "write_volumes",
    "inference_overrides",
    "split_probabilities",
    "score_probabilities",
    "evaluate_split",
    "threshold_method",
    "cross_validate",
    "run",
    "main",
]

CLASS_NAMES = ["normal", "adrenal_mass"]
BUNDLE = common.REPO_ROOT / "bundles" / "ct_slices"
#: bundle defaults (axial 2.5D slices with offsets -2/0/+2, 4 random foreground slices per training volume, 16 central
#: slices per evaluated volume, mean pooling, weight EMA 0.99) at 64x64, 4 planned epochs, over the full train split
RECIPE: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0",
    "weights": "packaged",
    "image_size": 64,
    "epochs": 4,
    "batch_size": 32,
    "learning_rate": 0.001,
    "seed": 0,
    "train_slices": 4,
    "val_slices": 16,
    "slice_offsets": [-2, 0, 2],
    "aggregation": "mean",
    "ema_decay": 0.99,
    "label_smoothing": 0.0,
    "aug_strength": 1.0,
}
#: tiny sizes of ``--quick`` (and the smoke test): 2 folds of 16 train volumes, 2 epochs, few slices
QUICK_RECIPE: dict[str, Any] = {**RECIPE, "image_size": 32, "epochs": 2, "batch_size": 8, "train_slices": 2,
                                "val_slices": 3}  # fmt: skip
QUICK_LIMITS = {"train": 16, "val": 12, "test": 8}
#: folds of the cross-validation on the train volumes that chooses epochs, temperature and threshold
CV_FOLDS = 3
#: training ids and the ``inference.json`` ids that read the same setting under another name
INFERENCE_NAMES = {"val_slices": "num_slices", "val_slice_strategy": "slice_strategy"}


def write_volumes(npz: Path, split: str, out_dir: Path, n: int | None = None) -> tuple[Path, list[dict[str, Any]]]:
    """NIfTI files of one npz split in ``out_dir/<split>`` (cached) and a labels CSV for the evaluation script."""
    from monai_transfer.data.npz import datalist_from_npz

    folder = out_dir / (split if n is None else f"{split}_n{n}")
    marker = folder / ".complete"
    labels_csv = folder.parent / f"{folder.name}_labels.csv"
    if marker.is_file() and labels_csv.is_file():
        items = [
            {"image": str(folder / r["image"]), "label": int(r["label"])}
            for r in csv.DictReader(open(labels_csv, encoding="utf-8"))
        ]
    else:
        items = datalist_from_npz(npz, split, folder, fmt="nii.gz", n=n, seed=0)
    with open(labels_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        for x in items:
            w.writerow([Path(x["image"]).name, x["label"]])
    marker.touch()
    return labels_csv, items


def _datalist_csv(out_dir: Path, splits: dict[str, list[dict[str, Any]]], name: str) -> Path:
    path = out_dir / name
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "patient_id", "split"])
        for split, items in splits.items():
            for x in items:
                rel = Path(x["image"]).relative_to(out_dir)
                w.writerow([str(rel), x["label"], rel.name.split(".")[0], split])
    return path


def inference_overrides(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe's values for ``bundles/ct_slices/configs/inference.json`` (backbone, image size, slice offsets, the
    evaluation slicing and pooling), so inference slices and pools as the CV and its temperature did."""
    ids = set(common.read_result(BUNDLE / "configs" / "inference.json")) - {"dataset_dir", "output_dir", "input_dir"}
    out = {k: v for k, v in recipe.items() if k in ids}
    out.update({INFERENCE_NAMES[k]: v for k, v in recipe.items() if k in INFERENCE_NAMES})
    return out


def split_probabilities(
    ckpt: Path, images: Path, labels_csv: Path, out: Path, recipe: dict[str, Any], batch_size: int = 32
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels and positive-class volume probabilities of one split through ``monai_transfer.evaluate.evaluate_bundle``:
    ``(y, {"cal": calibrated, "raw": without the temperature and Platt step})``, volumes in path order."""
    from monai_transfer.evaluate import evaluate_bundle

    probs, y = {}, np.zeros(0, dtype=int)
    for tag, kw in (("cal", {}), ("raw", {"calibration": "none", "threshold": 0.5})):  # raw: for the ECE only
        res = evaluate_bundle(
            BUNDLE, images, out / tag, labels=labels_csv, ckpt=ckpt, n_bootstrap=0, batch_size=batch_size,
            overrides=inference_overrides(recipe), progress=False, **kw,
        )  # fmt: skip
        if res.failures:
            f = res.failures[0]
            raise RuntimeError(f"{len(res.failures)} volumes of {images} failed; first: {f.path}: {f.reason}")
        preds = sorted((p for p in res.predictions if p.label is not None), key=lambda p: str(p.path))
        y = np.asarray([p.label for p in preds])
        probs[tag] = np.asarray([float(np.asarray(p.probs).reshape(-1)[1]) for p in preds])
    return y, probs


def score_probabilities(y: np.ndarray, probs: dict[str, np.ndarray], threshold: float, n_bootstrap: int) -> dict:
    """AUC/ACC with CIs, ECE (top-label and positive-class, calibrated and raw) at ``threshold``."""
    from monai_transfer.metrics.volume_calibration import positive_class_ece

    out_s = accuracy_xray.summarise(probs["cal"], y, threshold, n_bootstrap, CLASS_NAMES,
                                    y_prob_uncalibrated=probs["raw"])  # fmt: skip
    out_s.update({f"ece_positive_class{s}": round(positive_class_ece(probs[tag], y), 4)
                  for s, tag in (("", "cal"), ("_uncalibrated", "raw"))})  # fmt: skip
    return out_s


def evaluate_split(
    ckpt: Path, images: Path, labels_csv: Path, out: Path, recipe: dict[str, Any], n_bootstrap: int,
    batch_size: int = 32,
) -> dict[str, Any]:  # fmt: skip
    """Score one split volume by volume with ``monai_transfer.evaluate.evaluate_bundle`` (calibrated, and once more
    without the temperature for ``ece_uncalibrated``) at the threshold chosen out-of-fold; AUC/ACC with CIs, ECE."""
    from monai_transfer.metrics.threshold import load_threshold

    t0 = time.perf_counter()
    y, probs = split_probabilities(ckpt, images, labels_csv, out, recipe, batch_size)
    out_s = score_probabilities(y, probs, float(load_threshold(ckpt.parent / "threshold.json")), n_bootstrap)
    out_s.update({"eval_wall_s": round(time.perf_counter() - t0, 1), "level": "volume"})
    return out_s


def threshold_method() -> str:
    """The shipped operating-point rule: ``cv_threshold_method`` of the bundle's ``train_cv.json`` (``accuracy``: the
    most correct decisions on the calibrated out-of-fold volume probabilities, the operating point MedMNIST's ACC
    rows use; Youden at 22 % prevalence trades accuracy for sensitivity)."""
    return str(common.read_result(BUNDLE / "configs" / "train_cv.json")["cv_threshold_method"])


def cross_validate(
    dataset_dir: Path, work: Path, recipe: dict[str, Any], folds: int, final_fit: bool = True, **extra: Any
) -> dict[str, Any]:
    """``folds``-fold CV on the train volumes + the final fit (:func:`monai_transfer.cv.run_cross_validation` on the
    bundle's ``train.json``); returns ``cv/cv.json``. The final model is ``work/models/model.pt``."""
    from monai_transfer.cv import run_cross_validation

    return run_cross_validation(
        str(BUNDLE / "configs" / "train.json"), folds=folds, output_dir=work,
        meta_file=str(BUNDLE / "configs" / "metadata.json"), logging_file=False, threshold_method=threshold_method(),
        calibrate=True, final_fit=final_fit, **{**recipe, **extra, "dataset_dir": str(dataset_dir)},
    )  # fmt: skip


def _prepare(npz: Path, quick: bool) -> tuple[Path, Path, list[dict[str, Any]], list[dict[str, Any]]]:
    cache = common.CACHE_DIR / ("adrenal_nii_quick" if quick else "adrenal_nii")
    lim = QUICK_LIMITS if quick else {}
    _, train_items = write_volumes(npz, "train", cache, lim.get("train"))
    val_csv, val_items = write_volumes(npz, "val", cache, lim.get("val"))
    dl_csv = _datalist_csv(
        cache, {"train": train_items, "val": val_items}, "datalist_quick.csv" if quick else "datalist.csv"
    )
    return dl_csv, val_csv, train_items, val_items


#: what val and test are scored with: ``single`` (the final fit on all train volumes, the protocol's model) or
#: ``fold_ensemble`` (the CV fold models averaged, :func:`scripts.bench.accuracy_xray.fold_ensemble`: the models whose
#: out-of-fold volumes fitted the temperature, the Platt step and the threshold; no final fit is trained)
FINAL_MODELS = ("single", "fold_ensemble")


def _reused_cv(work: Path, recipe: dict[str, Any], final_model: str) -> dict[str, Any]:
    """``cv/cv.json`` of an earlier run in ``work`` (``--reuse-cv``), checked against ``recipe``."""
    cv_json = work / "cv" / "cv.json"
    summary = common.read_result(cv_json)
    if summary is None:
        raise FileNotFoundError(f"--reuse-cv: {cv_json} not found: run the CV with --work-dir {work} first")
    ran = summary.get("overrides", {})
    diff = {k: {"cv.json": ran[k], "now": v} for k, v in recipe.items() if k in ran and ran[k] != v}
    if diff:
        raise ValueError(f"--reuse-cv: {cv_json} was run with other settings: {diff}")
    if final_model == "single" and not (work / "models" / "model.pt").is_file():
        raise FileNotFoundError(f"--reuse-cv: {work / 'models' / 'model.pt'} not found (a CV-only run has no final "
                                "fit)")  # fmt: skip
    return summary


def run(
    npz: Path, output: Path, recipe: dict[str, Any], test_npz: Path | None = None, quick: bool = False,
    n_bootstrap: int = 1000, folds: int = CV_FOLDS, work_dir: Path | None = None, cv_only: bool = False,
    final_model: str = "single", reuse_cv: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """CV on the train volumes, final fit, val (and test) scored once; writes ``output/results.json``.

    ``final_model`` (:data:`FINAL_MODELS`) says what is scored; ``reuse_cv`` scores the CV (and final fit) already in
    ``work_dir`` instead of training again (same recipe, checked)."""
    import torch

    if final_model not in FINAL_MODELS:
        raise ValueError(f"final_model must be one of {FINAL_MODELS}, got {final_model!r}")
    if reuse_cv and work_dir is None:
        raise ValueError("reuse_cv needs work_dir (the folder of the earlier run)")
    env, cpu0 = common.environment(), accuracy_xray._cpu_seconds()
    dl_csv, val_csv, train_items, val_items = _prepare(npz, quick)
    with tempfile.TemporaryDirectory(prefix="bench_vol_") as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        t0 = time.perf_counter()
        if reuse_cv:
            summary = _reused_cv(work, recipe, final_model)
        else:
            final_fit = not cv_only and final_model == "single"
            summary = cross_validate(dl_csv, work, recipe, folds, final_fit=final_fit, n_bootstrap=n_bootstrap)
        train_s = time.perf_counter() - t0
        results: dict[str, Any] = {"cv": accuracy_xray.cv_block(summary), "selection": summary["selection"]}
        results["cv"]["volume_platt"] = (summary.get("calibration") or {}).get("volume_platt_selection")
        if not cv_only:
            ckpt, scored = work / "models" / "model.pt", recipe
            if final_model == "fold_ensemble":
                ckpt, scored = accuracy_xray.fold_ensemble(work, recipe, BUNDLE, inference_overrides(recipe))
                how = "none: the CV fold models averaged (fold_ensemble), scored with the OOF calibration and threshold"
                results["selection"] = {**results["selection"], "final_fit": how}
            results["val"] = evaluate_split(ckpt, val_csv.parent / val_csv.stem[: -len("_labels")], val_csv,
                                            work / f"eval_val_{final_model}", scored, n_bootstrap)  # fmt: skip
            if final_model == "single":  # the final fit's own val report (a fold ensemble has none)
                bundle_val = common.read_result(work / "eval" / "val" / "metrics.json") or {}
                results["val"]["bundle_report_auc"] = bundle_val.get("metrics", {}).get("auc")
            if test_npz is not None:
                test_csv, _ = write_volumes(Path(test_npz), "test", work / "test_volumes",
                                            QUICK_LIMITS["test"] if quick else None)  # fmt: skip
                results["test"] = evaluate_split(ckpt, test_csv.parent / test_csv.stem[: -len("_labels")], test_csv,
                                                 work / f"eval_test_{final_model}", scored, n_bootstrap)  # fmt: skip
                results["test"]["source"] = str(test_npz)
    cal = summary.get("calibration") or {}
    results["config"] = {
        **recipe,
        "bundle": "bundles/ct_slices/configs/train.json",
        "protocol": f"{folds}-fold CV over the train volumes (val chooses nothing), "
        + ("final fit, " if final_model == "single" else "the fold models averaged (no final fit), ")
        + "val/test scored once",
        "final_model": final_model,
        "reused_cv": str(work / "cv" / "cv.json") if reuse_cv else None,
        "evaluation": "monai_transfer.evaluate.evaluate_bundle (python -m monai_transfer.evaluate)",
        "data": str(npz),
        "counts": {"train": len(train_items), "val": len(val_items)},
        "cv_folds": folds,
        "cv_only": cv_only,
        "threshold_method": f"{threshold_method()} on the calibrated out-of-fold VOLUME probabilities "
        "(models/threshold.json; the bundle's train_cv.json cv_threshold_method)",
        "calibration": f"temperature {summary['chosen']['temperature']}"
        + (f", volume Platt {summary['chosen']['volume_platt']}" if summary["chosen"].get("volume_platt") else "")
        + f": {cal.get('fitted_on')}",
        "n_bootstrap": n_bootstrap,
        "train_wall_s": round(train_s, 1),
        "cpu_minutes": round((accuracy_xray._cpu_seconds() - cpu0) / 60.0, 2),
        "torch_threads": torch.get_num_threads(),
        "quick": quick,
    }
    results["env"] = common.finish_environment(env)
    common.write_result(Path(output) / "results.json", results)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "accuracy_volume")
    parser.add_argument("--npz", type=Path, default=common.ADRENAL_NPZ, help="train/val npz (MedMNIST keys)")
    parser.add_argument("--test", type=Path, default=None, help="npz with test_images/test_labels to score")
    parser.add_argument("--weights", default=None, help="'packaged' (ImageNet, default) or 'none'")
    parser.add_argument("--epochs", type=int, default=None, help="planned epochs (the CV chooses how many to keep)")
    parser.add_argument("--folds", type=int, default=None, help=f"CV folds on train (default {CV_FOLDS}; quick 2)")
    parser.add_argument("--n-bootstrap", type=int, default=None)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the run folder here (models, cv/oof and eval_val predictions); default a "
                        "temporary folder")  # fmt: skip
    parser.add_argument("--final-model", choices=FINAL_MODELS, default="single",
                        help="what val/test are scored with: the final fit (default, the protocol's model) or the CV "
                        "fold models averaged (no final fit)")  # fmt: skip
    parser.add_argument("--reuse-cv", action="store_true",
                        help="score the CV (and final fit) already in --work-dir instead of training")  # fmt: skip
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    common.set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    recipe = dict(QUICK_RECIPE if args.quick else RECIPE)
    for key, val in (("weights", args.weights), ("epochs", args.epochs)):
        if val is not None:
            recipe[key] = val
    n_boot = args.n_bootstrap if args.n_bootstrap is not None else (50 if args.quick else 1000)
    folds = args.folds if args.folds is not None else (2 if args.quick else CV_FOLDS)
    res = run(args.npz, args.output, recipe, args.test, quick=args.quick, n_bootstrap=n_boot, folds=folds,
              work_dir=args.work_dir, final_model=args.final_model, reuse_cv=args.reuse_cv)  # fmt: skip
    cv = res["cv"]
    print(f"CV ({folds} folds, train only): mean fold AUC {cv['mean_fold_auc']:.4f}  OOF AUC {cv['oof_auc']}"
          f" {cv['oof_auc_ci95']}  OOF ECE {cv['oof_ece_before']} -> {cv['oof_ece_after']}"
          f"  epochs {cv['chosen']['epochs']}/{cv['epochs_planned']}")  # fmt: skip
    for split in ("val", "test"):
        if split in res:
            r = res[split]
            print(
                f"{split}: AUC {r['auc']:.4f} {r.get('auc_ci95')}  ACC {r['acc']:.4f} {r.get('acc_ci95')}"
                f"  ECE {r['ece']:.4f} (uncalibrated {r['ece_uncalibrated']:.4f})"
                f"  (threshold {r['threshold']:.3f} chosen out-of-fold, n={r['n']} volumes)"
            )
    print(f"wrote {Path(args.output) / 'results.json'}")
    return res


if __name__ == "__main__":
    main()
