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
"""Training throughput of the bundle's ``SupervisedTrainer`` against a hand-written PyTorch loop.

Both run the same ``Pretrained2DNet`` (EfficientNet-Lite0, the xray bundle's network), the same pre-loaded
tensors (real PneumoniaMNIST images resized once to the bundle's input size, so no data loading is timed), the same
batch size, loss (class-weighted cross-entropy from ``build_loss``), AdamW from ``build_optimizer``, per-iteration
cosine schedule from ``build_scheduler``, gradient-norm clipping at 5 and the same torch thread count. Two engine
variants are measured:

- ``engine_bare``: ``monai.engines.SupervisedTrainer`` with no handlers and no post-processing (the engine itself);
- ``engine_bundle``: the trainer as ``bundles/xray/configs/train.json`` sets it up: ``ChannelsLastPrepareBatch``,
  ``Activationsd(softmax)`` post-processing (with MONAI's per-item decollate), ``GradNormClipper`` and
  ``LrScheduleHandler`` handlers (validation, checkpointing, progress bar and TensorBoard excluded: they are not
  per-iteration training work).

The three loops run interleaved for ``--repeats`` rounds from the same initial weights; each reports images/s
(median of rounds) and the ratio ``engine / hand`` (1.0 = no overhead; overhead = 1 - ratio).

Usage (from the repository root)::

    python -m scripts.bench.speed_train             # writes benchmarks/results/speed_train.json
    python -m scripts.bench.speed_train --quick --output /tmp/speed_train.json
"""

from __future__ import annotations

import argparse
import copy
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

__all__ = ["load_batches", "hand_loop", "engine_loop", "main"]


def load_batches(n_batches: int, batch_size: int, image_size: int, quick: bool) -> list[dict[str, Any]]:
    """Pre-loaded ``{"image", "label"}`` batches of real images (synthetic when the shared data are absent)."""
    import torch
    import torch.nn.functional as F

    n = n_batches * batch_size
    if common.PNEUMONIA_NPZ.is_file():
        with np.load(common.PNEUMONIA_NPZ) as z:
            x, y = z["train_images"][:n], z["train_labels"][:n].reshape(-1)
    else:  # pragma: no cover - only without ../shared/data
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), rng.integers(0, 2, n)
    t = torch.from_numpy(x).float().div(255).unsqueeze(1)
    t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False)
    t = ((t - 0.5) / 0.5).repeat(1, 3, 1, 1).contiguous()
    lab = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return [{"image": t[i : i + batch_size], "label": lab[i : i + batch_size]} for i in range(0, n, batch_size)]


def _setup(model0: Any, batches: list[dict[str, Any]], epochs: int) -> tuple[Any, Any, Any, Any]:
    from monai_transfer.losses.classification import build_loss
    from monai_transfer.optimizers.builders import build_optimizer, build_scheduler

    model = copy.deepcopy(model0).train()
    labels = np.concatenate([b["label"].numpy() for b in batches])
    loss = build_loss("ce", num_classes=2, labels=labels, imbalance="weights")
    opt = build_optimizer(model, name="adamw", lr=1e-3, weight_decay=1e-4)
    sched = build_scheduler(opt, name="cosine", epochs=epochs, steps_per_epoch=len(batches), warmup_epochs=0)
    return model, loss, opt, sched


def hand_loop(model0: Any, batches: list[dict[str, Any]], epochs: int = 1) -> float:
    """Hand-written loop: forward, loss, backward, clip, step, schedule. Returns seconds."""
    import torch

    model, loss_fn, opt, sched = _setup(model0, batches, epochs)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for b in batches:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(b["image"]), b["label"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
    return time.perf_counter() - t0


def engine_loop(model0: Any, batches: list[dict[str, Any]], epochs: int = 1, bundle: bool = True) -> float:
    """MONAI ``SupervisedTrainer`` over the same batches (bundle set-up or bare engine). Returns seconds."""
    import torch
    from monai.engines import SupervisedTrainer
    from monai.handlers import LrScheduleHandler
    from monai.transforms import Activationsd, Compose

    from monai_transfer.engines.utils import ChannelsLastPrepareBatch
    from monai_transfer.handlers.grad_clip import GradNormClipper

    model, loss_fn, opt, sched = _setup(model0, batches, epochs)
    kwargs: dict[str, Any] = {}
    handlers: list[Any] = []
    if bundle:
        kwargs["prepare_batch"] = ChannelsLastPrepareBatch()
        kwargs["postprocessing"] = Compose([Activationsd(keys="pred", softmax=True)])
        handlers = [LrScheduleHandler(sched, epoch_level=False, print_lr=False), GradNormClipper(5.0)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=batches,
        network=model,
        optimizer=opt,
        loss_function=loss_fn,
        train_handlers=handlers,
        amp=False,
        **kwargs,
    )
    if not bundle:
        from monai.engines.utils import IterationEvents

        def _clip_and_schedule(engine: Any) -> None:  # same work as the hand loop, without MONAI handlers
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)

        trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, _clip_and_schedule)
        trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda e: None)
        from ignite.engine import Events

        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: sched.step())
    t0 = time.perf_counter()
    trainer.run()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "speed_train.json")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30, help="batches per timed epoch")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    if args.quick:
        args.batch_size, args.image_size, args.batches, args.repeats = 8, 32, 3, 2
    threads = common.set_threads(args.threads)
    env = common.environment()

    import torch

    from monai_transfer.networks.nets import Pretrained2DNet

    torch.manual_seed(0)
    model0 = Pretrained2DNet(backbone="tf_efficientnet_lite0", weights="none", num_classes=2, in_channels=3)
    batches = load_batches(args.batches, args.batch_size, args.image_size, args.quick)
    n_img = sum(len(b["label"]) for b in batches)
    # warm-up (allocator, first-call overheads) for each variant
    hand_loop(model0, batches[:2])
    engine_loop(model0, batches[:2], bundle=False)
    engine_loop(model0, batches[:2], bundle=True)
    times: dict[str, list[float]] = {"hand": [], "engine_bare": [], "engine_bundle": []}
    for _ in range(args.repeats):
        times["hand"].append(hand_loop(model0, batches))
        times["engine_bare"].append(engine_loop(model0, batches, bundle=False))
        times["engine_bundle"].append(engine_loop(model0, batches, bundle=True))
    res: dict[str, Any] = {"images_per_round": n_img, "throughput_img_s": {}, "seconds": times}
    for k, v in times.items():
        res["throughput_img_s"][k] = n_img / float(np.median(v))
    hand = res["throughput_img_s"]["hand"]
    res["ratio_vs_hand"] = {k: v / hand for k, v in res["throughput_img_s"].items()}
    res["overhead_pct"] = {k: 100.0 * (1.0 - v) for k, v in res["ratio_vs_hand"].items() if k != "hand"}
    # per-round ratios show the noise from other jobs on the machine
    res["per_round_ratio_bundle"] = [h / e for h, e in zip(times["hand"], times["engine_bundle"])]
    res["target"] = "engine overhead < 5% (ratio > 0.95)"
    res["meets_target"] = bool(res["ratio_vs_hand"]["engine_bundle"] > 0.95)
    res["config"] = {
        "network": "Pretrained2DNet(tf_efficientnet_lite0, weights='none'); weights do not change the speed",
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "batches": args.batches,
        "repeats": args.repeats,
        "threads": threads,
        "device": "cpu",
        "quick": args.quick,
    }
    res["env"] = common.finish_environment(env)
    common.write_result(args.output, res)
    print(
        {k: round(v, 1) for k, v in res["throughput_img_s"].items()},
        "ratios",
        {k: round(v, 3) for k, v in res["ratio_vs_hand"].items()},
    )
    return res


if __name__ == "__main__":
    main()
