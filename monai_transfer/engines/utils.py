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
"""Device, determinism and batch-preparation helpers for MONAI's ``SupervisedTrainer``/``SupervisedEvaluator``.

Everything here is meant to be called from bundle JSON, e.g.::

    "device": "$monai_transfer.engines.utils.auto_device(@device_name)",
    "determinism": "$monai_transfer.engines.utils.set_run_determinism(@seed)",
    "amp": "$monai_transfer.engines.utils.amp_enabled(@device)",
    "network": {"_target_": "monai_transfer.engines.utils.to_device", "network": "@network_def", "device": "@device"},
    "prepare_batch": {"_target_": "monai_transfer.engines.utils.ChannelsLastPrepareBatch"},
    "validate#early_stop#score_function":
        "$monai_transfer.engines.utils.rank_zero_score(monai.handlers.stopping_fn_from_metric('val_auc'))",
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.engines.utils import PrepareBatch
from monai.utils import CommonKeys, set_determinism

__all__ = [
    "auto_device",
    "amp_enabled",
    "set_run_determinism",
    "configure_cuda_speedups",
    "rank_zero_score",
    "to_device",
    "rank_batch_size",
    "ChannelsLastPrepareBatch",
]

logger = logging.getLogger(__name__)


def auto_device(prefer: str | torch.device | None = None) -> torch.device:
    """Pick the training device: CUDA when present, else CPU.

    Args:
        prefer: ``None`` or ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``,
            or a ``torch.device``.

    Returns:
        the ``torch.device`` to use.

    Raises:
        RuntimeError: when CUDA is asked for explicitly but not available.
        ValueError: when ``prefer`` is not a device name.
    """
    if prefer is None or (isinstance(prefer, str) and prefer.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(prefer.strip().lower() if isinstance(prefer, str) else prefer)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {prefer!r}.") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {prefer!r} was requested but CUDA is not available; use 'auto' or 'cpu'.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {prefer!r} does not exist: only {torch.cuda.device_count()} CUDA device(s).")
    return device


def amp_enabled(device: str | torch.device) -> bool:
    """Whether automatic mixed precision should be used: on CUDA devices only (MONAI's trainer autocasts to CUDA)."""
    return torch.device(device).type == "cuda"


def set_run_determinism(seed: int = 0, deterministic: bool = True) -> int:
    """Seed Python, NumPy and torch; in deterministic mode also force deterministic kernels.

    Deterministic mode calls MONAI's ``set_determinism`` (cuDNN deterministic, benchmark off), then
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` (an op without a deterministic implementation
    warns instead of failing) and sets ``CUBLAS_WORKSPACE_CONFIG`` when unset, which cuBLAS needs for
    reproducible matrix products. On CPU, the same seed and data then give identical weights and metrics.

    Args:
        seed: the global seed.
        deterministic: ``False`` only seeds the generators and leaves cuDNN free to autotune.

    Returns:
        ``seed``, so a config can keep it: ``"$monai_transfer.engines.utils.set_run_determinism(@seed)"``.

    Raises:
        ValueError: when ``seed`` is negative or not an integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    seed = int(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        set_determinism(seed=seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
    return seed


def configure_cuda_speedups(device: str | torch.device, tf32: bool = True) -> dict[str, bool]:
    """Turn on the CUDA speed-ups that are safe for this run.

    ``cudnn.benchmark`` (autotuned convolutions) is enabled only when deterministic algorithms are off, since
    autotuning may pick a different kernel from run to run. TF32 matrix products/convolutions are enabled when
    ``tf32`` is true. On CPU nothing changes.

    Args:
        device: the training device.
        tf32: allow TF32 on Ampere or newer GPUs.

    Returns:
        the settings applied, e.g. ``{"cudnn_benchmark": True, "tf32": True}`` (all ``False`` on CPU).
    """
    applied = {"cudnn_benchmark": False, "tf32": False}
    if torch.device(device).type != "cuda":
        return applied
    if not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic:
        torch.backends.cudnn.benchmark = True
        applied["cudnn_benchmark"] = True
    if tf32:
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
        applied["tf32"] = True
    return applied


def rank_zero_score(score_function: Any, src: int = 0) -> Any:
    """Wrap an early-stopping ``score_function`` so that every distributed rank gets rank ``src``'s score.

    Under ``torchrun`` each rank runs its own ``EarlyStopHandler``; if one rank stopped and another did not, the
    other would wait forever in DDP's next all-reduce. Broadcasting one rank's score makes the stop decision the same
    on every rank (MONAI's metric handlers already gather the whole validation set, so the scores normally agree;
    this makes it certain). Without an initialised process group the score is returned unchanged.

    Args:
        score_function: ``engine -> float``, e.g. ``monai.handlers.stopping_fn_from_metric("val_auc")``.
        src: the rank whose score is used.

    Example::

        "validate#early_stop#score_function":
            "$monai_transfer.engines.utils.rank_zero_score(monai.handlers.stopping_fn_from_metric('val_auc'))"
    """
    import torch.distributed as dist

    def _score(engine: Any) -> float:
        value = float(score_function(engine))
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return value
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(t, src=src)
        return float(t.item())

    return _score


def to_device(network: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """Move ``network`` to ``device``, in channels-last memory format on CUDA (faster convolutions), else unchanged.

    Args:
        network: the module to move (moved in place, as ``nn.Module.to`` does).
        device: the target device.

    Returns:
        ``network`` itself, on ``device``.

    Example::

        "network": {"_target_": "monai_transfer.engines.utils.to_device", "network": "@network_def",
                    "device": "@device"}
    """
    cuda = torch.device(device).type == "cuda"
    return network.to(device, memory_format=torch.channels_last if cuda else torch.preserve_format)


def rank_batch_size(batch_size: int, num_items: int, slices_per_item: int = 1, warn: bool = True) -> int:
    """Items per batch of a ``drop_last`` training loader: ``batch_size // slices_per_item``, capped at one
    distributed rank's share of ``num_items`` (all items without a process group); never less than 1.

    A ``drop_last`` loader needs at least one full batch per rank, or an epoch has no step (and the learning-rate
    schedule none at all). Small data sets are common, so a batch larger than the training split is reduced to the
    split, with a warning naming ``--batch_size`` and the split size, instead of failing later.

    Args:
        batch_size: the wanted batch size (the bundle's ``batch_size``: images, or slices for a slice bundle).
        num_items: the items of the whole training split (images, or volumes).
        slices_per_item: slices each item gives per step (a slice bundle's ``train_slices``); the loader batches
            ``batch_size // slices_per_item`` items.
        warn: log a warning when the batch is reduced.

    Example::

        "batch_size": "$monai_transfer.engines.utils.rank_batch_size(@batch_size, len(@datalists['train']))"
        "batch_size":
            "$monai_transfer.engines.utils.rank_batch_size(@batch_size, len(@datalists['train']), @train_slices)"
    """
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    per_item = max(1, int(slices_per_item))
    wanted = int(batch_size) // per_item
    share = int(num_items) // world
    size = max(1, min(wanted, share))
    if warn and wanted > share:
        unit = "images" if per_item == 1 else "volumes"
        what = f"--batch_size {batch_size}" + ("" if per_item == 1 else f" ({wanted} volumes of {per_item} slices)")
        split = f"the training split ({num_items} {unit}" + (")" if world == 1 else f", {share} per rank of {world})")
        using = f"{size} {unit}" + ("" if per_item == 1 else f" ({size * per_item} slices)")
        logger.warning(
            f"{what} is larger than {split}: training with batches of {using}. The training loader drops an "
            "incomplete last batch, so a larger batch would leave no training step; pass a smaller --batch_size to "
            "choose the batch yourself."
        )
    return size


def _to_device(x: Any, device: torch.device | str | None, non_blocking: bool, channels_last: bool, **kwargs) -> Any:
    if not isinstance(x, torch.Tensor):
        return x
    if channels_last and x.ndim in (4, 5):
        fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
        return x.to(device=device, non_blocking=non_blocking, memory_format=fmt, **kwargs)
    return x.to(device=device, non_blocking=non_blocking, **kwargs)


class ChannelsLastPrepareBatch(PrepareBatch):
    """``prepare_batch`` for MONAI engines: moves ``image``/``label`` to the device, channels-last on CUDA.

    On a CUDA device the image (``(B, C, H, W)`` or ``(B, C, D, H, W)``) is converted to ``channels_last``
    (``channels_last_3d``) memory format, which lets cuDNN use tensor-core kernels under AMP, and transfers are
    non-blocking (useful with ``pin_memory=True``). On CPU the batch is moved unchanged. Labels keep their
    shape; the losses in :mod:`monai_transfer.losses.classification` accept ``(B,)`` and ``(B, 1)``.

    Args:
        image_key: key of the image in the batch dict.
        label_key: key of the label; a batch without it returns ``None`` as label (inference).
        channels_last: set ``False`` to keep the default memory format on CUDA too.

    Example::

        "prepare_batch": {"_target_": "monai_transfer.engines.utils.ChannelsLastPrepareBatch"}
    """

    def __init__(
        self, image_key: str = CommonKeys.IMAGE, label_key: str = CommonKeys.LABEL, channels_last: bool = True
    ) -> None:
        self.image_key = image_key
        self.label_key = label_key
        self.channels_last = channels_last

    def __call__(
        self,
        batchdata: Mapping[str, Any] | Sequence[Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[Any, Any]:
        """Return ``(image, label)`` on ``device``.

        Raises:
            KeyError: when the batch has no ``image_key``.
        """
        is_cuda = device is not None and torch.device(device).type == "cuda"
        non_blocking = non_blocking or is_cuda
        if isinstance(batchdata, Mapping):
            if self.image_key not in batchdata:
                raise KeyError(f"batch has no '{self.image_key}' key; keys are {sorted(map(str, batchdata))}.")
            image, label = batchdata[self.image_key], batchdata.get(self.label_key)
        else:
            image, label = batchdata[0], (batchdata[1] if len(batchdata) > 1 else None)
        image = _to_device(image, device, non_blocking, self.channels_last and is_cuda, **kwargs)
        label = _to_device(label, device, non_blocking, False, **kwargs)
        return image, label
