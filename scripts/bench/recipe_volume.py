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
"""Recipe round for the ct_slices bundle on AdrenalMNIST3D, chosen by cross-validation on the TRAIN volumes only.

Each recipe is a set of bundle overrides on top of :data:`accuracy_volume.RECIPE` (the bundle defaults: 4 random slices
per training volume, 2.5D context -2/0/+2, mean pooling, EfficientNet-Lite0, weight EMA 0.99: the winners of this round
against ``context1``, the context -1/0/+1 of before, and ``no_ema``). Every recipe runs exactly what
``accuracy_volume.py`` runs (:func:`accuracy_volume.run`): 3-fold CV over the 1188 train volumes (epochs = best mean
fold volume AUC, temperature chosen on the pooled out-of-fold volume probabilities, the bundle's ``cv_threshold_method``
threshold on the calibrated out-of-fold volume probabilities), one final fit on all train volumes, and ONE scoring of
the 98 val volumes, which is reported and chooses nothing.

Pre-declared winner rule (the same as ``recipe_xray.py``, :func:`recipe_xray.choose_winner`): the best mean fold
volume AUC of the CV on the train split; recipes within :data:`recipe_xray.TIE_AUC` (0.001) of it tie, and ties go to
the lower out-of-fold ECE after calibration, then to fewer CPU minutes. Budget: only recipes within
:data:`BUDGET_CPU_MINUTES` (54 CPU minutes of the 2-thread run for CV + final fit + scoring: the 30 wall minutes
``accuracy_volume.py`` must meet on an idle 2-core machine, at the 1.8 CPU minutes per wall minute its idle run used)
can become the default; the others are reported.
Val chooses nothing.

Candidates (issue #29): slices per training volume (2, 8), 2.5D context (offsets -1/0/+1, now -2/0/+2), pooling (max,
top-3 mean; attention pooling over slices is not in the bundle), EfficientNet-Lite1 vs Lite0, weight EMA (0.99, now the
default; ``no_ema`` turns it off), and xray's label smoothing and augmentation strength. One full round is about 8 x 23
single-thread CPU minutes (about 3 hours on one core); ``--time-budget`` stops before a recipe once spent, and the round
resumes (``<output>/<recipe>.json`` is skipped when it exists); ``<output>/summary.json`` (the table and the winner) is
rewritten after every recipe.

Usage (from the repository root)::

    python -m scripts.bench.recipe_volume --threads 2 --output benchmarks/results/recipe_volume
    python -m scripts.bench.recipe_volume --recipes base no_ema max --time-budget 90
    python -m scripts.bench.recipe_volume --quick --output /tmp/recipes_volume
"""

from __future__ import annotations

import argparse
import runpy
import sys
import tempfile
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a path (python scripts/bench/<name>.py): run as the module
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    runpy.run_module(f"scripts.bench.{Path(__file__).stem}", run_name="__main__", alter_sys=True)
    sys.exit()

from scripts.bench import accuracy_volume, common, recipe_xray

__all__ = ["RECIPES", "BUDGET_CPU_MINUTES", "recipe_overrides", "choose_winner", "summary_table", "main"]

#: candidate recipes: bundle-config overrides on top of accuracy_volume.RECIPE
RECIPES: dict[str, dict[str, Any]] = {
    "base": {},
    "slices2": {"train_slices": 2},
    "slices8": {"train_slices": 8},
    "context1": {"slice_offsets": [-1, 0, 1]},
    "max": {"aggregation": "max"},
    "topk": {"aggregation": "topk_mean"},
    "lite1": {"backbone": "tf_efficientnet_lite1"},
    "no_ema": {"ema_decay": 0.0},
    "ls0.1": {"label_smoothing": 0.1},
    "aug0.5": {"aug_strength": 0.5},
}
#: CPU minutes (user + system, CV + final fit + scoring, 2 torch threads) a recipe may cost to become the default:
#: 30 wall minutes on an idle 2-core machine x 1.8, the CPU minutes per wall minute of the idle accuracy_volume run
#: (41.8 CPU minutes in 23.3 wall minutes, benchmarks/results/accuracy_volume)
BUDGET_CPU_MINUTES = 54.0
#: the pre-declared rule (one rule for both recipe rounds)
choose_winner = recipe_xray.choose_winner


def recipe_overrides(name: str, quick: bool = False) -> dict[str, Any]:
    """The full recipe (base + the candidate's overrides) of ``name``; ``quick`` keeps the tiny sizes."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    base = dict(accuracy_volume.QUICK_RECIPE if quick else accuracy_volume.RECIPE)
    extra = dict(RECIPES[name])
    if quick:  # keep quick runs tiny whatever the candidate changes
        extra = {k: v for k, v in extra.items() if k not in ("epochs", "image_size", "train_slices")}
    return {**base, **extra}


def summary_table(out_dir: Path) -> dict[str, Any]:
    """Rows of every ``<recipe>.json`` in ``out_dir`` and the winner chosen on CV only."""
    rows = [
        recipe_xray.cv_row(n, r)
        for n in RECIPES
        if (r := common.read_result(out_dir / f"{n}.json")) is not None and "cv" in r
    ]
    budget = None if any(r["quick"] for r in rows) else BUDGET_CPU_MINUTES
    eligible = [r for r in rows if budget is None or r["cpu_minutes"] <= budget]
    return {
        "rows": rows,
        "winner": choose_winner(eligible, None)["recipe"] if eligible else None,
        "cv_best": choose_winner(rows, None)["recipe"] if rows else None,
        "budget_cpu_minutes": budget,
        "rule": (
            f"best mean fold volume AUC of the {accuracy_volume.CV_FOLDS}-fold CV on the train volumes; differences < "
            f"{recipe_xray.TIE_AUC} tie and go to the lower out-of-fold volume ECE after calibration, then to fewer "
            "CPU minutes; val chose nothing"
            + (f"; only recipes within {budget:g} single-thread CPU minutes can become the default" if budget else "")
        ),
        "machine": "shared, busy 2-core machine unless the env blocks say otherwise",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "recipe_volume")
    parser.add_argument("--npz", type=Path, default=common.ADRENAL_NPZ)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--folds", type=int, default=accuracy_volume.CV_FOLDS)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--time-budget", type=float, default=None, help="minutes; no new recipe starts after it")
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    common.set_threads(args.threads)
    if args.quick:
        args.folds, args.n_bootstrap = 2, 20

    def run_one(name: str, previous: dict[str, Any] | None) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="bench_recipe_volume_") as tmp:
            return accuracy_volume.run(
                args.npz, Path(tmp), recipe_overrides(name, args.quick), quick=args.quick,
                n_bootstrap=args.n_bootstrap, folds=args.folds,
            )  # fmt: skip

    return recipe_xray.run_round(
        list(args.recipes), Path(args.output), RECIPES, run_one, recipe_xray.cv_row, summary_table, args.time_budget
    )


if __name__ == "__main__":
    main()
