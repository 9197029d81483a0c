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
"""Shared test helpers (no ``test_`` prefix, so pytest never collects them)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

__all__ = [
    "REPO_ROOT",
    "SHARED_DIR",
    "SHARED_DATA",
    "PNEUMONIA_NPZ",
    "ADRENAL_NPZ",
    "requires_shared_data",
    "load_pneumonia",
    "load_adrenal",
    "REQUIRED_BUNDLE_META",
    "bundle_cli",
    "bundle_workflow",
    "read_csv",
    "assert_png",
    "assert_no_deprecated_meta_names",
    "torchrun_bundle",
    "MaliciousPickle",
    "load_script",
    "synthetic_findings",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
#: ../shared beside the checkout (CI puts it there); override with MONAI_TRANSFER_SHARED.
SHARED_DIR = Path(os.environ.get("MONAI_TRANSFER_SHARED", REPO_ROOT.parent / "shared"))
SHARED_DATA = SHARED_DIR / "data"
PNEUMONIA_NPZ = SHARED_DATA / "pneumoniamnist" / "pneumoniamnist_28_trainval.npz"
ADRENAL_NPZ = SHARED_DATA / "adrenalmnist3d" / "adrenalmnist3d_64_trainval.npz"


def requires_shared_data(path: Path = PNEUMONIA_NPZ):
    """Skip marker for tests that need a file from ``../shared/data``, with the reason spelled out."""
    return pytest.mark.skipif(
        not Path(path).is_file(),
        reason=f"needs {path} (the project's ../shared/data beside the checkout; set MONAI_TRANSFER_SHARED to move it)",
    )


def load_pneumonia(split: str = "val", n: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real PneumoniaMNIST images (N, 28, 28) uint8 and labels (N,), a class-balanced subset when ``n`` is given."""
    with np.load(PNEUMONIA_NPZ) as z:
        x, y = z[f"{split}_images"], z[f"{split}_labels"].reshape(-1).astype(np.int64)
    return _subset(x, y, n, seed)


def load_adrenal(split: str = "val", n: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real AdrenalMNIST3D volumes (N, 64, 64, 64) uint8 and labels (N,), class-balanced subset when ``n`` is given."""
    with np.load(ADRENAL_NPZ) as z:
        x, y = z[f"{split}_images"], z[f"{split}_labels"].reshape(-1).astype(np.int64)
    return _subset(x, y, n, seed)


def _subset(x: np.ndarray, y: np.ndarray, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n is None or n >= len(y):
        return x, y
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = max(1, n // len(classes))
    idx = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), min(per, int((y == c).sum())), replace=False) for c in classes]
    )
    rng.shuffle(idx)
    return x[idx], y[idx]


#: the keys a MONAI bundle's metadata.json must have (MONAI bundle specification / meta schema "required")
REQUIRED_BUNDLE_META = (
    "schema",
    "version",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)


def bundle_cli(*args: str, cwd: Path = REPO_ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <args>`` in a subprocess (2 threads); fails the test with its output on error."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"monai.bundle {args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def bundle_workflow(configs: Path, config_file: Any, workflow_type: str, **override: Any) -> Any:
    """A MONAI ``ConfigWorkflow`` over ``config_file`` (one path or several) with the bundle's metadata and logging."""
    from monai.bundle import ConfigWorkflow

    return ConfigWorkflow(
        config_file=[str(c) for c in config_file] if isinstance(config_file, (list, tuple)) else str(config_file),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type=workflow_type,
        **override,
    )


def load_script(path: Path) -> Any:
    """Import a script of ``scripts/`` (not a package) as a module, by its file path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def synthetic_findings(
    n: int, n_labels: int, rng: np.random.Generator, size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` grey ``size``x``size`` uint8 images with ``n_labels`` learnable findings (no real pixels).

    Finding ``k`` is present on image ``i`` when ``(i + k) % 3 == 0`` (each finding positive and negative once ``n``
    reaches 3) and brightens cell ``k`` of a 4x4 grid over noise.

    Returns:
        images ``(n, size, size)`` uint8 and labels ``(n, n_labels)`` int64 0/1.
    """
    if n_labels > 16:
        raise ValueError(f"at most 16 findings fit the 4x4 grid, got {n_labels}")
    cell = size // 4
    labels = np.array([[int((i + k) % 3 == 0) for k in range(n_labels)] for i in range(n)], dtype=np.int64)
    images = rng.integers(0, 40, (n, size, size))
    for k in range(n_labels):
        r, c = divmod(k, 4)
        images[:, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] += 180 * labels[:, k, None, None]
    return images.astype(np.uint8), labels


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file with a header, as dicts."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def assert_png(path: Path) -> None:
    """``path`` exists and is a valid, non-empty PNG."""
    from PIL import Image

    assert path.is_file(), f"missing {path}"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 0 and im.size[1] > 0


def assert_no_deprecated_meta_names(meta_file: Path) -> None:
    """MONAI reads ``meta_file`` without its deprecation warning (``optional_packages_version`` is now
    ``required_packages_version``: ``monai.bundle.utils.DEPRECATED_ID_MAPPING``)."""
    import warnings

    from monai.bundle import ConfigParser
    from monai.bundle.utils import DEPRECATED_ID_MAPPING

    meta = json.loads(Path(meta_file).read_text())
    assert not set(DEPRECATED_ID_MAPPING) & set(meta), f"{meta_file} has deprecated ids"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parser = ConfigParser()
        parser.read_meta(str(meta_file))
    assert not [w for w in caught if "deprecated" in str(w.message)], [str(w.message) for w in caught]


def torchrun_bundle(configs: list[Path | str], run: Path, *args: str, timeout: int = 500) -> tuple[str, str]:
    """``monai.bundle run`` of ``configs`` (merged in order) under ``torchrun --nproc_per_node=2`` (CPU, gloo) with
    ``--output_dir run``; fails the test on a non-zero exit or a hang (the whole process group is killed)."""
    files = [str(Path(c).relative_to(REPO_ROOT)) if Path(c).is_relative_to(REPO_ROOT) else str(c) for c in configs]
    cmd = [
        shutil.which("torchrun"), "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
        "--config_file", "[" + ",".join(f"'{f}'" for f in files) + "]", "--output_dir", str(run), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers: no orphan left on the shared machine
        out, err = proc.communicate()
        pytest.fail(
            f"torchrun did not finish in {timeout} s (a rank waiting for the other?):\n{out[-3000:]}\n{err[-3000:]}"
        )
    assert proc.returncode == 0, f"torchrun failed:\n{out[-3000:]}\n{err[-5000:]}"
    return out, err


class MaliciousPickle:
    """Unpickling this runs a shell command that creates ``marker``: a stand-in for a malicious checkpoint payload."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
