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
"""Classification losses and class-imbalance handling, built from the training data list.

MONAI's ``SupervisedTrainer`` calls ``loss_function(pred, label)`` with whatever the data loader produced, so every
loss here accepts integer labels shaped ``(B,)`` or ``(B, 1)`` (multi-class), multi-hot ``(B, C)`` (multi-label) and
moves its class weights to the prediction's device on the fly (the trainer never moves the loss).

One option, ``imbalance``, chooses how class imbalance is handled:

- ``"none"``: plain loss, shuffled loader;
- ``"weights"``: inverse-frequency class weights (CE/focal) or ``pos_weight`` (BCE) computed from the labels;
- ``"sampler"``: plain loss, a :class:`torch.utils.data.WeightedRandomSampler` that draws classes equally often
  (under ``torchrun``, :class:`DistributedWeightedSampler`, the same draws split across the ranks).

Bundle snippet::

    "train_labels": "$monai_transfer.engines.losses.labels_from_datalist(@train_datalist)",
    "loss": {"_target_": "monai_transfer.engines.losses.build_loss", "name": "ce", "num_classes": 2,
             "labels": "@train_labels", "imbalance": "@imbalance"},
    "train#sampler": "$monai_transfer.engines.losses.build_sampler(@train_labels, @imbalance, @seed)",
    "train#dataloader": {"_target_": "DataLoader", "sampler": "@train#sampler",
                         "shuffle": "$@train#sampler is None", ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler, WeightedRandomSampler

from monai_transfer.utils.task import as_task

__all__ = [
    "IMBALANCE_MODES",
    "labels_from_datalist",
    "class_weights_from_labels",
    "pos_weight_from_labels",
    "make_weighted_sampler",
    "build_sampler",
    "DistributedWeightedSampler",
    "build_distributed_sampler",
    "ClassificationCrossEntropyLoss",
    "ClassificationBCEWithLogitsLoss",
    "ClassificationFocalLoss",
    "build_loss",
]

IMBALANCE_MODES = ("none", "weights", "sampler")


def labels_from_datalist(datalist: Sequence[Any], key: str = "label") -> np.ndarray:
    """Labels as an array: ``(N,)`` integer classes or ``(N, C)`` multi-hot.

    Args:
        datalist: MONAI-style list of dicts (``[{"image": ..., "label": 1}, ...]``) or a plain list of labels.
        key: label key in each dict.

    Raises:
        KeyError: when an item has no ``key``; the message gives the item's index.
        ValueError: when the list is empty or labels have mixed shapes.
    """
    if len(datalist) == 0:
        raise ValueError("datalist is empty: cannot derive labels.")
    labels = []
    for i, item in enumerate(datalist):
        if isinstance(item, Mapping):
            if key not in item:
                raise KeyError(f"datalist item {i} has no '{key}' key (keys: {sorted(item)}).")
            item = item[key]
        labels.append(np.asarray(item.detach().cpu() if isinstance(item, torch.Tensor) else item).reshape(-1))
    sizes = {x.size for x in labels}
    if len(sizes) != 1:
        raise ValueError(f"labels have mixed sizes {sorted(sizes)}: expected one integer or one multi-hot row each.")
    arr = np.stack(labels)
    return arr[:, 0] if arr.shape[1] == 1 else arr


def _as_label_array(labels: Any) -> np.ndarray:
    if isinstance(labels, np.ndarray):
        return labels
    if isinstance(labels, torch.Tensor):
        return labels.detach().cpu().numpy()
    return labels_from_datalist(labels)


def _class_counts(labels: Any, num_classes: int | None) -> np.ndarray:
    y = _as_label_array(labels)
    if y.ndim == 2:  # multi-hot; -1 entries (uncertain, ignored) are not positives
        return (y == 1).astype(np.float64).sum(axis=0)
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"labels must be non-negative class indices, got {int(y.min())}.")
    n = num_classes if num_classes is not None else int(y.max()) + 1
    if y.size and y.max() >= n:
        raise ValueError(f"label {int(y.max())} is out of range for num_classes={n}.")
    return np.bincount(y, minlength=n).astype(np.float64)


def class_weights_from_labels(labels: Any, num_classes: int | None = None) -> torch.Tensor:
    """Inverse-frequency class weights ``w_c = N / (K * n_c)`` over the ``K`` classes present (sklearn "balanced").

    The weights are normalised so that the average weight per training sample is 1 (the loss keeps its scale).
    A class with no sample gets weight 0 (it never appears as a target).

    Args:
        labels: integer labels ``(N,)`` (array, tensor, list or data list).
        num_classes: number of classes; default ``max(label) + 1``.

    Returns:
        float32 tensor ``(num_classes,)``.

    Raises:
        ValueError: on negative or out-of-range labels, or an empty list.
    """
    counts = _class_counts(labels, num_classes)
    present = counts > 0
    if not present.any():
        raise ValueError("no labels given: cannot compute class weights.")
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.as_tensor(weights, dtype=torch.float32)


def pos_weight_from_labels(labels: Any, num_classes: int | None = None) -> torch.Tensor:
    """``pos_weight = n_negative / n_positive`` per output, for ``BCEWithLogitsLoss``.

    Args:
        labels: multi-hot ``(N, C)`` labels (multi-label) or binary ``(N,)`` labels (one output logit).
        num_classes: only checked for multi-hot labels (must equal ``C``).

    Returns:
        float32 tensor ``(C,)`` (``(1,)`` for binary labels); an output with no positive gets 1.

    Raises:
        ValueError: when binary labels are not 0/1, or ``num_classes`` disagrees with the label width.
    """
    y = _as_label_array(labels).astype(np.float64)
    if y.ndim == 1:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("binary labels for pos_weight must be 0 or 1; use class weights for multi-class labels.")
        y = y[:, None]
    if num_classes is not None and y.shape[1] != num_classes and y.shape[1] != 1:
        raise ValueError(f"multi-hot labels have {y.shape[1]} columns but num_classes={num_classes}.")
    pos = (y == 1).sum(axis=0)
    neg = (y == 0).sum(axis=0)  # entries marked -1 (uncertain, ignored by the loss) count for neither
    pw = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return torch.as_tensor(pw, dtype=torch.float32)


def _sample_weights(labels: Any, num_classes: int | None = None) -> torch.Tensor:
    """Per-sample weights drawing every class equally often (see :func:`make_weighted_sampler`), float64."""
    y = _as_label_array(labels)
    if y.shape[0] == 0:
        raise ValueError("labels are empty: cannot build a weighted sampler.")
    counts = _class_counts(y, num_classes)
    if y.ndim == 1:
        w = 1.0 / counts[y.astype(np.int64)]
    else:
        pos = y == 1  # -1 (uncertain, ignored) is not a positive
        inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
        n_neg = max(int((~pos.any(axis=1)).sum()), 1)
        w = np.where(pos.any(axis=1), (pos * inv).sum(axis=1) / np.maximum(pos.sum(axis=1), 1), 1.0 / n_neg)
    return torch.as_tensor(w, dtype=torch.double)


def make_weighted_sampler(
    labels: Any, num_samples: int | None = None, seed: int = 0, num_classes: int | None = None
) -> WeightedRandomSampler:
    """A sampler that draws every class equally often (with replacement), from a seeded generator.

    Each sample's weight is ``1 / n_{class}``; for multi-hot labels, the mean inverse frequency of its positive
    labels (samples with no positive label use the rarest weight of the negatives, i.e. ``1 / n_all_negative``).

    Args:
        labels: integer ``(N,)`` or multi-hot ``(N, C)`` labels.
        num_samples: draws per epoch; default ``N``.
        seed: seed of the sampler's own ``torch.Generator`` (:class:`~monai_transfer.handlers.seeding.EpochSeed`
            reseeds it every epoch so resumed runs draw the same samples).
        num_classes: number of classes for integer labels.

    Raises:
        ValueError: when ``labels`` is empty.
    """
    w = _sample_weights(labels, num_classes)
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    n = int(num_samples) if num_samples is not None else len(w)
    return WeightedRandomSampler(w, n, replacement=True, generator=gen)


def build_sampler(labels: Any, imbalance: str = "none", seed: int = 0) -> WeightedRandomSampler | None:
    """The training sampler for an ``imbalance`` mode: a weighted sampler for ``"sampler"``, else ``None``.

    Raises:
        ValueError: when ``imbalance`` is not one of ``"none"``, ``"weights"``, ``"sampler"``.
    """
    imbalance = _check_imbalance(imbalance)
    return make_weighted_sampler(labels, seed=seed) if imbalance == "sampler" else None


class DistributedWeightedSampler(DistributedSampler):
    """Class-balanced sampling with replacement, split across the ranks of a ``torchrun`` (DDP) run.

    Every rank draws the same ``num_replicas * num_samples`` indices from a generator seeded identically on all ranks
    and keeps those at positions ``rank, rank + num_replicas, ...``: together the ranks make one class-balanced draw
    per epoch, like :func:`make_weighted_sampler` in a single process, and no two ranks share a draw.
    :meth:`set_epoch` (called by MONAI's trainer for a ``DistributedSampler``) reseeds the generator from
    ``seed + epoch``; :class:`~monai_transfer.handlers.seeding.EpochSeed` may reseed it too (same value on every
    rank), so resumed runs draw the same samples.

    Args:
        labels: integer ``(N,)`` or multi-hot ``(N, C)`` labels (array, tensor or data list).
        num_replicas: number of ranks; default the process group's world size.
        rank: this rank; default the process group's rank.
        num_samples: draws per rank and epoch; default ``ceil(N / num_replicas)``.
        seed: base seed, the same on every rank.
        num_classes: number of classes for integer labels.

    Raises:
        ValueError: when ``labels`` is empty, or ``rank`` is not in ``[0, num_replicas)``.
    """

    def __init__(
        self,
        labels: Any,
        num_replicas: int | None = None,
        rank: int | None = None,
        num_samples: int | None = None,
        seed: int = 0,
        num_classes: int | None = None,
    ) -> None:
        weights = _sample_weights(labels, num_classes)
        super().__init__(range(len(weights)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=int(seed))
        self.weights = weights
        if num_samples is not None:
            self.num_samples = int(num_samples)
        self.total_size = self.num_samples * self.num_replicas
        self.generator = torch.Generator()
        self.generator.manual_seed(self.seed)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the draw for ``epoch`` (same on every rank)."""
        super().set_epoch(epoch)
        self.generator.manual_seed(self.seed + int(epoch))

    def __iter__(self):
        draws = torch.multinomial(self.weights, self.total_size, replacement=True, generator=self.generator)
        return iter(draws[self.rank : self.total_size : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


def build_distributed_sampler(
    dataset: Any, labels: Any = None, imbalance: str = "none", seed: int = 0, even_divisible: bool = True
) -> DistributedSampler:
    """The training sampler of a ``torchrun`` (DDP) run for an ``imbalance`` mode.

    ``"sampler"`` gives a :class:`DistributedWeightedSampler` over ``labels``; ``"none"`` and ``"weights"`` give
    MONAI's shuffling ``DistributedSampler`` over ``dataset`` (``"weights"`` is handled by the loss).

    Raises:
        ValueError: when ``imbalance`` is unknown, or ``"sampler"`` without ``labels``.
    """
    mode = _check_imbalance(imbalance)
    if mode == "sampler":
        if labels is None:
            raise ValueError("imbalance='sampler' needs the training labels (labels=@train#dataset#data).")
        return DistributedWeightedSampler(labels, seed=seed)
    from monai.data import DistributedSampler as MonaiDistributedSampler

    return MonaiDistributedSampler(dataset, even_divisible=even_divisible, shuffle=True, seed=int(seed))


def _check_imbalance(imbalance: str | None) -> str:
    mode = "none" if imbalance is None else str(imbalance).lower()
    if mode not in IMBALANCE_MODES:
        raise ValueError(f"imbalance must be one of {IMBALANCE_MODES}, got {imbalance!r}.")
    return mode


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

    Named so as not to clash with MONAI's segmentation ``FocalLoss``.

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
    imb = _check_imbalance(imbalance)
    if imb == "weights" and class_weights is None:
        class_weights = "balanced"
    elif imb == "sampler":
        class_weights = None
    task_multilabel = mode is not None and as_task(mode).is_multilabel
    if multilabel is None:
        multilabel = task_multilabel or (labels is not None and _as_label_array(labels).ndim == 2)
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
