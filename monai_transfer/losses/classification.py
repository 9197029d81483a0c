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
"""Classification losses, with class weights built from the training data list.

MONAI's ``SupervisedTrainer`` calls ``loss_function(pred, label)`` with whatever the data loader produced, so every
loss here accepts integer labels shaped ``(B,)`` or ``(B, 1)`` (multi-class), multi-hot ``(B, C)`` (multi-label) and
moves its class weights to the prediction's device on the fly (the trainer never moves the loss).

One option, ``imbalance``, chooses how class imbalance is handled:

- ``"none"``: plain loss, shuffled loader;
- ``"weights"``: inverse-frequency class weights (CE/focal) or ``pos_weight`` (BCE) computed from the labels;
- ``"sampler"``: plain loss, a class-balanced sampler (:mod:`monai_transfer.data.samplers`).

Bundle snippet::

    "train_labels": "$monai_transfer.data.samplers.labels_from_datalist(@train_datalist)",
    "loss": {"_target_": "monai_transfer.losses.classification.build_loss", "name": "ce", "num_classes": 2,
             "labels": "@train_labels", "imbalance": "@imbalance"},
    "train#sampler": "$monai_transfer.data.samplers.build_sampler(@train_labels, @imbalance, @seed)",
    "train#dataloader": {"_target_": "DataLoader", "sampler": "@train#sampler",
                         "shuffle": "$@train#sampler is None", ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_transfer.data.samplers import (
    as_label_array,
    check_imbalance,
    class_weights_from_labels,
    pos_weight_from_labels,
)
from monai_transfer.utils.task import as_task

__all__ = [
    "ClassificationCrossEntropyLoss",
    "ClassificationBCEWithLogitsLoss",
    "ClassificationFocalLoss",
    "build_loss",
]


def _int_targets(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,), (B, 1) or (B, 1, ...) integer labels -> (B, ...) long."""
    if target.ndim == pred.ndim and target.shape[1] == 1:
        target = target.squeeze(1)
    if target.ndim != pred.ndim - 1:
        raise ValueError(
            f"labels of shape {tuple(target.shape)} do not match logits {tuple(pred.shape)}: expected integer "
            "classes (B,) or (B, 1), or class probabilities of the logits' shape."
        )
    return target.long()


def _is_soft(pred: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether ``target`` holds class probabilities ``(B, C)`` for softmax logits ``(B, C)`` (``C > 1``)."""
    return target.shape == pred.shape and target.is_floating_point() and pred.shape[1] > 1


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def _maybe_to(x: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor | None:
    return None if x is None else x.to(device=ref.device, dtype=ref.dtype)


class ClassificationCrossEntropyLoss(nn.CrossEntropyLoss):
    """``nn.CrossEntropyLoss`` that accepts ``(B,)``/``(B, 1)`` integer labels or ``(B, C)`` probabilities.

    Class weights are moved to the logits' device and dtype at each call. With probabilities (soft targets, e.g.
    MixUp/CutMix) and class weights, ``reduction="mean"`` divides by ``sum_i sum_c w_c y_ic`` (PyTorch divides by
    the batch size), the soft form of the hard-label normalisation ``sum_i w_{y_i}``: one-hot targets give exactly
    the loss of the integer labels, label smoothing included.

    Args:
        weight: class weights ``(C,)`` or ``None``.
        label_smoothing: as in ``nn.CrossEntropyLoss``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        input, target = _plain(input), _plain(target)
        soft = _is_soft(input, target)
        if not soft:
            target = _int_targets(input, target)
        weight = _maybe_to(self.weight, input)
        weighted_soft_mean = soft and weight is not None and self.reduction == "mean"
        loss = F.cross_entropy(
            input,
            target.to(input.dtype) if soft else target,
            weight=weight,
            ignore_index=self.ignore_index,
            reduction="sum" if weighted_soft_mean else self.reduction,
            label_smoothing=self.label_smoothing,
        )
        return loss / (target.float() * weight.float()).sum() if weighted_soft_mean else loss


def _ignore_mask(target: torch.Tensor) -> torch.Tensor | None:
    """``target >= 0`` when some entries are negative (``-1``: uncertain label left out of the loss), else None."""
    if target.is_floating_point() or target.dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        neg = target < 0
        if bool(neg.any()):
            return ~neg
    return None


def _masked_mean(loss: torch.Tensor, mask: torch.Tensor, reduction: str) -> torch.Tensor:
    loss = loss * mask
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / mask.sum().clamp(min=1)


class ClassificationBCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """``nn.BCEWithLogitsLoss`` for multi-label ``(B, C)`` or binary single-logit ``(B, 1)`` outputs.

    Labels are cast to float and reshaped to the logits' shape when they hold the same number of elements
    (``(B,)`` labels with ``(B, 1)`` logits). ``pos_weight`` is moved to the logits' device at each call.
    Entries labelled ``-1`` (uncertain findings with ``uncertain="ignore"``) are left out: with ``reduction="mean"``
    the loss is the mean over the known entries only (``"none"`` gives 0 for ignored entries).

    Args:
        weight: per-element rescaling weight or ``None``.
        pos_weight: per-output positive weight ``(C,)`` or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        input, target = _plain(input), _plain(target)
        if target.shape != input.shape:
            if target.numel() != input.numel():
                raise ValueError(
                    f"multi-label targets of shape {tuple(target.shape)} do not match logits {tuple(input.shape)}."
                )
            target = target.reshape(input.shape)
        mask = _ignore_mask(target)
        if mask is not None:
            loss = F.binary_cross_entropy_with_logits(
                input,
                target.clamp(min=0).to(input.dtype),
                weight=_maybe_to(self.weight, input),
                pos_weight=_maybe_to(self.pos_weight, input),
                reduction="none",
            )
            return _masked_mean(loss, mask.to(loss.dtype), self.reduction)
        return F.binary_cross_entropy_with_logits(
            input,
            target.to(input.dtype),
            weight=_maybe_to(self.weight, input),
            pos_weight=_maybe_to(self.pos_weight, input),
            reduction=self.reduction,
        )


class ClassificationFocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017) on logits, for multi-class (softmax) or multi-label (sigmoid) outputs.

    Multi-class: ``loss_i = -w_{y_i} (1 - p_{y_i})^gamma log p_{y_i}``; with ``reduction="mean"`` the sum is
    divided by ``sum_i w_{y_i}`` like ``nn.CrossEntropyLoss``, so ``gamma=0`` gives exactly (weighted) cross-entropy.
    Class probabilities ``y`` of the logits' shape (MixUp/CutMix soft targets) give
    ``loss_i = -sum_c y_ic w_c (1 - p_ic)^gamma log p_ic``, divided by ``sum_ic y_ic w_c``: one-hot rows give the
    integer-label loss.
    Multi-label: ``loss_ic = (1 - p_t)^gamma * BCE_ic`` (``pos_weight`` as in ``BCEWithLogitsLoss``), averaged over
    all elements except those labelled ``-1`` (ignored); ``gamma=0`` gives exactly ``BCEWithLogitsLoss``.

    Named so as not to clash with MONAI's segmentation ``FocalLoss``, which is not used because it falls short for
    classification: it averages over classes as well as cases (``gamma=0`` is not cross-entropy, weighted or not,
    and the scale changes with the number of classes) and has no ignore label (an uncertain ``-1`` multi-label entry
    still sends a gradient to its logit); see ``tests/losses/test_classification.py::
    test_monai_focal_loss_falls_short_for_classification``.

    Args:
        gamma: focusing parameter, ``>= 0``; default 2.
        weight: class weights ``(C,)`` (multi-class) or ``None``.
        pos_weight: positive weights ``(C,)`` (multi-label) or ``None``.
        multilabel: ``True`` for sigmoid/multi-hot targets.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: on negative ``gamma`` or an unknown ``reduction``.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        weight: torch.Tensor | Sequence[float] | None = None,
        pos_weight: torch.Tensor | Sequence[float] | None = None,
        multilabel: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}.")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        self.gamma = float(gamma)
        self.multilabel = multilabel
        self.reduction = reduction
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32)
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss from logits ``(B, C)`` and labels."""
        input, target = _plain(input), _plain(target)
        if self.multilabel:
            if target.shape != input.shape:
                if target.numel() != input.numel():
                    raise ValueError(
                        f"multi-label targets of shape {tuple(target.shape)} do not match logits {tuple(input.shape)}."
                    )
                target = target.reshape(input.shape)
            mask = _ignore_mask(target)
            target = target.clamp(min=0).to(input.dtype)
            bce = F.binary_cross_entropy_with_logits(
                input, target, pos_weight=_maybe_to(self.pos_weight, input), reduction="none"
            )
            if self.gamma:
                p = torch.sigmoid(input)
                p_t = p * target + (1 - p) * (1 - target)
                bce = (1 - p_t).pow(self.gamma) * bce
            if mask is not None:  # -1 entries (uncertain, ignored) leave the loss
                return _masked_mean(bce, mask.to(bce.dtype), self.reduction)
            return self._reduce(bce, None)
        if _is_soft(input, target):  # class probabilities (MixUp/CutMix): sum_c y_c w_c (1 - p_c)^gamma (-log p_c)
            return self._soft_multiclass(input, target.to(input.dtype))
        target = _int_targets(input, target)
        logp = F.log_softmax(input, dim=1)
        logp_t = logp.gather(1, target.unsqueeze(1)).squeeze(1)
        loss = -logp_t
        if self.gamma:
            loss = (1 - logp_t.exp()).clamp(min=0).pow(self.gamma) * loss
        w = None
        if self.weight is not None:
            w = _maybe_to(self.weight, input)[target]
            loss = loss * w
        return self._reduce(loss, w)

    def _soft_multiclass(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(input, dim=1)
        loss = -logp
        if self.gamma:
            loss = (1 - logp.exp()).clamp(min=0).pow(self.gamma) * loss
        yw = target if self.weight is None else target * _maybe_to(self.weight, input)
        return self._reduce((yw * loss).sum(1), None if self.weight is None else yw.sum(1))

    def _reduce(self, loss: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        if self.reduction == "none":
            return loss
        if self.reduction == "sum":
            return loss.sum()
        return loss.sum() / w.sum() if w is not None else loss.mean()


def _resolve_class_weights(
    class_weights: str | Sequence[float] | torch.Tensor | None, labels: Any, num_classes: int | None, bce: bool
) -> torch.Tensor | None:
    if class_weights is None:
        return None
    if isinstance(class_weights, str):
        if class_weights.lower() != "balanced":
            raise ValueError(f"class_weights must be None, 'balanced' or a list of floats, got {class_weights!r}.")
        if labels is None:
            raise ValueError("class_weights='balanced' (or imbalance='weights') needs `labels` from the data list.")
        return pos_weight_from_labels(labels, num_classes) if bce else class_weights_from_labels(labels, num_classes)
    w = torch.as_tensor(class_weights, dtype=torch.float32).reshape(-1)
    if num_classes is not None and w.numel() not in (num_classes, 1 if bce else num_classes):
        raise ValueError(f"class_weights has {w.numel()} values but num_classes={num_classes}.")
    if (w < 0).any():
        raise ValueError(f"class_weights must be non-negative, got {w.tolist()}.")
    return w


def _weights_for_imbalance(imbalance: str, class_weights: Any) -> Any:
    """``imbalance="weights"`` implies ``"balanced"`` weights unless given; ``"sampler"`` uses none."""
    if imbalance == "weights" and class_weights is None:
        return "balanced"
    return None if imbalance == "sampler" else class_weights


def build_loss(
    name: str = "ce",
    num_classes: int | None = None,
    class_weights: str | Sequence[float] | torch.Tensor | None = None,
    labels: Any = None,
    imbalance: str | None = None,
    gamma: float = 2.0,
    label_smoothing: float = 0.0,
    multilabel: bool | None = None,
    mode: str | None = None,
) -> nn.Module:
    """Build the training loss.

    Args:
        name: ``"ce"`` (softmax cross-entropy), ``"bce"`` (sigmoid BCE-with-logits, multi-label or single logit)
            or ``"focal"`` (:class:`ClassificationFocalLoss`).
        num_classes: number of outputs; checked against the weights.
        class_weights: ``None``, ``"balanced"`` (from ``labels``: class weights for CE/focal, ``pos_weight`` for
            BCE/multi-label focal) or explicit values (``pos_weight`` for BCE).
        labels: training labels or the training data list, for ``"balanced"``.
        imbalance: ``"none"``, ``"weights"`` or ``"sampler"``; ``"weights"`` implies ``class_weights="balanced"``
            unless explicit weights are given; ``"sampler"`` uses no weights (the sampler balances the classes).
        gamma: focal-loss focusing parameter.
        label_smoothing: for ``"ce"`` only.
        multilabel: for ``"focal"``: sigmoid outputs with multi-hot labels; default ``True`` when ``labels`` are
            2-D multi-hot (or ``mode="multilabel"``), else ``False``.
        mode: the task mode (``"binary"``, ``"multiclass"``, ``"multilabel"``), e.g. the bundle's ``mode`` id;
            ``"multilabel"`` needs ``"bce"`` (per-label ``pos_weight`` with ``imbalance="weights"``) or ``"focal"``.

    Returns:
        an ``nn.Module`` called as ``loss(logits, labels)``.

    Raises:
        ValueError: on an unknown ``name``/``imbalance`` or inconsistent weights.
    """
    key = str(name).lower().replace("-", "_")
    class_weights = _weights_for_imbalance(check_imbalance(imbalance), class_weights)
    task_multilabel = mode is not None and as_task(mode).is_multilabel
    if multilabel is None:
        multilabel = task_multilabel or (labels is not None and as_label_array(labels).ndim == 2)
    if key in ("ce", "cross_entropy", "crossentropy"):
        if task_multilabel:
            raise ValueError(
                "loss 'ce' (softmax cross-entropy) needs one class per image; a multi-label task needs 'bce' "
                "(sigmoid BCE-with-logits) or 'focal'."
            )
        w = _resolve_class_weights(class_weights, labels, num_classes, bce=False)
        return ClassificationCrossEntropyLoss(weight=w, label_smoothing=label_smoothing)
    if key in ("bce", "bce_with_logits", "bcewithlogits"):
        pw = _resolve_class_weights(class_weights, labels, num_classes, bce=True)
        return ClassificationBCEWithLogitsLoss(pos_weight=pw)
    if key == "focal":
        w = _resolve_class_weights(class_weights, labels, num_classes, bce=multilabel)
        if multilabel:
            return ClassificationFocalLoss(gamma=gamma, pos_weight=w, multilabel=True)
        return ClassificationFocalLoss(gamma=gamma, weight=w)
    raise ValueError(f"loss name must be 'ce', 'bce' or 'focal', got {name!r}.")
