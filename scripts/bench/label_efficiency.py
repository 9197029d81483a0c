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
"""Label efficiency: ImageNet-pretrained vs from-scratch EfficientNet-Lite on 1-100% of PneumoniaMNIST's labels.

Each run trains the xray bundle with :data:`accuracy_xray.RECIPE` (the CV-chosen recipe, EfficientNet-Lite1 with
weight EMA; same code path as ``accuracy_xray.py``) on a class-stratified random ``fraction`` of the train split
(drawn with the run's seed), with ``weights="packaged"`` or ``weights="none"`` (same architecture), and scores the
full val split. Small fractions get the same number of epochs as the full recipe but at least ``--min-steps``
optimiser steps (a 1% subset is 47 images: one batch per epoch). Val chooses nothing
(``accuracy_xray.run(val_chooses=False)``): every run validates once, after its last epoch, and ACC is at the fixed
threshold 0.5. (The runs published before 2026-12-02 used ``BASE_RECIPE`` and kept the best of about 4 validations on
val; those of 2026-12-02 used Lite0 with weight EMA; both are in the git history of ``benchmarks/results``.)

Resumable: one JSON per run in ``<output>/<weights>_f<fraction>_s<seed>.json``; runs whose JSON exists are skipped.
Runs go cheapest first (fractions ascending, then seeds, pretrained and scratch alternating), so an interrupted
benchmark leaves complete pairs for the small fractions. ``--time-budget`` stops before starting a run once the
budget (minutes) is spent.

Usage (from the repository root)::

    python -m scripts.bench.label_efficiency                          # all 30 runs (hours on 2 CPU cores)
    python -m scripts.bench.label_efficiency --fractions 0.01 0.05 --time-budget 20
    python -m scripts.bench.label_efficiency --quick --output /tmp/le
"""

from __future__ import annotations

import argparse
import math
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

__all__ = ["FRACTIONS", "SEEDS", "WEIGHTS", "run_name", "plan", "epochs_for", "main"]

FRACTIONS = (0.01, 0.05, 0.10, 0.25, 1.0)
SEEDS = (0, 1, 2)
WEIGHTS = ("packaged", "none")
N_TRAIN = 4690  # PneumoniaMNIST train split in ../shared/data


def run_name(weights: str, fraction: float, seed: int) -> str:
    """File stem of one run, e.g. ``packaged_f0.05_s1``."""
    return f"{weights}_f{fraction:g}_s{seed}"


def plan(fractions: Any, seeds: Any, weights: Any) -> list[tuple[str, float, int]]:
    """Runs in the order they execute: fractions ascending, then seed, then weights."""
    return [(w, f, s) for f in sorted(fractions) for s in seeds for w in weights]


def epochs_for(n_train: int, batch_size: int, recipe_epochs: int, min_steps: int) -> int:
    """Epochs of a run: at least ``recipe_epochs`` and at least ``min_steps`` optimiser steps."""
    steps_per_epoch = max(1, n_train // batch_size)
    return max(recipe_epochs, math.ceil(min_steps / steps_per_epoch))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "label_efficiency")
    parser.add_argument("--npz", type=Path, default=common.PNEUMONIA_NPZ)
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--weights", nargs="+", default=list(WEIGHTS), choices=list(WEIGHTS))
    parser.add_argument("--min-steps", type=int, default=100)
    parser.add_argument("--n-bootstrap", type=int, default=200)
    parser.add_argument("--time-budget", type=float, default=None, help="minutes; no new run starts after it")
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    recipe = dict(accuracy_xray.QUICK_RECIPE if args.quick else accuracy_xray.RECIPE)
    if args.quick:
        args.fractions, args.seeds, args.min_steps, args.n_bootstrap = [0.5], [0], 2, 20
    common.set_threads(args.threads)
    out_dir = Path(args.output)
    t_start = time.perf_counter()
    done: list[dict[str, Any]] = []
    for weights, fraction, seed in plan(args.fractions, args.seeds, args.weights):
        path = out_dir / f"{run_name(weights, fraction, seed)}.json"
        if path.is_file():
            print(f"skip {path.name} (exists)")
            continue
        if args.time_budget is not None and (time.perf_counter() - t_start) / 60 > args.time_budget:
            print(f"time budget of {args.time_budget} min spent; stopping before {path.name}")
            break
        with np.load(args.npz) as z:
            n_train = len(common.stratified_fraction(z["train_labels"].reshape(-1), fraction, seed))
        if args.quick:
            n_train = min(n_train, accuracy_xray.QUICK_LIMITS["train"])
        epochs = epochs_for(n_train, recipe["batch_size"], recipe["epochs"], args.min_steps)
        run_recipe = {**recipe, "weights": weights, "seed": seed, "epochs": epochs}
        with tempfile.TemporaryDirectory(prefix="bench_le_") as tmp:
            res = accuracy_xray.run(
                args.npz,
                Path(tmp),
                run_recipe,
                fraction=fraction,
                data_seed=seed,
                quick=args.quick,
                n_bootstrap=args.n_bootstrap,
                val_chooses=False,
                shift_cases=0,  # the label-efficiency curve measures clean val AUC; the shift suite is accuracy_xray's
            )
        res["run"] = {
            "weights": weights,
            "fraction": fraction,
            "seed": seed,
            "n_train": n_train,
            "epochs": epochs,
            "val_interval": epochs,
            "min_steps": args.min_steps,
            "protocol": "last epoch, threshold 0.5: val chose nothing",
        }
        common.write_result(path, res)
        done.append(res)
        print(
            f"{path.name}: val AUC {res['val']['auc']:.4f} ACC {res['val']['acc']:.4f} "
            f"({res['config']['train_wall_s']:.0f} s)"
        )
    return done


if __name__ == "__main__":
    main()
