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
"""Volume-level accuracy of the ct_slices bundle on AdrenalMNIST3D (MedMNIST v2), same contract as accuracy_xray.

The npz volumes are written once as NIfTI files (:func:`monai_transfer.data.datalist_from_npz`) with a CSV data list
(``split`` column) that the bundle's ``dataset_dir`` accepts; ``monai.bundle.ConfigWorkflow`` runs
``bundles/ct_slices/configs/train.json`` (2.5D slices of an ImageNet-pretrained EfficientNet-Lite0, slice
probabilities pooled per volume) with the recipe as overrides. Val and, with ``--test`` (keys ``test_images``,
``test_labels``), a held-out split are then scored volume by volume with the scripted evaluation
``monai_transfer.evaluate.evaluate_bundle`` (what ``python -m monai_transfer.evaluate`` runs), using the checkpoint
and the Youden threshold chosen on val during training: the threshold is never tuned on test.

Output ``<output>/results.json``: ``{"val": {...}, "test": {...} (only with --test), "config": {...}, "env": {...}}``.

Usage (from the repository root)::

    python -m scripts.bench.accuracy_volume --output benchmarks/results/accuracy_volume
    python -m scripts.bench.accuracy_volume --test adrenalmnist3d_64_test.npz --output /tmp/vol
    python -m scripts.bench.accuracy_volume --quick --output /tmp/vol_quick
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

__all__ = ["RECIPE", "QUICK_RECIPE", "CLASS_NAMES", "write_volumes", "evaluate_split", "main"]

CLASS_NAMES = ["normal", "adrenal_mass"]
BUNDLE = common.REPO_ROOT / "bundles" / "ct_slices"
#: bundle defaults (axial 2.5D slices with offsets -1/0/+1, 4 random foreground slices per volume for training,
#: 16 central slices at evaluation, mean pooling) at 64x64 for 4 epochs over the full train split
RECIPE: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0",
    "weights": "packaged",
    "image_size": 64,
    "epochs": 4,
    "batch_size": 32,
    "learning_rate": 0.001,
    "seed": 0,
}
#: the evaluation script reads ``configs/inference.json``: image size and slicing stay at the bundle's values
QUICK_RECIPE: dict[str, Any] = {**RECIPE, "epochs": 1, "batch_size": 8}
QUICK_LIMITS = {"train": 16, "val": 12, "test": 8}


def write_volumes(npz: Path, split: str, out_dir: Path, n: int | None = None) -> tuple[Path, list[dict[str, Any]]]:
    """NIfTI files of one npz split in ``out_dir/<split>`` (cached) and a labels CSV for the evaluation script."""
    from monai_transfer.data.npz import datalist_from_npz

    folder = out_dir / (split if n is None else f"{split}_n{n}")
    marker = folder / ".complete"
    if marker.is_file():
        items = [
            {"image": str(folder / r["image"]), "label": int(r["label"])}
            for r in csv.DictReader(open(folder.parent / f"{folder.name}_labels.csv", encoding="utf-8"))
        ]
    else:
        items = datalist_from_npz(npz, split, folder, fmt="nii.gz", n=n, seed=0)
    labels_csv = folder.parent / f"{folder.name}_labels.csv"
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


def evaluate_split(
    ckpt: Path, images: Path, labels_csv: Path, out: Path, n_bootstrap: int, batch_size: int = 32
) -> dict[str, Any]:
    """Score one split with ``monai_transfer.evaluate.evaluate_bundle`` and summarise it (AUC/ACC with CIs)."""
    from monai_transfer.evaluate import evaluate_bundle
    from monai_transfer.metrics.threshold import load_threshold

    t0 = time.perf_counter()
    res = evaluate_bundle(BUNDLE, images, out, labels=labels_csv, ckpt=ckpt, n_bootstrap=0, batch_size=batch_size)
    wall = time.perf_counter() - t0
    preds = [p for p in res.predictions if p.label is not None]
    y = np.asarray([p.label for p in preds])
    prob = np.asarray([float(np.asarray(p.probs)[1]) for p in preds])
    thr = float(load_threshold(ckpt.parent / "threshold.json"))
    out_s = accuracy_xray.summarise(prob, y, thr, n_bootstrap, CLASS_NAMES)
    out_s.update({"n_failed": len(res.failures), "eval_wall_s": round(wall, 1), "level": "volume"})
    return out_s


def run(
    npz: Path,
    output: Path,
    recipe: dict[str, Any],
    test_npz: Path | None = None,
    quick: bool = False,
    n_bootstrap: int = 1000,
) -> dict[str, Any]:
    """Train the ct_slices bundle, score val (and test) volume by volume, write ``output/results.json``."""
    import torch
    from monai.bundle import ConfigWorkflow

    env = common.environment()
    cache = common.CACHE_DIR / ("adrenal_nii_quick" if quick else "adrenal_nii")
    lim = QUICK_LIMITS if quick else {}
    _, train_items = write_volumes(npz, "train", cache, lim.get("train"))
    val_csv, val_items = write_volumes(npz, "val", cache, lim.get("val"))
    dl_csv = _datalist_csv(
        cache, {"train": train_items, "val": val_items}, "datalist_quick.csv" if quick else "datalist.csv"
    )
    with tempfile.TemporaryDirectory(prefix="bench_vol_") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        wf = ConfigWorkflow(
            config_file=str(BUNDLE / "configs" / "train.json"),
            meta_file=str(BUNDLE / "configs" / "metadata.json"),
            logging_file=False,
            workflow_type="train",
            **{**recipe, "dataset_dir": str(dl_csv), "output_dir": str(work), "n_bootstrap": n_bootstrap},
        )
        wf.initialize()
        wf.run()
        wf.finalize()
        train_s = time.perf_counter() - t0
        ckpt = work / "models" / "model.pt"
        bundle_val = common.read_result(work / "eval" / "val" / "metrics.json") or {}
        results: dict[str, Any] = {
            "val": evaluate_split(
                ckpt, val_csv.parent / val_csv.stem[: -len("_labels")], val_csv, work / "eval_val", n_bootstrap
            )
        }
        results["val"]["bundle_report_auc"] = bundle_val.get("metrics", {}).get("auc")
        if test_npz is not None:
            test_csv, _ = write_volumes(Path(test_npz), "test", work / "test_volumes", lim.get("test"))
            results["test"] = evaluate_split(
                ckpt, test_csv.parent / test_csv.stem[: -len("_labels")], test_csv, work / "eval_test", n_bootstrap
            )
            results["test"]["source"] = str(test_npz)
    results["config"] = {
        **recipe,
        "bundle": "bundles/ct_slices/configs/train.json",
        "evaluation": "monai_transfer.evaluate.evaluate_bundle (python -m monai_transfer.evaluate)",
        "data": str(npz),
        "counts": {"train": len(train_items), "val": len(val_items)},
        "threshold_method": "youden on val during training (models/threshold.json)",
        "n_bootstrap": n_bootstrap,
        "train_wall_s": round(train_s, 1),
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
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--n-bootstrap", type=int, default=None)
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    common.set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    recipe = dict(QUICK_RECIPE if args.quick else RECIPE)
    for key, val in (("weights", args.weights), ("epochs", args.epochs)):
        if val is not None:
            recipe[key] = val
    n_boot = args.n_bootstrap if args.n_bootstrap is not None else (50 if args.quick else 1000)
    res = run(args.npz, args.output, recipe, args.test, quick=args.quick, n_bootstrap=n_boot)
    for split in ("val", "test"):
        if split in res:
            r = res[split]
            print(
                f"{split}: AUC {r['auc']:.4f} {r.get('auc_ci95')}  ACC {r['acc']:.4f} {r.get('acc_ci95')}"
                f"  (threshold {r['threshold']:.3f}, n={r['n']} volumes)"
            )
    print(f"wrote {Path(args.output) / 'results.json'}")
    return res


if __name__ == "__main__":
    main()
