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
"""Speed and memory of the scripted volume evaluation (``python -m monai_transfer.evaluate``) as the count grows.

Writes the first ``max(--counts)`` AdrenalMNIST3D volumes (64^3, cycled when more are asked for than the npz
holds) as NIfTI with a labels CSV, then runs the evaluation command of the ``ct_slices`` bundle as a separate
process on the first 50, 100 and 200 (``--counts``) of them. Each child's peak RSS comes from ``os.wait4`` (the
kernel's ``ru_maxrss`` of that process alone), its wall time from the parent, and its ``VmRSS`` is sampled every
50 ms (the last sample, taken while the last cases stream, shows memory after the start-up peak). The checkpoint
is a freshly initialised network of the bundle's ``network_def`` (speed and memory do not depend on the weights)
and the threshold is 0.5, so no trained model is needed.

Reported: volumes/s per count (with process start-up), the marginal rate between the smallest and largest count
(start-up removed) and peak RSS per count; ``rss_growth_mb`` between the smallest and largest count should be near
zero (streaming evaluation: memory flat in the number of cases).

Usage (from the repository root)::

    python -m scripts.bench.volume_eval_memory        # writes benchmarks/results/volume_eval_memory.json
    python -m scripts.bench.volume_eval_memory --quick --output /tmp/vol_mem.json
"""

from __future__ import annotations

import argparse
import csv
import os
import runpy
import shutil
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

__all__ = ["write_cases", "make_checkpoint", "run_child", "main"]

BUNDLE = common.REPO_ROOT / "bundles" / "ct_slices"


def write_cases(out_dir: Path, count: int) -> list[tuple[str, int]]:
    """``count`` NIfTI volumes ``case_NNNN.nii.gz`` from the AdrenalMNIST3D train split; returns (name, label)."""
    from monai_transfer.data.npz import write_nifti

    with np.load(common.ADRENAL_NPZ) as z:
        x, y = z["train_images"], z["train_labels"].reshape(-1)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(count):
        name = f"case_{i:04d}.nii.gz"
        if not (out_dir / name).is_file():
            write_nifti(out_dir / name, x[i % len(x)])
        cases.append((name, int(y[i % len(y)])))
    return cases


def make_checkpoint(path: Path) -> Path:
    """State dict of a freshly initialised ``network_def`` of the bundle's ``inference.json``."""
    import torch
    from monai.bundle import ConfigParser

    from monai_transfer.utils.io import atomic_torch_save

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    atomic_torch_save(net.state_dict(), path)
    return path


def run_child(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd``; return wall seconds, exit code and the child's own peak RSS (``os.wait4``)."""
    import threading

    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    samples: list[float] = []

    def _poll() -> None:  # VmRSS every 50 ms: the last samples show the memory while cases stream
        status_file = Path(f"/proc/{proc.pid}/status")
        while True:
            try:
                line = next(x for x in status_file.read_text().splitlines() if x.startswith("VmRSS"))
            except (OSError, StopIteration):
                return
            samples.append(int(line.split()[1]) / 1024.0)
            time.sleep(0.05)

    poller = threading.Thread(target=_poll, daemon=True)
    poller.start()
    out = proc.stdout.read() if proc.stdout is not None else b""
    _, status, usage = os.wait4(proc.pid, 0)
    poller.join(timeout=1.0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    return {
        "wall_s": wall,
        "exit_code": proc.returncode,
        "peak_rss_mb": usage.ru_maxrss / 1024.0,
        "rss_last_sample_mb": samples[-1] if samples else None,
        "rss_samples": len(samples),
        "user_s": usage.ru_utime,
        "log_tail": out.decode(errors="replace")[-600:],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, common.RESULTS_DIR / "volume_eval_memory.json")
    parser.add_argument("--counts", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    common.set_command(__file__, argv)
    if args.quick:
        args.counts = [2, 4]
    env_info = common.environment()
    tmp = Path(tempfile.mkdtemp(prefix="bench_vol_mem_"))
    counts = sorted(args.counts)
    cases = write_cases(tmp / "all", counts[-1])
    ckpt = make_checkpoint(tmp / "model.pt")
    child_env = dict(os.environ)
    if args.threads is not None:
        child_env["OMP_NUM_THREADS"] = str(args.threads)
    rows = []
    for n in counts:
        img_dir = tmp / f"n{n}"
        img_dir.mkdir()
        for name, _ in cases[:n]:
            os.link(tmp / "all" / name, img_dir / name)
        labels = tmp / f"labels_{n}.csv"
        with open(labels, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["image", "label"])
            w.writerows(cases[:n])
        cmd = [
            sys.executable,
            "-m",
            "monai_transfer.evaluate",
            "--bundle",
            str(BUNDLE),
            "--images",
            str(img_dir),
            "--labels",
            str(labels),
            "--output",
            str(tmp / f"out{n}"),
            "--ckpt",
            str(ckpt),
            "--threshold",
            "0.5",
            "--n_bootstrap",
            "0",
            "--no_progress",
            "--device",
            "cpu",
            "--batch_size",
            str(args.batch_size),
        ]
        r = run_child(cmd, child_env)
        r.update({"volumes": n, "volumes_per_s": n / r["wall_s"]})
        rows.append(r)
        print(
            f"{n} volumes: {r['wall_s']:.1f} s, {r['volumes_per_s']:.2f} vol/s, peak RSS {r['peak_rss_mb']:.0f} MiB,"
            f" exit {r['exit_code']}"
        )
    first, last = rows[0], rows[-1]
    res: dict[str, Any] = {
        "rows": rows,
        "marginal_volumes_per_s": (last["volumes"] - first["volumes"]) / (last["wall_s"] - first["wall_s"])
        if last["wall_s"] > first["wall_s"]
        else None,
        "rss_growth_mb": last["peak_rss_mb"] - first["peak_rss_mb"],
        "rss_last_sample_growth_mb": None
        if first["rss_last_sample_mb"] is None or last["rss_last_sample_mb"] is None
        else last["rss_last_sample_mb"] - first["rss_last_sample_mb"],
        "rss_growth_pct": 100.0 * (last["peak_rss_mb"] / first["peak_rss_mb"] - 1.0),
        "all_exit_ok": all(r["exit_code"] == 0 for r in rows),
        "config": {
            "bundle": "bundles/ct_slices (configs/inference.json)",
            "volume_shape": [64, 64, 64],
            "batch_size": args.batch_size,
            "threads": args.threads,
            "checkpoint": "freshly initialised network_def (weights do not change speed or memory)",
            "quick": args.quick,
        },
        "env": common.finish_environment(env_info),
    }
    common.write_result(args.output, res)
    shutil.rmtree(tmp, ignore_errors=True)
    return res


if __name__ == "__main__":
    main()
