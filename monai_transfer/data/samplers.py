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
"""Training labels, class weights and class-balanced samplers, built from the training data list.

``imbalance`` (``"none"``, ``"weights"``, ``"sampler"``) chooses how class imbalance is handled: ``"weights"`` gives
inverse-frequency class weights (:func:`class_weights_from_labels`) or ``pos_weight`` (:func:`pos_weight_from_labels`)
to the loss (:func:`monai_transfer.losses.classification.build_loss`); ``"sampler"`` a
:class:`torch.utils.data.WeightedRandomSampler` that draws classes equally often (under ``torchrun``,
:class:`DistributedWeightedSampler`, the same draws split across the ranks).

Bundle snippet::

    "train_labels": "$monai_transfer.data.samplers.labels_from_datalist(@train_datalist)",
    "train#sampler": "$monai_transfer.data.samplers.build_sampler(@train_labels, @imbalance, @seed)",
    "train#dataloader": {"_target_": "DataLoader", "sampler": "@train#sampler",
                         "shuffle": "$@train#sampler is None", ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler, WeightedRandomSampler

__all__ = [
    "IMBALANCE_MODES",
    "check_imbalance",
    "labels_from_datalist",
    "as_label_array",
    "class_counts",
    "class_weights_from_labels",
    "pos_weight_from_labels",
    "make_weighted_sampler",
    "build_sampler",
    "DistributedWeightedSampler",
    "build_distributed_sampler",
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


def as_label_array(labels: Any) -> np.ndarray:
    """``labels`` (array, tensor, or a data list: :func:`labels_from_datalist`) as a numpy array."""
    if isinstance(labels, np.ndarray):
        return labels
    if isinstance(labels, torch.Tensor):
        return labels.detach().cpu().numpy()
    return labels_from_datalist(labels)


def class_counts(labels: Any, num_classes: int | None) -> np.ndarray:
    """Samples per class (integer labels) or positives per label (multi-hot; ``-1`` is not a positive), float64.

    Raises:
        ValueError: on negative or out-of-range integer labels.
    """
    y = as_label_array(labels)
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
    counts = class_counts(labels, num_classes)
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
    y = as_label_array(labels).astype(np.float64)
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
    y = as_label_array(labels)
    if y.shape[0] == 0:
        raise ValueError("labels are empty: cannot build a weighted sampler.")
    counts = class_counts(y, num_classes)
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
    imbalance = check_imbalance(imbalance)
    return make_weighted_sampler(labels, seed=seed) if imbalance == "sampler" else None


class DistributedWeightedSampler(DistributedSampler):
    """Class-balanced sampling with replacement, split across the ranks of a ``torchrun`` (DDP) run.

    Every rank draws the same ``num_replicas * num_samples`` indices from a generator seeded identically on all ranks
    and keeps those at positions ``rank, rank + num_replicas, ...``: together the ranks make one class-balanced draw
    per epoch, like :func:`make_weighted_sampler` in a single process, and no two ranks share a draw.
    :meth:`set_epoch` (called by MONAI's trainer for a ``DistributedSampler``) reseeds the generator from
    ``seed + epoch``; :class:`~monai_transfer.handlers.seeding.EpochSeed` may reseed it too (same value on every
    rank), so resumed runs draw the same samples.

    Why not MONAI's ``DistributedWeightedRandomSampler``: it draws each rank's samples from that rank's shard of the
    data only, so a rare class is drawn only by the rank whose shard holds it and the ranks together draw it far less
    often than a class-balanced sampler (one image in 100 on 4 ranks: about 20 % of the draws instead of 50 %;
    ``tests/data/test_samplers.py::test_monai_distributed_weighted_random_sampler_falls_short_of_one_balanced_draw``).

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
    mode = check_imbalance(imbalance)
    if mode == "sampler":
        if labels is None:
            raise ValueError("imbalance='sampler' needs the training labels (labels=@train#dataset#data).")
        return DistributedWeightedSampler(labels, seed=seed)
    from monai.data import DistributedSampler as MonaiDistributedSampler

    return MonaiDistributedSampler(dataset, even_divisible=even_divisible, shuffle=True, seed=int(seed))


def check_imbalance(imbalance: str | None) -> str:
    """``imbalance`` lower-cased (``None`` is ``"none"``).

    Raises:
        ValueError: when it is not one of :data:`IMBALANCE_MODES`.
    """
    mode = "none" if imbalance is None else str(imbalance).lower()
    if mode not in IMBALANCE_MODES:
        raise ValueError(f"imbalance must be one of {IMBALANCE_MODES}, got {imbalance!r}.")
    return mode
