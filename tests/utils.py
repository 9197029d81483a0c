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

import os
from pathlib import Path

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
