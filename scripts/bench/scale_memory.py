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
"""Peak memory of the xray bundle's training dataset against the number of images, per ``cache`` mode (issue 25).

Images: the shipped PneumoniaMNIST training images (``../shared/data``), upsampled to ``--image_size`` (224) and
replicated under distinct file names and ids until there are as many as the largest ``--sizes`` entry (1k, 4k, 16k);
written once as PNGs into the benchmark cache. For each ``(cache mode, number of images)`` a fresh Python process
builds ``train#dataset`` exactly as ``bundles/xray/configs/train.json`` does (``train#preprocessing`` of the bundle at
``--image_size``, :func:`monai_transfer.data.cache.build_dataset` with the automatic ``num_workers`` for the first
pass), then reads ``--read_items`` items through a ``num_workers=0`` loader (so every byte the cache holds is in the
measured process), and reports its peak RSS (``ru_maxrss``). ``auto`` runs with ``--memory_budget_mb``: it must choose
``disk`` when the estimate exceeds that budget.

Reported per mode: peak RSS per size, growth per image between the smallest and the largest size (target for
``disk``: at most 16 KB per image), the chosen mode of ``auto`` and the cache's bytes per image.

Usage (from the repository root)::

    python -m scripts.bench.scale_memory              # writes benchmarks/results/scale_memory.json (+ .md)
    python -m scripts.bench.scale_memory --sizes 1000 4000 16000 --memory_budget_mb 400
    python -m scripts.bench.scale_memory --quick --output /tmp/scale_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
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

__all__ = ["write_scaled_images", "bundle_preprocessing", "measure_child", "main"]

TRAIN_JSON = common.REPO_ROOT / "bundles" / "xray" / "configs" / "train.json"


def write_scaled_images(count: int, size: int, out_dir: Path | None = None) -> list[dict[str, Any]]:
    """``count`` PNGs of ``size`` px made from the shipped training images (upsampled, replicated with distinct
    names and ``patient_id``); written once, reused. Synthetic noise images when the shared data are absent.

    The sources alternate between the classes (PneumoniaMNIST's first training images are all one class), so any
    ``count`` of at least 2 holds both classes in the same proportion."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    out_dir = out_dir or common.CACHE_DIR / f"scale_{size}_balanced"
    out_dir.mkdir(parents=True, exist_ok=True)
    if common.PNEUMONIA_NPZ.is_file():
        with np.load(common.PNEUMONIA_NPZ) as z:
            src, labels = z["train_images"], z["train_labels"].reshape(-1).astype(int)
    else:
        rng = np.random.default_rng(0)
        src, labels = rng.integers(0, 256, size=(64, 28, 28), dtype=np.uint8), np.arange(64) % 2
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    order = [int(by_class[i % len(by_class)][(i // len(by_class)) % len(by_class[i % len(by_class)])])
             for i in range(len(src))]  # fmt: skip
    items = []
    for i in range(count):
        path = out_dir / f"img_{i:06d}.png"
        j = order[i % len(order)]
        if not path.is_file():
            t = torch.from_numpy(src[j]).float()[None, None]
            up = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
            tmp = path.with_suffix(".tmp.png")
            Image.fromarray(up.round().clamp(0, 255).to(torch.uint8).numpy()).save(tmp)
            os.replace(tmp, path)
        items.append({"image": str(path), "label": int(labels[j]), "patient_id": f"p{i:06d}"})
    return items


def bundle_preprocessing(image_size: int, split: str = "train") -> Any:
    """``<split>#preprocessing`` of the xray bundle's ``train.json`` at ``image_size`` (the bundle's own pipeline)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(TRAIN_JSON))
    parser["image_size"] = int(image_size)
    return parser.get_parsed_content(f"{split}#preprocessing")


def measure_child(args: argparse.Namespace) -> dict[str, Any]:
    """Inside the fresh process: build the dataset, read items, report RSS and the cache's choice."""
    import torch

    from monai_transfer.data.cache import build_dataloader, build_dataset

    torch.set_num_threads(1)
    data = write_scaled_images(args.child_n, args.image_size)
    transform = bundle_preprocessing(args.image_size)
    rss0 = common.current_rss_mb()
    t0 = time.perf_counter()
    budget = None if args.memory_budget_mb is None else int(args.memory_budget_mb * 2**20)
    ds = build_dataset(data, transform, cache=args.child_mode, cache_dir=args.cache_dir, num_workers="auto",
                       progress=False, memory_budget=budget)  # fmt: skip
    build_s = time.perf_counter() - t0
    rss_built = common.current_rss_mb()
    n_read = min(args.read_items, len(ds))
    sub = torch.utils.data.Subset(ds, list(range(n_read)))
    t0 = time.perf_counter()
    for _ in build_dataloader(sub, batch_size=32, num_workers=0):
        pass
    read_s = time.perf_counter() - t0
    kind = type(ds).__name__
    chosen = {"RAMCachedDataset": "ram", "DiskCachedDataset": "disk"}.get(kind, "none")
    return {
        "mode": args.child_mode,
        "n": args.child_n,
        "chosen": chosen,
        "rss_before_mb": round(rss0, 1),
        "rss_built_mb": round(rss_built, 1),
        "peak_rss_mb": round(common.peak_rss_mb(), 1),
        "cache_bytes_per_image": round(ds.nbytes / len(ds)) if hasattr(ds, "nbytes") else None,
        "build_s": round(build_s, 2),
        "read_items": n_read,
        "read_images_per_s": round(n_read / read_s, 1),
    }


def _run_child(mode: str, n: int, args: argparse.Namespace, cache_dir: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "scripts.bench.scale_memory", "--child_mode", mode, "--child_n", str(n),
           "--image_size", str(args.image_size), "--read_items", str(args.read_items),
           "--cache_dir", str(cache_dir)]  # fmt: skip
    if mode == "auto" and args.memory_budget_mb is not None:
        cmd += ["--memory_budget_mb", str(args.memory_budget_mb)]
    pythonpath = os.pathsep.join(filter(None, [str(common.REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1",
           "MONAI_TRANSFER_BENCH_CACHE": str(common.CACHE_DIR)}  # fmt: skip
    out = subprocess.run(cmd, cwd=common.REPO_ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"scale_memory child {mode} n={n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode: peak RSS by size and the growth per image between the smallest and the largest size."""
    out: dict[str, Any] = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["n"])
        lo, hi = rs[0], rs[-1]
        growth = (hi["peak_rss_mb"] - lo["peak_rss_mb"]) * 2**20 / max(1, hi["n"] - lo["n"])
        out[mode] = {"peak_rss_mb": {str(r["n"]): r["peak_rss_mb"] for r in rs},
                     "growth_kb_per_image": round(growth / 1024, 2),
                     "chosen": {str(r["n"]): r["chosen"] for r in rs}}  # fmt: skip
    if "disk" in out:
        out["disk"]["within_16kb_per_image"] = out["disk"]["growth_kb_per_image"] <= 16.0
    return out


def markdown(result: dict[str, Any]) -> str:
    sizes = result["config"]["sizes"]
    lines = [f"Peak RSS (MB) of the xray training dataset at {result['config']['image_size']} px, fresh process per "
             f"cell; `auto` with a {result['config']['memory_budget_mb']} MB budget.", "",
             "| cache | " + " | ".join(f"{n} images" for n in sizes) + " | growth per image | auto chose |",
             "| --- | " + " | ".join("---" for _ in sizes) + " | --- | --- |"]  # fmt: skip
    for mode, s in result["summary"].items():
        cells = " | ".join(str(s["peak_rss_mb"].get(str(n), "")) for n in sizes)
        chose = ", ".join(f"{n}: {c}" for n, c in s["chosen"].items()) if mode == "auto" else ""
        growth = f"{s['growth_kb_per_image']} KB" if len(set(s["chosen"].values())) == 1 else "n/a (switched)"
        lines.append(f"| `{mode}` | {cells} | {growth} | {chose} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "scale_memory.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000], help="numbers of images")
    parser.add_argument("--modes", nargs="+", default=["ram", "disk", "auto"], help="cache modes")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--read_items", type=int, default=1024, help="items read after building (one loader pass)")
    parser.add_argument("--memory_budget_mb", type=float, default=400.0, help="auto's memory budget")
    parser.add_argument("--cache_dir", type=Path, default=None, help="disk cache root (default: a temporary folder)")
    parser.add_argument("--child_mode", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child_n", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_mode is not None:
        print(json.dumps(measure_child(args)))
        return {}
    common.set_command(__file__, argv)
    if args.quick:
        args.sizes, args.image_size, args.read_items, args.memory_budget_mb = [16, 48], 32, 16, 0.05
    env = common.environment()
    write_scaled_images(max(args.sizes), args.image_size)  # once, before the timed children
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale_memory_") as tmp:
        for mode in args.modes:
            for n in args.sizes:
                cache_dir = (args.cache_dir or Path(tmp)) / f"{mode}_{n}"  # each cell fills its own cache
                rows.append(_run_child(mode, n, args, cache_dir))
                print(json.dumps(rows[-1]), flush=True)
    result = {"config": {"sizes": args.sizes, "modes": args.modes, "image_size": args.image_size,
                         "read_items": args.read_items, "memory_budget_mb": args.memory_budget_mb,
                         "quick": args.quick},
              "rows": rows, "summary": summarise(rows), "env": common.finish_environment(env)}  # fmt: skip
    common.write_result(args.output, result)
    from monai_transfer.utils.io import atomic_write_text

    atomic_write_text(args.output.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
