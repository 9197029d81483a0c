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
"""MixUp (Zhang et al., ICLR 2018) and CutMix (Yun et al., ICCV 2019) on training batches, with soft targets.

MONAI's ``monai.transforms.MixUp``/``CutMix`` (1.6) fix the batch size when built and do not mix classification
labels: ``MixUp`` rejects ``(B, C)`` labels (only 3-D/4-D spatial tensors pass) and ``CutMix.__call__`` mixes the
labels with the image mask instead of the pasted area. :class:`BatchMixUpCutMix` mixes a whole batch, one mixing
weight and one pairing per batch, and turns the labels into soft targets: one-hot rows for binary/multi-class
(``ClassificationCrossEntropyLoss`` and ``ClassificationFocalLoss`` take class probabilities), mixed multi-hot rows
for multi-label (BCE); an entry labelled ``-1`` (uncertain, ignored by the loss) stays ``-1`` when either mixed
image has it. CutMix's weight is the area actually kept once the box is clipped to the image.

timm's ``timm.data.Mixup`` is not used: it refuses odd batch sizes (the last batch of an epoch without
``drop_last``), turns an uncertain ``-1`` multi-label entry into a negative soft target that no loss can ignore, and
draws from NumPy's global generator, so the per-iteration reseeding that makes a resumed run mix the same way is not
possible (``tests/transforms/test_regularization.py::test_timm_mixup_falls_short_for_our_batches``).

:class:`~monai_transfer.handlers.mixing.MixBatchHandler` applies it to the trainer's batch at ``ITERATION_STARTED``
(before ``prepare_batch``), reseeded from ``(seed, iteration, rank)``, so the same seed mixes the same way, also after
a resume::

    {"_target_": "monai_transfer.handlers.mixing.MixBatchHandler", "seed": "@seed", "mixup_alpha": 0.2,
     "cutmix_alpha": 0.0, "prob": 1.0, "num_classes": "@num_classes", "one_hot": "$@mode != 'multilabel'"}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.transforms import RandomizableTransform

if TYPE_CHECKING:
    pass

__all__ = ["soft_targets", "mix_targets", "mixup", "cutmix", "cutmix_box", "BatchMixUpCutMix"]


def _plain(x: Any) -> torch.Tensor:
    x = torch.as_tensor(x)
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def soft_targets(labels: Any, num_classes: int, one_hot: bool = True) -> torch.Tensor:
    """Float ``(B, C)`` targets from a batch of labels.

    Args:
        labels: integer classes ``(B,)``/``(B, 1)`` (one-hot encoded when ``one_hot`` and ``num_classes > 1``),
            or ``(B, C)`` multi-hot labels / class probabilities (kept, as float).
        num_classes: ``C``, the number of network outputs.
        one_hot: ``True`` for softmax (binary/multi-class) heads, ``False`` for sigmoid (multi-label, one-logit).

    Raises:
        ValueError: a class index outside ``[0, num_classes)`` or labels that fit neither layout.
    """
    y = _plain(labels)
    b = y.shape[0] if y.ndim else 0
    if one_hot and num_classes > 1 and not (y.ndim == 2 and y.shape[1] == num_classes):
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"labels of shape {tuple(y.shape)}: expected classes (B,)/(B, 1) or (B, {num_classes}).")
        idx = y.long()
        if bool(((idx < 0) | (idx >= num_classes)).any()) or bool((idx != y).any()):
            raise ValueError(f"labels {y.tolist()} are not class indices in [0, {num_classes}).")
        return torch.nn.functional.one_hot(idx, num_classes).float()
    if y.numel() != b * num_classes:
        raise ValueError(f"labels of shape {tuple(y.shape)} do not give {num_classes} target(s) per image.")
    return y.reshape(b, num_classes).float()


def mix_targets(targets: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam * targets + (1 - lam) * targets[perm]``; ``-1`` (ignored) where either row has ``-1``."""
    other = targets[perm]
    mixed = lam * targets + (1.0 - lam) * other
    ignored = (targets < 0) | (other < 0)
    return torch.where(ignored, torch.full_like(mixed, -1.0), mixed) if bool(ignored.any()) else mixed


def mixup(
    images: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp: ``lam * x + (1 - lam) * x[perm]`` for the images ``(B, C, *spatial)`` and the soft targets."""
    return lam * images + (1.0 - lam) * images[perm], mix_targets(targets, perm, lam)


def cutmix_box(spatial_shape: Sequence[int], lam: float, centre: Sequence[int]) -> tuple[slice, ...]:
    """The box CutMix pastes: side ``d * (1 - lam) ** (1 / n)`` around ``centre``, clipped to the image.

    Args:
        spatial_shape: the ``n`` spatial sizes.
        lam: the drawn mixing weight (fraction of the image to keep before clipping).
        centre: the box centre, one index per spatial dimension.
    """
    n = len(spatial_shape)
    box = []
    for d, c in zip(spatial_shape, centre):
        half = int(round(d * (1.0 - lam) ** (1.0 / n))) // 2
        box.append(slice(max(int(c) - half, 0), min(int(c) + half, d)))
    return tuple(box)


def cutmix(
    images: torch.Tensor, targets: torch.Tensor, box: Sequence[slice], perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix: paste ``box`` of ``images[perm]`` into ``images``; the targets mix by the area kept.

    Returns:
        the mixed images, the mixed targets and the weight of the original images (``1 - box area / image area``).
    """
    region = (slice(None), slice(None), *box)
    out = images.clone()
    out[region] = images[perm][region]
    spatial = images.shape[2:]
    lam = 1.0 - float(np.prod([s.stop - s.start for s in box])) / float(np.prod(spatial))
    return out, mix_targets(targets, perm, lam), lam


class BatchMixUpCutMix(RandomizableTransform):
    """MixUp and/or CutMix on a batch ``(images, labels)``, returning ``(mixed images, soft targets)``.

    Each call draws: whether to mix (``prob``), CutMix or MixUp (``switch_prob`` when both alphas are positive),
    ``lam ~ Beta(alpha, alpha)`` and a permutation pairing the images. A batch left unmixed still gets soft targets,
    so the loss sees one layout. With both alphas 0 the call returns its inputs unchanged. Kept instead of timm's
    ``Mixup``, which falls short for these batches (see the module docstring).

    Args:
        mixup_alpha: Beta parameter of MixUp; 0 turns MixUp off.
        cutmix_alpha: Beta parameter of CutMix; 0 turns CutMix off.
        prob: probability that a batch is mixed.
        switch_prob: probability of CutMix rather than MixUp when both are on.
        num_classes: number of network outputs.
        one_hot: one-hot integer labels (softmax heads); ``False`` for multi-label/one-logit sigmoid heads.

    Raises:
        ValueError: a negative alpha or a probability outside ``[0, 1]``.
    """

    def __init__(
        self,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        num_classes: int = 2,
        one_hot: bool = True,
    ) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha} and {cutmix_alpha}.")
        if not (0.0 <= prob <= 1.0 and 0.0 <= switch_prob <= 1.0):
            raise ValueError(f"prob and switch_prob must be in [0, 1], got {prob} and {switch_prob}.")
        super().__init__(prob=prob)
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.switch_prob = float(switch_prob)
        self.num_classes = int(num_classes)
        self.one_hot = bool(one_hot)
        self._params: dict[str, Any] = {}

    @property
    def enabled(self) -> bool:
        """Whether MixUp or CutMix is on."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def randomize(self, data: torch.Tensor) -> None:
        """Draw this batch's parameters for ``data`` of shape ``(B, C, *spatial)``."""
        super().randomize(None)
        if not self._do_transform:
            self._params = {}
            return
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or self.R.rand() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(self.R.beta(alpha, alpha))
        perm = torch.as_tensor(self.R.permutation(data.shape[0]), dtype=torch.long)
        box = None
        if use_cutmix:
            box = cutmix_box(data.shape[2:], lam, [self.R.randint(0, d) for d in data.shape[2:]])
        self._params = {"lam": lam, "perm": perm, "box": box}

    def __call__(self, images: Any, labels: Any, randomize: bool = True) -> tuple[Any, Any]:
        """Return ``(images, targets)`` mixed (or the inputs unchanged when both alphas are 0)."""
        if not self.enabled:
            return images, labels
        x = _plain(images)
        if randomize:
            self.randomize(x)
        targets = soft_targets(labels, self.num_classes, self.one_hot)
        if not self._params:
            return x, targets
        perm = self._params["perm"].to(x.device)
        targets = targets.to(x.device)
        if self._params["box"] is not None:
            x, targets, _ = cutmix(x, targets, self._params["box"], perm)
            return x, targets
        return mixup(x.float() if not x.is_floating_point() else x, targets, self._params["lam"], perm)
