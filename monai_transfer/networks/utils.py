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
"""Tensor helpers shared by the networks and the transforms above them (as MONAI's ``monai.networks.utils``)."""

from __future__ import annotations

import torch

__all__ = ["PROBABILITY_OUTPUTS", "grey_to_rgb"]

#: what a probability-averaging module returns: ``"logits"`` (``log(mean p)``, so the usual softmax/sigmoid
#: post-processing gives ``mean p``) or ``"probs"`` (``mean p``): ``ProbabilityEnsemble`` and ``TTAInferer``.
PROBABILITY_OUTPUTS = ("logits", "probs")


def grey_to_rgb(img: torch.Tensor, num_channels: int = 3, dim: int = 0, copy: bool = True) -> torch.Tensor:
    """Copy a one-channel (grey) tensor to ``num_channels`` channels along ``dim``; ``num_channels`` pass unchanged.

    The package's one grey -> RGB replication: ``monai_transfer.transforms.GreyToRGB`` (``dim=0``),
    ``BackboneNormalize(repeat_channels=True)`` (replicates, then normalises each copy with its own channel's
    statistics) and ``Pretrained2DNet(in_channels=1, channel_strategy="repeat")`` (``dim=1``, ``copy=False``, on the
    already normalised batch) all call it. TorchScript-compatible, so the network's ``forward`` can use it.

    Args:
        img: a tensor (a ``MetaTensor`` keeps its metadata).
        num_channels: output channels, default 3.
        dim: the channel dimension: 0 for a channel-first image, 1 for a ``(B, C, H, W)`` batch.
        copy: True (default) returns new memory (``Tensor.repeat``); False a read-only ``expand`` view, for inputs
            that are only read (a network's stem), not for transforms whose followers may write in place.

    Raises:
        ValueError: ``img`` has neither 1 nor ``num_channels`` channels along ``dim``.
    """
    c = img.shape[dim]
    if c == num_channels:
        return img
    if c != 1:
        msg = "grey_to_rgb expects 1 or {} channels along dim {}, got shape {}."  # TorchScript: no f-strings
        raise ValueError(msg.format(num_channels, dim, list(img.shape)))
    sizes = [1 if copy else -1] * img.dim()
    sizes[dim] = num_channels
    return img.repeat(sizes) if copy else img.expand(sizes)
