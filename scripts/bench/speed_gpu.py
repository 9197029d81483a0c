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
"""Training images/s of the xray bundle's trainer against a hand-written loop over the same data pipeline, on the
device at hand (the GPU check of issue 25; on CPU with ``--quick`` it runs in seconds, in CI).

Both sides are built from ``bundles/xray/configs/train.json`` with the same overrides (``--image_size`` 224,
``--backbone``, ``--batch_size``, ``amp``, ``num_workers``, ``weights none``: the speed does not depend on the
weights' values), over ``--count`` PNGs made from the shipped images (``scale_memory.write_scaled_images``):

- ``bundle``: ``train#trainer`` (MONAI ``SupervisedTrainer``) with every handler of the bundle attached (per-epoch
  seeding, LR schedule, gradient clipping, weight EMA, loggers), validation pushed past the timed epoch;
- ``hand``: a plain PyTorch loop over ``train#dataloader`` of a second parser: the same network definition,
  ``prepare_batch``, loss, optimiser, gradient clipping, LR schedule and EMA update, ``torch.autocast`` + ``GradScaler``
  for AMP.

Each configuration times ``--iterations`` iterations after ``--warmup`` (CUDA synchronised at both ends).
Configurations: AMP off/on x channels_last off/on at the automatic ``num_workers``, then each ``--num_workers``
value with AMP and channels_last on. ``--torchrun`` adds a one-process ``torchrun`` run of ``train.json`` +
``multi_gpu_train.json`` (timed by the same handler, attached through an extra config file).
The JSON records the device's name.

Usage (from the repository root)::

    python -m scripts.bench.speed_gpu --torchrun           # writes benchmarks/results/speed_gpu.json (+ .md)
    python -m scripts.bench.speed_gpu --quick --output /tmp/speed_gpu.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a path (python scripts/bench/<name>.py): run as the module
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    runpy.run_module(f"scripts.bench.{Path(__file__).stem}", run_name="__main__", alter_sys=True)
    sys.exit()

from scripts.bench import common

__all__ = ["IterationTimer", "attach_timer", "write_datalist", "bundle_parser", "bundle_run", "hand_run", "main"]

CONFIGS = common.REPO_ROOT / "bundles" / "xray" / "configs"


class IterationTimer:
    """Images/s of iterations ``warmup+1 .. warmup+iterations`` of an Ignite engine; stops the engine after them.

    Args:
        warmup: untimed iterations first.
        iterations: timed iterations (the engine is terminated after them).
        output: optional JSON file written at the end (the torchrun run).
        terminate: stop the engine after the timed iterations (the torchrun run instead finishes its one epoch, so
            that its validation and report run as in any training).
    """

    def __init__(self, warmup: int, iterations: int, output: str | None = None, terminate: bool = True) -> None:
        self.warmup, self.iterations, self.output, self.terminate = int(warmup), int(iterations), output, terminate
        self.images, self.seconds, self._t0 = 0, float("nan"), None

    @staticmethod
    def _sync() -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def step(self, batch_items: int) -> bool:
        """Count one finished iteration; True once the timed iterations are done."""
        done = getattr(self, "_done", 0) + 1
        self._done = done
        if done == self.warmup:
            self._sync()
            self._t0 = time.perf_counter()
        elif done > self.warmup:
            self.images += int(batch_items)
        if done == self.warmup + self.iterations:
            self._sync()
            self.seconds = time.perf_counter() - (self._t0 if self._t0 is not None else time.perf_counter())
            if self.output:
                Path(self.output).write_text(json.dumps({"images": self.images, "seconds": self.seconds}))
            return True
        return False

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds and self.seconds > 0 else float("nan")

    def __call__(self, engine: Any) -> None:
        batch = engine.state.batch  # MONAI decollates it into a list of items after the iteration
        items = len(batch) if isinstance(batch, (list, tuple)) else int(batch["image"].shape[0])
        if self.step(items) and self.terminate:
            engine.terminate()


def attach_timer(trainer: Any, output: str, warmup: int, iterations: int) -> IterationTimer:
    """Attach an :class:`IterationTimer` to ``trainer`` (used from the torchrun run's extra config)."""
    from ignite.engine import Events

    timer = IterationTimer(warmup, iterations, output, terminate=False)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, timer)
    return timer


def write_datalist(count: int, image_size: int, work: Path) -> Path:
    """A CSV data list (``image,label,patient_id,split``; 90 % train) of the scaled PNGs: the bundle's dataset_dir."""
    from scripts.bench.scale_memory import write_scaled_images

    items = write_scaled_images(count, image_size)
    folder = Path(items[0]["image"]).parent  # the data list sits beside the images (paths must stay under it)
    path = folder / f"datalist_{count}.csv"
    tmp = work / path.name
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["image", "label", "patient_id", "split"])
        w.writeheader()
        seen = {0: 0, 1: 0}
        for it in items:  # every 10th image of each class, the first one included, is validation (both classes)
            val = seen[it["label"]] % 10 == 0
            seen[it["label"]] += 1
            w.writerow({"image": Path(it["image"]).name, "label": ["normal", "pneumonia"][it["label"]],
                        "patient_id": it["patient_id"], "split": "val" if val else "train"})  # fmt: skip
    os.replace(tmp, path) if tmp.stat().st_dev == folder.stat().st_dev else path.write_bytes(tmp.read_bytes())
    return path


def bundle_parser(args: argparse.Namespace, datalist: Path, out: Path, amp: bool, workers: Any) -> Any:
    """``train.json`` with this run's overrides."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"bundle_root": str(common.REPO_ROOT / "bundles" / "xray"), "dataset_dir": str(datalist),
                   "output_dir": str(out), "image_size": args.image_size, "backbone": args.backbone,
                   "weights": "none", "batch_size": args.batch_size, "num_workers": workers, "amp": amp,
                   "device": args.device, "duplicates": "off", "cache": args.cache,
                   "cache_dir": str(out.parent / "cache"),
                   "val_interval": 10**6, "epochs": 10**3, "export_samples": 0})  # fmt: skip
    return parser


def _memory_format(network: Any, channels_last: bool) -> None:
    import torch

    network.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def bundle_run(args: argparse.Namespace, datalist: Path, out: Path, amp: bool, cl: bool, workers: Any) -> float:
    """Images/s of the bundle's ``train#trainer``."""
    from ignite.engine import Events

    parser = bundle_parser(args, datalist, out, amp, workers)
    parser["prepare_batch#channels_last"] = cl
    _memory_format(parser.get_parsed_content("network"), cl)
    trainer = parser.get_parsed_content("train#trainer")
    timer = IterationTimer(args.warmup, args.iterations)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, timer)
    trainer.run()
    return timer.rate


def hand_run(args: argparse.Namespace, datalist: Path, out: Path, amp: bool, cl: bool, workers: Any) -> float:
    """Images/s of a plain loop over the bundle's ``train#dataloader`` doing the trainer's per-iteration work."""
    import torch
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    parser = bundle_parser(args, datalist, out, amp, workers)
    parser["prepare_batch#channels_last"] = cl
    device = torch.device(parser.get_parsed_content("device"))
    net = parser.get_parsed_content("network")
    _memory_format(net, cl)
    loader = parser.get_parsed_content("train#dataloader")
    prepare = parser.get_parsed_content("prepare_batch")
    loss_fn = parser.get_parsed_content("train#loss_function")
    opt = parser.get_parsed_content("train#optimizer")
    sched = parser.get_parsed_content("train#lr_scheduler")
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(float(parser["ema_decay"])), use_buffers=True)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    clip = float(parser["grad_clip"])
    timer = IterationTimer(args.warmup, args.iterations)
    net.train()
    while True:
        for batch in loader:
            x, y = prepare(batch, device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                loss = loss_fn(net(x), y)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            ema.update_parameters(net)
            if timer.step(x.shape[0]):
                return timer.rate


def torchrun_run(args: argparse.Namespace, datalist: Path, work: Path) -> dict[str, Any]:
    """One-process ``torchrun`` of ``train.json`` + ``multi_gpu_train.json`` (one epoch, then its validation and
    report), the iterations timed by :func:`attach_timer`."""
    multi = json.loads((CONFIGS / "multi_gpu_train.json").read_text())
    timing = work / "torchrun_timing.json"
    hook = (f"$speed_gpu.attach_timer(@train#trainer, {str(timing)!r}, {args.warmup}, "
            f"{args.iterations})")  # fmt: skip
    extra = work / "timer.json"
    extra.write_text(json.dumps({"imports": ["$import monai_transfer", "$import scripts.bench.speed_gpu as speed_gpu"],
                                 "initialize": [*multi["initialize"], hook]}))  # fmt: skip
    files = [str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json"), str(extra)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--standalone", "-m", "monai.bundle",
           "run", "--config_file", repr(files), "--dataset_dir", str(datalist), "--output_dir", str(work / "torchrun"),
           "--image_size", str(args.image_size), "--backbone", args.backbone, "--weights", "none",
           "--batch_size", str(args.batch_size), "--duplicates", "off", "--epochs", "1",
           "--n_bootstrap", "20", "--cache_dir", str(work / "cache"), "--export_samples", "0"]  # fmt: skip
    pythonpath = os.pathsep.join(filter(None, [str(common.REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath, "PYTHONWARNINGS": "ignore"}
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    res: dict[str, Any] = {"returncode": proc.returncode, "wall_s": round(time.perf_counter() - t, 1)}
    if timing.is_file():
        got = json.loads(timing.read_text())
        res["images_per_s"] = round(got["images"] / got["seconds"], 1) if got["seconds"] > 0 else None
    else:
        res["stderr_tail"] = proc.stderr[-3000:]
    return res


def _grid(args: argparse.Namespace) -> list[tuple[bool, bool, Any]]:
    amps = [False] if args.device == "cpu" else [False, True]
    base = "0" if args.quick else "auto"  # quick: no worker processes (seconds on CPU, in CI)
    grid = [(amp, cl, base) for amp in amps for cl in (False, True)]
    best_amp = amps[-1]
    grid += [(best_amp, True, w) for w in args.num_workers if (best_amp, True, w) not in grid]
    return grid


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "speed_gpu.json")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--count", type=int, default=4096, help="images written and cached")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations")
    parser.add_argument("--iterations", type=int, default=40, help="timed iterations per configuration")
    parser.add_argument("--num_workers", nargs="+", default=["0", "4", "8"], help="extra num_workers values")
    parser.add_argument("--cache", default="ram", help="the bundle's cache id for both sides")
    parser.add_argument("--torchrun", action="store_true", help="add the one-process torchrun run")
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick:
        args.image_size, args.batch_size, args.count, args.warmup, args.iterations = 32, 4, 24, 1, 2
        args.num_workers, args.cache = ["0"], "none"
    # one training epoch must hold the warm-up and the timed iterations (the torchrun run trains one epoch)
    args.count = max(args.count, int((args.warmup + args.iterations + 1) * args.batch_size / 0.9) + 1)
    threads = common.set_threads(args.threads)
    env = common.environment()
    rows = []
    with tempfile.TemporaryDirectory(prefix="speed_gpu_") as tmp:
        work = Path(tmp)
        datalist = write_datalist(args.count, args.image_size, work)
        for amp, cl, workers in _grid(args):
            w = workers if workers == "auto" else int(workers)
            row = {"amp": amp, "channels_last": cl, "num_workers": workers}
            row["bundle"] = round(bundle_run(args, datalist, work / "b", amp, cl, w), 1)
            row["hand"] = round(hand_run(args, datalist, work / "h", amp, cl, w), 1)
            row["bundle_over_hand"] = round(row["bundle"] / row["hand"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
        tr = torchrun_run(args, datalist, work) if args.torchrun else None
    from monai_transfer.data.cache import auto_num_workers

    result = {"config": {k: v for k, v in vars(args).items() if k not in ("output",)} | {"quick": args.quick,
                         "auto_num_workers": auto_num_workers(), "torch_threads": threads},
              "device_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
              "rows": rows, "torchrun_1gpu": tr, "env": common.finish_environment(env)}  # fmt: skip
    common.write_result(args.output, result)
    md = [f"Training images/s on {result['device_name']}, xray bundle, `{args.backbone}` at {args.image_size} px, "
          f"batch {args.batch_size}:", "", "| AMP | channels_last | num_workers | bundle trainer | hand loop | ratio |",
          "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    md += [f"| {r['amp']} | {r['channels_last']} | {r['num_workers']} | {r['bundle']} | {r['hand']} | "
           f"{r['bundle_over_hand']} |" for r in rows]  # fmt: skip
    if tr is not None:
        md += [
            "",
            f"torchrun, 1 process, multi_gpu_train.json: {tr.get('images_per_s')} images/s (exit {tr['returncode']})",
        ]
    from monai_transfer.utils.io import atomic_write_text

    atomic_write_text(args.output.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
