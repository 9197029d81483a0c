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
"""Which model should ct_slices score: the final fit or the CV fold models averaged? Nested CV on train only.

The CV protocol (:mod:`scripts.bench.accuracy_volume`) fits the temperature, the volume Platt step and the threshold on
the out-of-fold volumes of the CV fold models, then scores a final fit on all train volumes with them. The fold
models averaged (``--final-model fold_ensemble``) are the alternative: the calibrated models are the scored ones, at
three times the inference cost. Val cannot choose between them (it is reported), so this script compares them on the
train split alone, by running the whole protocol inside each fold of an earlier CV:

- the outer folds are those of the run in ``--work-dir`` (``cv/fold_<k>/datalists.json``: its train volumes and its
  held-out volumes; ``accuracy_volume.py --work-dir DIR`` keeps them);
- for each outer fold, :func:`scripts.bench.accuracy_volume.cross_validate` runs ``--inner-folds``-fold CV on the
  outer fold's train volumes (epochs, temperature, Platt step and threshold chosen out-of-fold there) and the final
  fit on all of them; the outer held-out volumes (never seen by either arm nor by their calibration) are then scored
  by both arms through the bundle's inference path: ``single`` (that final fit) and ``fold_ensemble`` (that inner
  CV's fold models averaged), each with that inner CV's calibration and threshold;
- the held-out predictions are pooled over the outer folds (every train volume scored once per arm).

Pre-declared rule (written before any nested result existed): ``fold_ensemble`` is preferred when its pooled
log loss (NLL, a proper scoring rule that covers ranking and calibration) is lower than ``single``'s and its pooled AUC
is not lower by more than :data:`AUC_TOLERANCE`; otherwise ``single``. The verdict is a recommendation for the
shipped default, stored with the numbers; this script changes nothing.

With 2 inner folds (the default, for CPU time), each ensemble member trains on half of the outer train volumes while
the final fit trains on all of them: the comparison is then conservative for the ensemble (the shipped ensemble's
members train on two thirds of the train split).

Output ``<output>/results.json``: per arm the pooled AUC (bootstrap CI), ACC at each outer fold's own threshold,
top-label and positive-class ECE, NLL and Brier score, the per-outer-fold AUCs, the verdict and the config.

Usage (from the repository root)::

    python -m scripts.bench.accuracy_volume --work-dir /tmp/vol_run --output /tmp/vol   # the outer CV
    python -m scripts.bench.nested_volume --work-dir /tmp/vol_run --output benchmarks/results/nested_volume
    python -m scripts.bench.nested_volume --quick --work-dir /tmp/vol_quick_run --output /tmp/nested_quick
    python -m scripts.bench.nested_volume --rescore --work-dir /tmp/vol_run --output DIR   # kept predictions only
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import runpy
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __name__ == "__main__" and not __package__:  # run as a path (python scripts/bench/<name>.py): run as the module
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    runpy.run_module(f"scripts.bench.{Path(__file__).stem}", run_name="__main__", alter_sys=True)
    sys.exit()

from scripts.bench import accuracy_volume, accuracy_xray, common

__all__ = [
    "ARMS",
    "AUC_TOLERANCE",
    "INNER_FOLDS",
    "outer_folds",
    "nested_fold",
    "kept_fold",
    "pooled_scores",
    "verdict",
    "main",
]

#: the two models compared (``accuracy_volume.FINAL_MODELS``)
ARMS = ("single", "fold_ensemble")
#: AUC the ensemble may lose against the final fit and still be preferred (when its NLL is lower)
AUC_TOLERANCE = 0.005
#: inner CV folds (CPU time; see the module docstring)
INNER_FOLDS = 2


def outer_folds(work_dir: Path) -> list[dict[str, list[dict[str, Any]]]]:
    """``cv/fold_<k>/datalists.json`` of an earlier CV in ``work_dir``, in fold order."""
    folds = sorted((Path(work_dir) / "cv").glob("fold_*/datalists.json"), key=lambda p: int(p.parent.name[5:]))
    if len(folds) < 2:
        raise FileNotFoundError(
            f"{work_dir}/cv holds {len(folds)} fold datalists: run accuracy_volume.py --work-dir {work_dir} first"
        )
    return [common.read_result(f) for f in folds]


def _link(src: Path, dst: Path) -> None:
    """A hard link of ``src`` at ``dst`` (a copy across file systems)."""
    if not dst.exists():
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


def _write_fold(items: dict[str, list[dict[str, Any]]], fold_dir: Path) -> tuple[Path, Path, Path]:
    """The outer fold as a data list CSV over ``volumes/`` (its train volumes ``train``, its held-out ones ``val``; the
    bundle reads files under the CSV's folder) and its held-out volumes alone in ``heldout/`` with a labels CSV
    (``evaluate_bundle`` scores every file of a folder); files are hard links of the originals."""
    dl_csv, held, labels = fold_dir / "datalist.csv", fold_dir / "heldout", fold_dir / "heldout_labels.csv"
    for d in (fold_dir / "volumes", held):
        d.mkdir(parents=True, exist_ok=True)
    with open(dl_csv, "w", newline="", encoding="utf-8") as f, open(labels, "w", newline="", encoding="utf-8") as g:
        w, lw = csv.writer(f), csv.writer(g)
        w.writerow(["image", "label", "patient_id", "split"])
        lw.writerow(["image", "label"])
        for split in ("train", "val"):
            for x in items[split]:
                name = Path(x["image"]).name
                _link(Path(x["image"]), fold_dir / "volumes" / name)
                w.writerow([f"volumes/{name}", x["label"], x.get("patient_id", name.split(".")[0]), split])
                if split == "val":
                    _link(Path(x["image"]), held / name)
                    lw.writerow([name, x["label"]])
    return dl_csv, held, labels


def nested_fold(
    items: dict[str, list[dict[str, Any]]], fold_dir: Path, recipe: dict[str, Any], inner_folds: int
) -> dict[str, Any]:
    """The protocol inside one outer fold; returns the held-out labels, each arm's probabilities and threshold."""
    from monai_transfer.metrics.threshold import load_threshold

    dl_csv, held, labels = _write_fold(items, fold_dir)
    summary = accuracy_volume.cross_validate(dl_csv, fold_dir / "run", recipe, inner_folds, n_bootstrap=0)
    out: dict[str, Any] = {"chosen": summary["chosen"], "n_heldout": len(items["val"])}
    for arm in ARMS:
        ckpt, scored = fold_dir / "run" / "models" / "model.pt", recipe
        if arm == "fold_ensemble":
            overrides = accuracy_volume.inference_overrides(recipe)
            ckpt, scored = accuracy_xray.fold_ensemble(fold_dir / "run", recipe, accuracy_volume.BUNDLE, overrides)
        y, probs = accuracy_volume.split_probabilities(ckpt, held, labels, fold_dir / f"eval_{arm}", scored)
        out[arm] = {"y": y, "probs": probs, "threshold": float(load_threshold(ckpt.parent / "threshold.json"))}
    return out


def kept_fold(fold_dir: Path) -> dict[str, Any]:
    """What :func:`nested_fold` returned for ``fold_dir``, from the files it kept (``--rescore``): each arm's held-out
    predictions (``eval_<arm>/{cal,raw}/predictions.csv``: label, positive-class probability, threshold) and the inner
    CV's choices (``run/cv/cv.json``); no model is trained or run."""
    out: dict[str, Any] = {"chosen": common.read_result(fold_dir / "run" / "cv" / "cv.json")["chosen"]}
    for arm in ARMS:
        rows = {}
        for tag in ("cal", "raw"):
            path = fold_dir / f"eval_{arm}" / tag / "predictions.csv"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: --rescore needs a completed nested run in {fold_dir}")
            with open(path, newline="", encoding="utf-8") as f:
                rows[tag] = sorted(csv.DictReader(f), key=lambda r: r["image"])
        positive = [k for k in rows["cal"][0] if k.startswith("prob_")][-1]  # binary: the second class's column
        out[arm] = {
            "y": np.asarray([int(r["label"]) for r in rows["cal"]]),
            "probs": {tag: np.asarray([float(r[positive]) for r in rows[tag]]) for tag in ("cal", "raw")},
            "threshold": float(rows["cal"][0]["threshold"]),
        }
    out["n_heldout"] = len(out[ARMS[0]]["y"])
    return out


def pooled_scores(folds: list[dict[str, Any]], arm: str, n_bootstrap: int) -> dict[str, Any]:
    """One arm's held-out predictions pooled over the outer folds (ACC at each fold's own threshold)."""
    from monai_transfer.metrics.bootstrap import bootstrap_ci
    from monai_transfer.metrics.functional import compute_auc, compute_brier, compute_ece, compute_ece_noise_floor
    from monai_transfer.metrics.volume_calibration import platt_nll, positive_class_ece

    y = np.concatenate([f[arm]["y"] for f in folds])
    p = np.concatenate([f[arm]["probs"]["cal"] for f in folds])
    correct = np.concatenate([(f[arm]["probs"]["cal"] >= f[arm]["threshold"]) == f[arm]["y"] for f in folds])
    ci = bootstrap_ci(p, y, "auc", n_resamples=n_bootstrap, seed=0) if n_bootstrap else None
    return {
        "n": int(len(y)),
        "auc": float(compute_auc(p, y, "binary")),
        "auc_ci95": [ci["lower"], ci["upper"]] if ci else None,
        "acc": float(np.mean(correct)),
        "ece": float(compute_ece(p, y, "binary")),
        "ece_noise_floor": compute_ece_noise_floor(p),
        "ece_positive_class": float(positive_class_ece(p, y)),
        "nll": platt_nll(p, y),  # slope 1, intercept 0: the NLL of the probabilities themselves
        "brier": float(compute_brier(p, y, "binary")),
        "fold_auc": [float(compute_auc(f[arm]["probs"]["cal"], f[arm]["y"], "binary")) for f in folds],
        "fold_ece": [float(compute_ece(f[arm]["probs"]["cal"], f[arm]["y"], "binary")) for f in folds],
        "thresholds": [f[arm]["threshold"] for f in folds],
    }


def verdict(scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The pre-declared rule (see the module docstring) applied to the pooled scores."""
    s, e = scores["single"], scores["fold_ensemble"]
    better = e["nll"] < s["nll"] and e["auc"] >= s["auc"] - AUC_TOLERANCE
    return {
        "preferred": "fold_ensemble" if better else "single",
        "rule": f"fold_ensemble when its pooled held-out NLL is lower and its AUC is not lower by more than "
        f"{AUC_TOLERANCE} (train split only; val and test unused)",
        "nll": {"single": s["nll"], "fold_ensemble": e["nll"]},
        "auc": {"single": s["auc"], "fold_ensemble": e["auc"]},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "nested_volume")
    parser.add_argument("--work-dir", type=Path, required=True, help="folder of an accuracy_volume.py run (its CV)")
    parser.add_argument("--inner-folds", type=int, default=INNER_FOLDS, help=f"default {INNER_FOLDS}")
    parser.add_argument("--n-bootstrap", type=int, default=None)
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score the predictions an earlier nested run kept in --work-dir/nested (no training)",
    )
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    common.set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    env, cpu0, t0 = common.environment(), accuracy_xray._cpu_seconds(), time.perf_counter()
    recipe = dict(accuracy_volume.QUICK_RECIPE if args.quick else accuracy_volume.RECIPE)
    accuracy_volume._reused_cv(args.work_dir, recipe, "fold_ensemble")  # the outer CV ran this recipe
    n_boot = args.n_bootstrap if args.n_bootstrap is not None else (50 if args.quick else 1000)
    outer = outer_folds(args.work_dir)
    fold_dirs = [args.work_dir / "nested" / f"outer_{k}" for k in range(len(outer))]
    if args.rescore:
        folds = [kept_fold(d) for d in fold_dirs]
    else:
        folds = [nested_fold(items, d, recipe, args.inner_folds) for items, d in zip(outer, fold_dirs)]
    scores = {arm: pooled_scores(folds, arm, n_boot) for arm in ARMS}
    results = {
        "arms": scores,
        "verdict": verdict(scores),
        "inner_chosen": [f["chosen"] for f in folds],
        "config": {
            **recipe,
            "outer_cv": str(args.work_dir / "cv" / "cv.json"),
            "outer_folds": len(folds),
            "inner_folds": args.inner_folds,
            "n_bootstrap": n_boot,
            "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_minutes": round((accuracy_xray._cpu_seconds() - cpu0) / 60.0, 2),
            "quick": args.quick,
            "rescored_from_kept_predictions": args.rescore,
        },
    }
    out_json = Path(args.output) / "results.json"
    if args.rescore and out_json.is_file():  # the cost of the run that trained the models, not of this rescoring
        prev = common.read_result(out_json)["config"]
        results["config"]["trained"] = prev.get("trained") or {k: prev.get(k) for k in ("wall_s", "cpu_minutes")}
    results["env"] = common.finish_environment(env)
    common.write_result(out_json, results)
    for arm in ARMS:
        r = scores[arm]
        print(f"{arm}: AUC {r['auc']:.4f} {r['auc_ci95']}  ACC {r['acc']:.4f}  ECE {r['ece']:.4f}  "
              f"NLL {r['nll']:.4f}  Brier {r['brier']:.4f}  (n={r['n']} held-out train volumes)")  # fmt: skip
    print(f"verdict: {results['verdict']['preferred']}; wrote {Path(args.output) / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
