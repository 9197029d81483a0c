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
"""Does test-time augmentation pay? Out-of-fold check on the TRAIN split of PneumoniaMNIST; val chooses nothing.

The fold models of a ``K``-fold cross-validation of the default recipe (:data:`accuracy_xray.RECIPE`; the CV run that
``recipe_xray.py`` keeps in the benchmark cache, or a new CV-only run when there is none) each score their own
held-out fold twice through the bundle's one inference path (:func:`accuracy_xray.predict`, i.e.
``evaluate_bundle`` on ``bundles/xray/configs/inference.json``): with ``use_tta`` false and true (its
``tta_inferer``: rotations of -5/+5 degrees and scales 0.95/1.05 around the image, probabilities averaged). The pooled
out-of-fold AUC and ECE of the two are compared, with a paired stratified bootstrap 95% CI of the AUC difference.
Probabilities are raw (no temperature: the one fitted on the out-of-fold predictions was fitted without TTA). A fold
model is its best epoch on its own held-out fold (what ``run_cross_validation`` keeps), the same model in both arms.

The bundle ships ``use_tta`` false (its temperature and threshold are fitted on out-of-fold predictions made without
TTA); this benchmark measures what turning it on gains and what it does to the raw probabilities. Output:
``<output>`` (JSON); ``make_report.py`` shows it in section 1c of ``benchmarks/README.md``.

Usage (from the repository root)::

    python -m scripts.bench.tta_xray
    python -m scripts.bench.tta_xray --quick --output /tmp/tta.json
"""

from __future__ import annotations

import argparse
import runpy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a path (python scripts/bench/<name>.py): run as the module
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    runpy.run_module(f"scripts.bench.{Path(__file__).stem}", run_name="__main__", alter_sys=True)
    sys.exit()

import numpy as np

from scripts.bench import accuracy_xray, common, recipe_xray

__all__ = ["default_recipe_name", "paired_auc_difference", "main"]


def default_recipe_name(quick: bool = False) -> str:
    """The name in :data:`recipe_xray.RECIPES` whose recipe is :data:`accuracy_xray.RECIPE` (the default)."""
    target = accuracy_xray.QUICK_RECIPE if quick else accuracy_xray.RECIPE
    for name in recipe_xray.RECIPES:
        if recipe_xray.recipe_overrides(name, quick) == target:
            return name
    raise LookupError("no recipe of recipe_xray.RECIPES equals accuracy_xray.RECIPE; add it there")


def paired_auc_difference(
    p_a: np.ndarray, p_b: np.ndarray, y: np.ndarray, n_resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """AUC(b) - AUC(a) on the same cases, with a stratified paired percentile bootstrap 95% CI.

    Args:
        p_a: positive-class probabilities of arm a.
        p_b: positive-class probabilities of arm b, same cases and order.
        y: 0/1 labels.
        n_resamples: bootstrap resamples (both arms resampled with the same indices).
        seed: seed of the resampling.
    """
    from monai_transfer.metrics.functional import compute_auc

    y = np.asarray(y).astype(int)
    strata = [np.flatnonzero(y == c) for c in (0, 1)]
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples)
    for i in range(n_resamples):
        idx = np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata])
        diffs[i] = compute_auc(p_b[idx], y[idx]) - compute_auc(p_a[idx], y[idx])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"estimate": float(compute_auc(p_b, y) - compute_auc(p_a, y)), "lower": float(lo), "upper": float(hi)}


def _cv_dir(name: str, args: argparse.Namespace) -> Path:
    """The kept CV run of recipe ``name`` (``<cache>/recipe_xray_runs[_quick]/<name>/cv``); made when missing."""
    work = common.CACHE_DIR / ("recipe_xray_runs_quick" if args.quick else "recipe_xray_runs") / name
    cv_dir = work / "cv"
    if not (cv_dir / "fold_0" / "models" / "model.pt").is_file():
        print(f"no kept CV run of {name!r} in {work}: running the CV ({args.folds} folds, train split only)")
        with tempfile.TemporaryDirectory(prefix="bench_tta_") as tmp:
            accuracy_xray.run(
                args.npz, Path(tmp), recipe_xray.recipe_overrides(name, args.quick), quick=args.quick,
                n_bootstrap=20, folds=args.folds, work_dir=work, cv_only=True, shift_cases=0,
            )  # fmt: skip
    return cv_dir


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "tta_xray.json")
    parser.add_argument("--npz", type=Path, default=common.PNEUMONIA_NPZ)
    parser.add_argument("--folds", type=int, default=accuracy_xray.CV_FOLDS)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    threads = common.set_threads(args.threads)
    if args.quick:
        args.folds, args.n_bootstrap = 2, 20
    from monai_transfer.cv import read_datalists
    from monai_transfer.metrics.functional import compute_auc, compute_ece

    env = common.environment()
    name = default_recipe_name(args.quick)
    recipe = recipe_xray.recipe_overrides(name, args.quick)
    cv_dir = _cv_dir(name, args)
    folds = sorted(p for p in cv_dir.glob("fold_*") if (p / "models" / "model.pt").is_file())
    if not folds:
        raise SystemExit(f"{cv_dir}: no fold models (fold_*/models/model.pt)")
    y_all, arms, per_fold, seconds = [], {"plain": [], "tta": []}, [], {"plain": 0.0, "tta": 0.0}
    for fold in folds:
        items = read_datalists(fold / "datalists.json")["val"]
        y = np.array([int(it["label"]) for it in items])
        probs = {}
        for arm in ("plain", "tta"):
            t0 = time.perf_counter()
            ckpt = fold / "models" / "model.pt"
            probs[arm] = accuracy_xray.predict(ckpt, items, recipe, calibrated=False, tta=arm == "tta")
            seconds[arm] += time.perf_counter() - t0
            arms[arm].append(probs[arm])
        per_fold.append({"fold": fold.name, "n": len(y), **{f"auc_{a}": compute_auc(probs[a], y) for a in probs}})
        y_all.append(y)
        print(f"{fold.name}: AUC plain {per_fold[-1]['auc_plain']:.4f}  TTA {per_fold[-1]['auc_tta']:.4f}")
    y = np.concatenate(y_all)
    p = {a: np.concatenate(v) for a, v in arms.items()}
    res = {
        "what": "test-time augmentation (inference.json use_tta: rotations -5/+5 deg, scales 0.95/1.05, probabilities "
        "averaged) vs none, scored out-of-fold on the train split by the CV fold models; val not used",
        "recipe": name,
        "recipe_overrides": recipe,
        "cv_dir": str(cv_dir),
        "n": int(len(y)),
        "per_fold": per_fold,
        "plain": {"auc": compute_auc(p["plain"], y), "ece": compute_ece(p["plain"], y), "seconds": seconds["plain"]},
        "tta": {"auc": compute_auc(p["tta"], y), "ece": compute_ece(p["tta"], y), "seconds": seconds["tta"]},
        "auc_difference_tta_minus_plain": paired_auc_difference(p["plain"], p["tta"], y, args.n_bootstrap),
        "config": {"quick": bool(args.quick), "folds": len(folds), "torch_threads": threads},
        "env": common.finish_environment(env),
    }
    d = res["auc_difference_tta_minus_plain"]
    res["pays"] = bool(d["lower"] > 0)
    res["verdict"] = (
        f"TTA {'pays' if res['pays'] else 'does not pay'}: out-of-fold AUC {res['tta']['auc']:.4f} vs "
        f"{res['plain']['auc']:.4f} without (difference {d['estimate']:+.4f}, 95% CI {d['lower']:+.4f} to "
        f"{d['upper']:+.4f}); ECE {res['tta']['ece']:.4f} vs {res['plain']['ece']:.4f}; "
        f"{res['tta']['seconds'] / max(res['plain']['seconds'], 1e-9):.1f}x the inference time"
    )
    common.write_result(Path(args.output), res)
    print(res["verdict"])
    return res


if __name__ == "__main__":
    main()
