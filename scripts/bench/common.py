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
"""Shared helpers of the benchmark scripts (``scripts/bench``; never imported by the library).

Every benchmark writes one JSON file whose ``env`` block (:func:`environment`) records the machine, the library
versions, the date, the exact command line and the load average seen at start and end (other jobs share the CPU on
the build machine, and the JSON says so). ``make_report.py`` turns those files into ``benchmarks/README.md``.
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "REPO_ROOT",
    "RESULTS_DIR",
    "SHARED_DATA",
    "PNEUMONIA_NPZ",
    "ADRENAL_NPZ",
    "CACHE_DIR",
    "command_line",
    "set_command",
    "environment",
    "finish_environment",
    "write_result",
    "read_result",
    "peak_rss_mb",
    "current_rss_mb",
    "timed",
    "stratified_fraction",
    "npz_to_png_csv",
    "add_common_args",
    "set_threads",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
SHARED_DATA = Path(os.environ.get("MONAI_TRANSFER_SHARED", REPO_ROOT.parent / "shared")) / "data"
PNEUMONIA_NPZ = SHARED_DATA / "pneumoniamnist" / "pneumoniamnist_28_trainval.npz"
ADRENAL_NPZ = SHARED_DATA / "adrenalmnist3d" / "adrenalmnist3d_64_trainval.npz"
#: files written from the npz sets (PNG class folders, DICOMs); outside the repository by default
CACHE_DIR = Path(os.environ.get("MONAI_TRANSFER_BENCH_CACHE", Path.home() / ".cache" / "monai_transfer_bench"))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


_COMMAND: str | None = None


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command line of a benchmark run, in the form it was run in.

    Args:
        script: the script's ``__file__``.
        argv: None for the script's own command line: ``sys.orig_argv`` as the interpreter received it, so
            ``python -m scripts.bench.<name> ...`` and the path form ``python scripts/bench/<name>.py ...`` are each
            recorded as typed (the script path relative to the repository). Otherwise the arguments of an in-process
            ``main(argv)`` call, recorded as the equivalent ``python -m scripts.bench.<name> <argv>``.
    """
    if argv is not None:
        words = ["-m", f"scripts.bench.{Path(script).stem}", *argv]
    else:
        path = Path(script).resolve()
        shown = str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
        words = [shown if Path(a).resolve() == path else a for a in sys.orig_argv[1:]]
    return "python " + " ".join(shlex.quote(a) for a in words)


def set_command(script: str, argv: Sequence[str] | None) -> None:
    """Record the command line of a ``main(argv)`` call (see :func:`command_line`) for :func:`environment`."""
    global _COMMAND
    _COMMAND = command_line(script, argv)


def environment() -> dict[str, Any]:
    """Machine, versions, date, command (:func:`set_command`) and load average at the start of a benchmark."""
    import monai
    import torch

    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": _COMMAND or command_line(sys.argv[0], None),
        "machine": {
            "cpu": _cpu_model(),
            "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__},
        "load_average_start": list(os.getloadavg()),
    }
    for mod in ("torchvision", "timm", "ignite", "pydicom", "numpy"):
        try:
            env["versions"][mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional, record absence
            env["versions"][mod] = None
    try:
        import monai_transfer

        env["versions"]["monai_transfer"] = getattr(monai_transfer, "__version__", "dev")
    except ImportError:
        env["versions"]["monai_transfer"] = None
    env["_t0"] = time.perf_counter()
    return env


def finish_environment(env: dict[str, Any]) -> dict[str, Any]:
    """Add end-of-run load average, wall time and a note when other jobs were using the CPU."""
    out = {k: v for k, v in env.items() if k != "_t0"}
    out["wall_s"] = round(time.perf_counter() - env.get("_t0", time.perf_counter()), 2)
    out["load_average_end"] = list(os.getloadavg())
    busy = max(out["load_average_start"][0], out["load_average_end"][0])
    ncpu = os.cpu_count() or 1
    own = 1.0  # this benchmark's own main thread(s) account for about one unit
    out["other_jobs_running"] = bool(busy > own + 0.5)
    out["note"] = (
        f"1-min load average up to {busy:.2f} on {ncpu} logical CPUs: other jobs were running, so absolute "
        "timings are pessimistic; ratios measured in the same run are comparable"
        if out["other_jobs_running"]
        else "machine otherwise idle (load average within one job)"
    )
    return out


def write_result(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write a benchmark JSON atomically (parent folders created)."""
    from monai_transfer.utils.io import atomic_write_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, payload)


def read_result(path: str | os.PathLike) -> dict[str, Any] | None:
    """Read a benchmark JSON, or None when it does not exist."""
    import json

    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Current resident set size in MiB (``/proc/self/statm``; falls back to the peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> dict[str, float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; return best/median seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"best_s": float(min(times)), "median_s": float(np.median(times)), "repeats": repeats}


def set_threads(n: int | None) -> int:
    """Set torch's intra-op threads (None keeps the default) and return the count in use."""
    import torch

    if n is not None:
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


def stratified_fraction(labels: Sequence[int], fraction: float, seed: int, min_per_class: int = 2) -> np.ndarray:
    """Indices of a class-stratified random ``fraction`` of ``labels`` (at least ``min_per_class`` per class).

    Raises:
        ValueError: ``fraction`` outside (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    y = np.asarray(labels).reshape(-1)
    if fraction == 1.0:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = min(len(idx), max(min_per_class, int(round(fraction * len(idx)))))
        keep.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(keep))


def npz_to_png_csv(
    npz: str | os.PathLike,
    out_dir: str | os.PathLike,
    csv_name: str,
    splits: dict[str, str],
    class_names: Sequence[str],
    subsets: dict[str, np.ndarray | None] | None = None,
    limit: dict[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """Write the images of an npz as PNGs (once, cached) and a CSV data list with a ``split`` column.

    The CSV (``image,label,patient_id,split``) is what the xray bundle's ``dataset_dir`` accepts.

    Args:
        npz: MedMNIST-style ``.npz``.
        out_dir: cache folder; images go to ``out_dir/<npz split>/<split>_<index>.png``.
        csv_name: file name of the CSV inside ``out_dir``.
        splits: bundle split name → npz split name, e.g. ``{"train": "train", "val": "val"}``.
        class_names: label names in label order.
        subsets: optional bundle split → npz indices to keep.
        limit: optional bundle split → class-balanced count (quick runs).
        seed: seed of ``limit`` subsets.

    Returns:
        the CSV path.
    """
    from monai_transfer.data.npz import write_png

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with np.load(npz) as z:
        for split, src in splits.items():
            images = z[f"{src}_images"]
            labels = z[f"{src}_labels"].reshape(-1).astype(int)
            idx = np.arange(len(labels))
            if subsets and subsets.get(split) is not None:
                idx = np.asarray(subsets[split])
            if limit and limit.get(split):
                frac = min(1.0, limit[split] / len(idx))
                idx = idx[stratified_fraction(labels[idx], frac, seed)]
            for i in idx:
                rel = Path(src) / f"{src}_{int(i):05d}.png"
                if not (out_dir / rel).is_file():
                    write_png(out_dir / rel, images[i])
                rows.append(
                    {
                        "image": str(rel),
                        "label": class_names[labels[i]],
                        "patient_id": f"{src}_{int(i):05d}",
                        "split": split,
                    }
                )
    path = out_dir / csv_name
    # written to a private file, then renamed: benchmark processes running side by side (label efficiency's
    # pretrained and scratch halves) write the same data list and must never read it half written
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=out_dir)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["image", "label", "patient_id", "split"])
        w.writeheader()
        w.writerows(rows)
    os.chmod(tmp, 0o644)  # mkstemp makes it private
    os.replace(tmp, path)
    return path


def add_common_args(parser: Any, default_output: Path, threads: bool = True) -> None:
    """``--quick``, ``--output`` and ``--threads`` shared by every script (the one place they are declared).

    Args:
        parser: the script's ``argparse.ArgumentParser``.
        default_output: the script's default ``--output``.
        threads: False for a script that runs no torch code (no ``--threads``).
    """
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds; for CI")
    parser.add_argument("--output", type=Path, default=default_output, help=f"output (default {default_output})")
    if threads:
        parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
