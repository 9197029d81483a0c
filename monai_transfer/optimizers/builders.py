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
"""Optimisers with the backbone's learning-rate groups, and LR schedules stepped per iteration.

Bundle snippet (MONAI's ``LrScheduleHandler`` steps the scheduler after every iteration with
``epoch_level=False``; :class:`~monai_transfer.handlers.grad_clip.GradNormClipper` clips between ``backward()`` and
``optimizer.step()``)::

    "optimizer": {"_target_": "monai_transfer.optimizers.builders.build_optimizer", "model": "@network",
                  "name": "adamw", "lr": 3e-4, "weight_decay": 0.05, "layer_decay": 0.75},
    "lr_scheduler": {"_target_": "monai_transfer.optimizers.builders.build_scheduler", "optimizer": "@optimizer",
                     "name": "cosine", "epochs": "@epochs", "steps_per_epoch": "$len(@train#dataloader)",
                     "warmup_epochs": 1},
    "train#handlers": [
        {"_target_": "LrScheduleHandler", "lr_scheduler": "@lr_scheduler", "epoch_level": false,
         "print_lr": false},
        {"_target_": "monai_transfer.handlers.grad_clip.GradNormClipper", "max_norm": 1.0}, ...]

Early stopping on validation AUC reuses MONAI's ``EarlyStopHandler`` (Ignite's ``EarlyStopping``), attached to the
validator and stopping the trainer::

    "validate#handlers": [
        {"_target_": "EarlyStopHandler", "trainer": "@train#trainer", "patience": 5, "min_delta": 0.001,
         "score_function": "$lambda engine: engine.state.metrics['val_auc']", "epoch_level": true}, ...]
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
from monai.optimizers.lr_scheduler import WarmupCosineSchedule
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

if TYPE_CHECKING:
    pass

__all__ = ["OPTIMIZERS", "SCHEDULERS", "param_groups_for", "build_optimizer", "build_scheduler"]

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULERS = ("cosine", "onecycle", "none")


def param_groups_for(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    layer_decay: float = 1.0,
    head_lr_mult: float = 1.0,
    no_decay_1d: bool = True,
    include_frozen: bool = False,
) -> list[dict[str, Any]]:
    """Parameter groups for ``model``: its own ``param_groups(lr, layer_decay, head_lr_mult)`` when it has one.

    Frozen parameters (``requires_grad=False``) are dropped unless ``include_frozen`` (needed when a
    ``GradualUnfreeze`` handler unfreezes stages later with this same optimizer: frozen parameters get no gradient
    and are not updated until unfrozen); empty groups are removed. When ``weight_decay > 0`` and
    ``no_decay_1d``, each group is split so that biases and normalisation weights (1-D tensors) get no decay, as
    timm does. Other keys of the model's groups (``lr``, ``name``, ...) are kept.

    Raises:
        ValueError: when no parameter requires a gradient.
    """
    if callable(getattr(model, "param_groups", None)):
        kwargs: dict[str, Any] = {"include_frozen": True} if include_frozen else {}
        groups = [dict(g) for g in model.param_groups(lr, layer_decay=layer_decay, head_lr_mult=head_lr_mult, **kwargs)]
    else:
        if layer_decay != 1.0 or head_lr_mult != 1.0:
            warnings.warn(
                f"{type(model).__name__} has no param_groups(): layer_decay={layer_decay} and "
                f"head_lr_mult={head_lr_mult} are ignored, all parameters use lr={lr}.",
                stacklevel=2,
            )
        groups = [{"params": list(model.parameters()), "lr": lr}]
    out: list[dict[str, Any]] = []
    for g in groups:
        params = [p for p in g["params"] if p.requires_grad or include_frozen]
        extra = {k: v for k, v in g.items() if k != "params"}
        extra.setdefault("lr", lr)
        if weight_decay > 0 and no_decay_1d:
            decay = [p for p in params if p.ndim > 1]
            no_decay = [p for p in params if p.ndim <= 1]
            if decay:
                out.append({**extra, "params": decay, "weight_decay": extra.get("weight_decay", weight_decay)})
            if no_decay:
                out.append({**extra, "params": no_decay, "weight_decay": 0.0})
        elif params:
            out.append({**extra, "params": params, "weight_decay": extra.get("weight_decay", weight_decay)})
    if not out:
        raise ValueError(f"{type(model).__name__} has no trainable parameter (all have requires_grad=False).")
    return out


def build_optimizer(
    model: nn.Module,
    name: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    layer_decay: float = 1.0,
    head_lr_mult: float = 1.0,
    nesterov: bool = False,
    no_decay_1d: bool = True,
    include_frozen: bool = False,
) -> torch.optim.Optimizer:
    """Build Adam, AdamW, SGD or RMSprop over :func:`param_groups_for` groups.

    Args:
        model: the network; ``model.param_groups(lr, layer_decay=..., head_lr_mult=...)`` is used when present
            (``Pretrained2DNet``), else all trainable parameters form one group.
        name: ``"adam"``, ``"adamw"``, ``"sgd"`` or ``"rmsprop"``.
        lr: base learning rate (the head's before ``head_lr_mult``).
        weight_decay: L2 (Adam/SGD/RMSprop) or decoupled (AdamW) weight decay.
        momentum: SGD/RMSprop momentum.
        layer_decay: per-stage LR decay towards the input, passed to ``model.param_groups``.
        head_lr_mult: LR multiplier of the classifier head, passed to ``model.param_groups``.
        nesterov: SGD Nesterov momentum.
        no_decay_1d: exempt biases and norm weights from weight decay.
        include_frozen: keep frozen parameters in the optimizer (for gradual unfreezing).

    Raises:
        ValueError: on an unknown ``name`` or a non-positive ``lr``.
    """
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS}, got {name!r}.")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}.")
    groups = param_groups_for(model, lr, weight_decay, layer_decay, head_lr_mult, no_decay_1d, include_frozen)
    if key == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if key == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if key == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    return torch.optim.RMSprop(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str = "cosine",
    epochs: int = 1,
    steps_per_epoch: int = 1,
    warmup_epochs: float = 0,
    warmup_multiplier: float = 0.0,
    pct_start: float = 0.3,
) -> LRScheduler:
    """An LR scheduler stepped once per iteration (``LrScheduleHandler(..., epoch_level=False)``).

    - ``"cosine"``: MONAI's ``WarmupCosineSchedule``: linear warm-up over ``warmup_epochs * steps_per_epoch``
      iterations from ``warmup_multiplier * lr`` to ``lr``, then half a cosine down to 0 at the last iteration.
      It multiplies each group's own LR, so layer-wise LR ratios are kept.
    - ``"onecycle"``: ``torch.optim.lr_scheduler.OneCycleLR`` with each group's LR as its peak; the warm-up fraction
      is ``warmup_epochs / epochs`` when ``warmup_epochs > 0``, else ``pct_start``.
    - ``"none"``: a constant ``LambdaLR`` (factor 1, warm-up ignored), so configs keep the same handler.

    All of them have plain ``state_dict()`` contents, loadable with ``weights_only=True`` on resume.

    Raises:
        ValueError: on an unknown ``name``, non-positive ``epochs``/``steps_per_epoch`` or bad warm-up.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in SCHEDULERS:
        raise ValueError(f"scheduler name must be one of {SCHEDULERS}, got {name!r}.")
    if int(epochs) < 1 or int(steps_per_epoch) < 1:
        raise ValueError(f"epochs and steps_per_epoch must be >= 1, got {epochs} and {steps_per_epoch}.")
    if not 0 <= warmup_epochs < epochs:
        raise ValueError(f"warmup_epochs must be in [0, epochs={epochs}), got {warmup_epochs}.")
    total = int(epochs) * int(steps_per_epoch)
    warmup = int(round(warmup_epochs * steps_per_epoch))
    if key == "cosine":
        return WarmupCosineSchedule(optimizer, warmup_steps=warmup, t_total=total, warmup_multiplier=warmup_multiplier)
    if key == "onecycle":
        pct = warmup / total if warmup > 0 else pct_start
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=pct)
    return LambdaLR(optimizer, lr_lambda=_constant_lr)


def _constant_lr(step: int) -> float:
    return 1.0
