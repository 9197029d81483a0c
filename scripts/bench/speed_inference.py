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
"""Inference latency (batch 1) and throughput (batch 64) of the xray bundle's network.

``Pretrained2DNet(tf_efficientnet_lite0)`` in eval mode under ``torch.inference_mode()``, at the bundle's input
size (64) and at ImageNet size (224). On CPU: float32, contiguous and channels_last. On a CUDA GPU (when one is
available): float32 and AMP (float16 autocast) with channels_last, synchronised timings. Latency is the median of
``--repeats`` single-image calls; throughput is images/s of batch-64 calls.

Usage (from the repository root)::

    python -m scripts.bench.speed_inference          # writes benchmarks/results/speed_inference.json
    python -m scripts.bench.speed_inference --quick --output /tmp/speed_inference.json
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __name__ == "__main__" and not __package__:  # run as a path (python scripts/bench/<name>.py): run as the module
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    runpy.run_module(f"scripts.bench.{Path(__file__).stem}", run_name="__main__", alter_sys=True)
    sys.exit()

from scripts.bench import common

__all__ = ["measure", "main"]


def measure(model: Any, device: Any, size: int, batch: int, repeats: int, amp: bool, channels_last: bool) -> dict:
    """Median seconds per call of ``model`` on a ``(batch, 3, size, size)`` input; returns latency/throughput."""
    import torch

    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    cuda = device.type == "cuda"

    def call() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            model(x)
        if cuda:
            torch.cuda.synchronize()

    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    med = float(np.median(times))
    return {
        "batch": batch,
        "median_s": med,
        "p90_s": float(np.percentile(times, 90)),
        "images_per_s": batch / med,
        "latency_ms_per_image": 1000.0 * med / batch,
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "speed_inference.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default=None, help="cpu, cuda or both (default: cpu, plus cuda when available)")
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    if args.quick:
        args.sizes, args.repeats = [32], 2
    threads = common.set_threads(args.threads)
    env = common.environment()
    import torch

    from monai_transfer.networks.nets import Pretrained2DNet

    devices = [args.device] if args.device else (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = []
    for dev_name in devices:
        device = torch.device(dev_name)
        variants = [("fp32", False, False), ("fp32_channels_last", False, True)]
        if device.type == "cuda":
            variants.append(("amp_fp16_channels_last", True, True))
        for label, amp, cl in variants:
            model = Pretrained2DNet(backbone="tf_efficientnet_lite0", weights="none", num_classes=2, in_channels=3)
            model = model.eval().to(device, memory_format=torch.channels_last if cl else torch.preserve_format)
            for size in args.sizes:
                for batch, reps in ((1, args.repeats * 2), (64 if not args.quick else 4, args.repeats)):
                    r = measure(model, device, size, batch, reps, amp, cl)
                    rows.append({"device": dev_name, "variant": label, "image_size": size, **r})
    res: dict[str, Any] = {
        "rows": rows,
        "gpu_measured": any(r["device"] == "cuda" for r in rows),
        "config": {
            "network": "Pretrained2DNet(tf_efficientnet_lite0), eval, torch.inference_mode",
            "threads": threads,
            "quick": args.quick,
        },
        "env": common.finish_environment(env),
    }
    common.write_result(args.output, res)
    for r in rows:
        print(
            f"{r['device']} {r['variant']} {r['image_size']}px batch {r['batch']}: "
            f"{r['latency_ms_per_image']:.2f} ms/img, {r['images_per_s']:.1f} img/s"
        )
    return res


if __name__ == "__main__":
    main()
