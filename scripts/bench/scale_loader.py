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
"""Data-loader throughput of the xray bundle's training pipeline at 224 px, per cache mode and ``num_workers``
(issue 25), all in one run so that the ratios compare like with like.

The dataset is ``train#dataset`` as the bundle builds it (its ``train#preprocessing`` at ``--image_size``: the default
augmentation and the backbone normalisation; :func:`monai_transfer.data.cache.build_dataset`), over ``--count``
PNGs made from the shipped images (``scale_memory.write_scaled_images``; 4,096 by default: the workers start anew
each epoch, about 0.1 s, which weighs 10 % in an epoch of 1,024 images and little in users' 10k-400k). The cache is
filled first (not timed);
then each configuration reads ``--epochs`` epochs of batches of 32 through
:func:`monai_transfer.data.cache.build_dataloader` (the bundle's loader), rounds interleaved, median reported:

- ``ram_w0``: RAM cache, ``num_workers=0`` (everything in the training process);
- ``ram_auto``: RAM cache, the automatic ``num_workers`` (the default);
- ``ram_w0_item`` / ``ram_auto_item``: the same with the backbone normalisation per item (3-channel float32 items
  from the workers, before ``batch_normalise``); all others keep the items grey and normalise each batch in the
  training process (``build_dataset(batch_normalise=True)``, as the bundle's ``train#dataset``; its cost is in the
  figures: :func:`~monai_transfer.data.cache.build_dataloader` applies it while iterating);
- ``disk_auto`` / ``disk_w0``: the disk cache, automatic and 0 workers;
- ``ram_w0_tracked``: ``ram_w0`` with MONAI's metadata tracking in the random transforms (``track_meta=True``, what
  the bundle did before); all others run them on plain tensors as the bundle's ``train#dataset`` now does;
- ``persistent_w0``: MONAI's ``PersistentDataset`` with the same transform (tracked metadata, float32 files), against
  ``disk_w0`` (with file sizes per image);
- ``ram_auto_f32``: ``ram_auto`` with the grey items handed over in float32 (``item_dtype=None``) instead of float16;
- ``ram_w0_monai_affine``: ``ram_w0`` with MONAI's ``RandAffined`` instead of the bundle's ``FastRandAffined`` (same
  draws, float64 resampling on MONAI's identity grid).

Per-core throughput divides by the cores the configuration can use (``min(workers, cores)``, 1 for 0 workers);
images per CPU second divides by the CPU time the main process and its workers used (load-independent: on a shared,
busy machine the wall-clock figures say little about an idle one).
Targets (``targets`` in the JSON, each with its value and whether it is met): ``ram_auto / ram_w0 >= 1.6`` on 2
cores, ``disk_auto / ram_auto >= 0.8``, ``ram_w0`` per core >= 580 images/s (the number measured before the change,
issue 25). The training process's own work (the network) is not included. On a shared, busy machine (see ``env``'s
load averages and note) the wall-clock ratios understate what an idle machine gives: the workers compete with the
other jobs for the cores.

Usage (from the repository root)::

    python -m scripts.bench.scale_loader              # writes benchmarks/results/scale_loader.json (+ .md)
    python -m scripts.bench.scale_loader --quick --output /tmp/scale_loader.json
"""

from __future__ import annotations

import argparse
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

from scripts.bench import common

__all__ = ["loader_rate", "main"]


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the loader's workers, joined at the end of a pass)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def loader_rate(loader: Any) -> tuple[float, float]:
    """``(images per wall second, images per CPU second)`` of one pass over ``loader`` (batches with ``image``).

    The CPU figure counts the main process and the worker processes; unlike the wall figure it hardly depends on
    other jobs sharing the cores.
    """
    t, c, n = time.perf_counter(), _cpu_seconds(), 0
    it = iter(loader)
    for batch in it:
        n += int(batch["image"].shape[0])
    del it  # joins the workers, so their CPU time is counted
    wall, cpu = time.perf_counter() - t, _cpu_seconds() - c
    return n / wall, (n / cpu if cpu > 0 else float("nan"))


def _with_monai_affine(image_size: int) -> Any:
    """The bundle's ``train#preprocessing`` with MONAI's ``RandAffined`` in place of ``FastRandAffined``."""
    from monai.bundle import ConfigParser

    from scripts.bench.scale_memory import TRAIN_JSON

    parser = ConfigParser()
    parser.read_config(str(TRAIN_JSON))
    parser["image_size"] = int(image_size)
    aug = parser["train"]["augmentation"]
    i = next(i for i, t in enumerate(aug) if t["_target_"].endswith("RandAffined"))
    parser[f"train#augmentation#{i}#_target_"] = "monai.transforms.RandAffined"
    return parser.get_parsed_content("train#preprocessing")


def _targets(med: dict[str, float], used: dict[str, int]) -> dict[str, dict[str, Any]]:
    """The done-when of issue 25, each as ``{value, target, met}``."""
    values = {"ram_auto_over_ram_w0": (med["ram_auto"] / med["ram_w0"], 1.6),
              "disk_auto_over_ram_auto": (med["disk_auto"] / med["ram_auto"], 0.8),
              "ram_w0_per_core": (med["ram_w0"] / used["ram_w0"], 580.0)}  # fmt: skip
    return {k: {"value": round(v, 3), "target": t, "met": bool(v >= t)} for k, (v, t) in values.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "scale_loader.json")
    parser.add_argument("--count", type=int, default=4096, help="images (one epoch)")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3, help="timed rounds per configuration (interleaved)")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    if args.quick:
        args.count, args.image_size, args.epochs, args.batch_size = 32, 32, 1, 8
    threads = common.set_threads(args.threads if args.threads is not None else 1)
    env = common.environment()

    from monai_transfer.data.cache import auto_num_workers, build_dataloader, build_dataset
    from scripts.bench.scale_memory import bundle_preprocessing, write_scaled_images

    data = write_scaled_images(args.count, args.image_size)
    auto = auto_num_workers()
    cores = len(__import__("os").sched_getaffinity(0))
    rates: dict[str, list[float]] = {}
    cpu_rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="scale_loader_") as tmp:
        t0 = time.perf_counter()
        pre = bundle_preprocessing(args.image_size)  # as the bundle's train#dataset: track_meta=False
        bundle = dict(progress=False, track_meta=False, batch_normalise=True)  # as the bundle's train#dataset
        sets = {"ram": build_dataset(data, pre, cache="ram", **bundle),
                "disk": build_dataset(data, pre, cache="disk", cache_dir=tmp, **bundle)}  # fmt: skip
        fill_s = time.perf_counter() - t0
        sets["ram_item"] = build_dataset(data, pre, cache="ram", progress=False, track_meta=False)  # per-item normalise
        sets["ram_tracked"] = build_dataset(data, pre, cache="ram", progress=False, batch_normalise=True)
        sets["ram_f32"] = build_dataset(data, pre, cache="ram", item_dtype=None, **bundle)
        sets["ram_monai_affine"] = build_dataset(data, _with_monai_affine(args.image_size), cache="ram", **bundle)
        from monai.data import PersistentDataset

        sets["persistent"] = PersistentDataset(data, pre, cache_dir=Path(tmp) / "persistent")
        for i in range(len(sets["persistent"])):  # its first pass (serial), not timed
            sets["persistent"][i]
        persistent_files = (Path(tmp) / "persistent").glob("*.pt")
        sizes = {"disk": sum(p.stat().st_size for p in sets["disk"].paths) / len(data),
                 "persistent": sum(p.stat().st_size for p in persistent_files) / len(data)}  # fmt: skip
        configs = {"ram_w0": ("ram", 0), "ram_auto": ("ram", "auto"), "disk_w0": ("disk", 0),
                   "disk_auto": ("disk", "auto"), "ram_w0_item": ("ram_item", 0), "ram_auto_item": ("ram_item", "auto"),
                   "ram_w0_tracked": ("ram_tracked", 0), "persistent_w0": ("persistent", 0),
                   "ram_auto_f32": ("ram_f32", "auto"), "ram_w0_monai_affine": ("ram_monai_affine", 0)}  # fmt: skip
        for _ in range(args.epochs):
            for name, (mode, workers) in configs.items():
                loader = build_dataloader(sets[mode], batch_size=args.batch_size, shuffle=True, num_workers=workers,
                                          drop_last=True)  # fmt: skip
                wall_rate, cpu_rate = loader_rate(loader)
                rates.setdefault(name, []).append(wall_rate)
                cpu_rates.setdefault(name, []).append(cpu_rate)
                del loader
    med = {k: float(np.median(v)) for k, v in rates.items()}
    cpu_med = {k: float(np.median(v)) for k, v in cpu_rates.items()}
    used = {k: (1 if configs[k][1] == 0 else min(auto, cores)) for k in configs}
    result = {
        "config": {"count": args.count, "image_size": args.image_size, "epochs": args.epochs,
                   "batch_size": args.batch_size, "auto_num_workers": auto, "cores": cores, "torch_threads": threads,
                   "quick": args.quick},
        "cache_fill_s": round(fill_s, 2),
        "file_kb_per_image": {k: round(v / 1e3, 1) for k, v in sizes.items()},
        "images_per_s": {k: round(v, 1) for k, v in med.items()},
        "images_per_s_per_core": {k: round(med[k] / used[k], 1) for k in med},
        "images_per_cpu_s": {k: round(v, 1) for k, v in cpu_med.items()},
        "rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "ratios": {"ram_auto_over_ram_w0": round(med["ram_auto"] / med["ram_w0"], 3),
                   "ram_auto_item_over_ram_w0_item": round(med["ram_auto_item"] / med["ram_w0_item"], 3),
                   "cpu_ram_auto_over_ram_w0": round(cpu_med["ram_auto"] / cpu_med["ram_w0"], 3),
                   "cpu_ram_auto_item_over_ram_w0_item": round(cpu_med["ram_auto_item"] / cpu_med["ram_w0_item"], 3),
                   "disk_auto_over_ram_auto": round(med["disk_auto"] / med["ram_auto"], 3),
                   "disk_w0_over_ram_w0": round(med["disk_w0"] / med["ram_w0"], 3),
                   "ram_w0_over_ram_w0_tracked": round(med["ram_w0"] / med["ram_w0_tracked"], 3),
                   "disk_w0_over_persistent_w0": round(med["disk_w0"] / med["persistent_w0"], 3),
                   "ram_auto_over_ram_auto_f32": round(med["ram_auto"] / med["ram_auto_f32"], 3),
                   "ram_w0_over_ram_w0_monai_affine": round(med["ram_w0"] / med["ram_w0_monai_affine"], 3)},
        "targets": _targets(med, used),
        "env": common.finish_environment(env),
    }  # fmt: skip
    common.write_result(args.output, result)
    md = [f"Loader alone, xray `train#preprocessing` at {args.image_size} px, {args.count} images, batch "
          f"{args.batch_size}, {cores} cores (auto `num_workers` = {auto}).", "",
          "| configuration | images/s | per core | images per CPU second |", "| --- | --- | --- | --- |"]  # fmt: skip
    md += [f"| `{k}` | {result['images_per_s'][k]} | {result['images_per_s_per_core'][k]} | "
           f"{result['images_per_cpu_s'][k]} |" for k in med]  # fmt: skip
    md += ["", "Ratios: " + ", ".join(f"{k} {v}" for k, v in result["ratios"].items())]
    md += ["", "Targets (issue 25): " + ", ".join(f"{k} {v['value']} (target {v['target']}: "
                                                  f"{'met' if v['met'] else 'NOT met'})"
                                                  for k, v in result["targets"].items())]  # fmt: skip
    md += ["", f"Machine: {result['env'].get('note', '')}"]
    from monai_transfer.utils.io import atomic_write_text

    atomic_write_text(args.output.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
