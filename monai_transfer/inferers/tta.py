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
"""Test-time augmentation for classifiers: average the class probabilities over flipped / slightly rotated or scaled
copies of each image."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SimpleInferer

from monai_transfer.networks.utils import PROBABILITY_OUTPUTS

__all__ = ["TTA_OUTPUTS", "TTAInferer", "average_probabilities"]

TTA_OUTPUTS = PROBABILITY_OUTPUTS
_ACTIVATIONS = ("softmax", "sigmoid")
_EPS = 1e-12


def average_probabilities(
    outputs: Sequence[torch.Tensor], activation: str = "softmax", output: str = "logits"
) -> torch.Tensor:
    """Mean of ``activation(o)`` over ``outputs`` (class scores ``(B, K)``), as probabilities or as logits.

    ``output="logits"`` returns ``log(mean p)`` (softmax) or ``logit(mean p)`` (sigmoid): the usual post-processing
    (``Activationsd(softmax=True)`` / ``sigmoid``) then gives back ``mean p`` exactly, and
    :class:`monai_transfer.transforms.ApplyTemperatured` can be applied to them like to logits. Shared by
    :class:`TTAInferer` and :class:`monai_transfer.networks.nets.ProbabilityEnsemble`.

    Args:
        outputs: network outputs of identical shape (``(B, K)``; ``K = 1`` allowed with a sigmoid).
        activation: ``"softmax"`` over dim 1 or ``"sigmoid"``.
        output: ``"logits"`` or ``"probs"``.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    if output not in TTA_OUTPUTS:
        raise ValueError(f"output must be one of {TTA_OUTPUTS}, got {output!r}")
    if not outputs:
        raise ValueError("nothing to average: no outputs")
    shapes = {tuple(o.shape) for o in outputs}
    if len(shapes) != 1:
        raise ValueError(f"outputs to average must have one shape, got {sorted(shapes)}")
    act: Callable[[torch.Tensor], torch.Tensor] = (
        (lambda o: torch.softmax(o.float(), dim=1)) if activation == "softmax" else (lambda o: torch.sigmoid(o.float()))
    )
    p = torch.stack([act(o) for o in outputs]).mean(0)
    if output == "probs":
        return p
    p = p.clamp(_EPS, 1.0 - _EPS) if activation == "sigmoid" else p.clamp_min(_EPS)
    return torch.log(p) if activation == "softmax" else torch.log(p) - torch.log1p(-p)


class TTAInferer(Inferer):
    """Test-time augmentation for image classifiers: run the network on several views, average the probabilities.

    The views are the image itself, each flip of ``flip_axes``, each rotation of ``rotations`` (degrees, 2D only) and
    each isotropic zoom of ``scales`` (2D only); rotations and zooms resample about the image centre (bilinear, border
    padding), like ``RandAffined``. Class scores do not move with the image, so no inverse transform is needed. Only
    use views the network was trained to be invariant to: the xray bundle trains with small rotations/zooms but
    without horizontal flips (the heart is on the left), hence the defaults.

    Usable as the ``inferer`` of a bundle's evaluator (``inference.json``), off by default there::

        "inferer": {"_target_": "monai_transfer.inferers.TTAInferer", "rotations": [-5, 5], "scales": [0.95, 1.05]}

    The post-processing stays ``Activationsd(softmax=True)``: with ``output="logits"`` (default) the inferer returns
    ``log(mean p)``, which the softmax turns back into ``mean p`` exactly. A temperature (``calibration.json``) must be
    fitted on TTA outputs to be applied to them.

    Args:
        flip_axes: spatial axes to flip, one entry per view (an int or a tuple of ints; 0-based over the spatial dims,
            so ``1`` is a left-right flip of a ``(B, C, H, W)`` batch); default none.
        rotations: in-plane rotation angles in degrees, one view each; default ``(-5, 5)``.
        scales: zoom factors, one view each (``1.05`` enlarges the content); default none.
        activation: ``"softmax"`` (default) or ``"sigmoid"`` (multi-label).
        output: ``"logits"`` (default) or ``"probs"`` (then drop the activation from the post-processing).
        inferer: the inferer run on every view; default MONAI's ``SimpleInferer``.
        include_identity: include the un-augmented image (default True).
    """

    def __init__(
        self,
        flip_axes: Sequence[int | Sequence[int]] = (),
        rotations: Sequence[float] = (-5.0, 5.0),
        scales: Sequence[float] = (),
        activation: str = "softmax",
        output: str = "logits",
        inferer: Inferer | None = None,
        include_identity: bool = True,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        if output not in TTA_OUTPUTS:
            raise ValueError(f"output must be one of {TTA_OUTPUTS}, got {output!r}")
        self.flip_axes = [tuple(int(a) for a in ((f,) if isinstance(f, int) else f)) for f in flip_axes]
        if any(len(f) == 0 or min(f) < 0 for f in self.flip_axes):
            raise ValueError(f"flip_axes entries must be non-empty, non-negative spatial axes, got {list(flip_axes)}")
        self.rotations = [float(r) for r in rotations]
        self.scales = [float(s) for s in scales]
        if any(not s > 0 for s in self.scales):
            raise ValueError(f"scales must be positive, got {list(scales)}")
        self.activation = activation
        self.output = output
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.include_identity = bool(include_identity)
        if self.num_views == 0:
            raise ValueError("TTAInferer has no view: give flip_axes, rotations or scales, or include_identity=True")

    @property
    def num_views(self) -> int:
        """How many forward passes per batch."""
        return int(self.include_identity) + len(self.flip_axes) + len(self.rotations) + len(self.scales)

    @staticmethod
    def _affine(x: torch.Tensor, angle_deg: float, scale: float) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"TTAInferer rotations/scales need a 2D (B, C, H, W) batch, got shape {tuple(x.shape)}")
        a = math.radians(angle_deg)
        c, s = math.cos(a) / scale, math.sin(a) / scale
        h, w = x.shape[-2:]
        # output pixel (normalised coords, x = column, y = row) samples the input at R^-1 / scale; the aspect ratio
        # factors keep the rotation rigid on non-square images
        theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=torch.float32, device=x.device)
        grid = F.affine_grid(theta[None].expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        out = F.grid_sample(
            x.float(), grid.to(torch.float32), mode="bilinear", padding_mode="border", align_corners=False
        )
        return out.to(x.dtype)

    def views(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """The augmented copies of a ``(B, C, *spatial)`` batch, in order: identity, flips, rotations, scales."""
        x = inputs.as_subclass(torch.Tensor) if isinstance(inputs, torch.Tensor) else torch.as_tensor(inputs)
        n_spatial = x.ndim - 2
        out = [x] if self.include_identity else []
        for f in self.flip_axes:
            if max(f) >= n_spatial:
                raise ValueError(
                    f"flip axis {max(f)} out of range for {n_spatial} spatial dims (shape {tuple(x.shape)})"
                )
            out.append(torch.flip(x, dims=[a + 2 for a in f]))
        out.extend(self._affine(x, r, 1.0) for r in self.rotations)
        out.extend(self._affine(x, 0.0, s) for s in self.scales)
        return out

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """Average the probabilities of ``network`` over the views: ``(B, K)`` logits (``log mean p``) or probs."""
        outs = [self.inferer(v, network, *args, **kwargs) for v in self.views(inputs)]
        return average_probabilities(outs, self.activation, self.output)
