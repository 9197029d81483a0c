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
"""Array transform that applies a fitted temperature to logits (post-processing, before the softmax/sigmoid)."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from monai.config import NdarrayOrTensor
from monai.transforms import Transform

from monai_transfer.metrics.calibration import load_calibration

__all__ = ["ApplyTemperature", "resolve_temperature"]

logger = logging.getLogger(__name__)


def resolve_temperature(
    temperature: float | str | os.PathLike | None, allow_missing: bool = False, mode: Any = None
) -> float:
    """A temperature from a number, ``None`` (1.0) or a ``calibration.json`` path (see ``save_calibration``).

    Args:
        temperature: the value, ``None`` or a path.
        allow_missing: with a path that does not exist, use ``T = 1`` (no calibration) and log a warning instead of
            raising; for configs where calibration is optional.
        mode: the model's task (``"binary"``, ``"multiclass"``, ``"multilabel"``): a file fitted for another task is
            refused (:func:`~monai_transfer.metrics.calibration.load_calibration`); ``None`` checks nothing.

    Raises:
        FileNotFoundError: a missing file when ``allow_missing`` is False.
        ValueError: a non-positive temperature or an invalid file (the message names it).
    """
    if temperature is None:
        return 1.0
    if isinstance(temperature, (str, os.PathLike)):
        if allow_missing and not Path(temperature).is_file():
            logger.warning("calibration file %s not found: no temperature scaling (T = 1)", temperature)
            return 1.0
        return load_calibration(temperature, mode)
    t = float(temperature)
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return t


class ApplyTemperature(Transform):
    """Divide logits by a temperature ``T`` (temperature scaling): ``softmax(x / T)`` are calibrated probabilities.

    Use it in an evaluator's ``postprocessing`` BEFORE ``Activationsd(softmax=True)`` (or ``sigmoid``). It also works
    on log-probabilities (e.g. the outputs of :class:`monai_transfer.inferers.TTAInferer` and
    :class:`monai_transfer.networks.nets.ProbabilityEnsemble`): they differ from logits by a per-case constant, which a
    softmax ignores. The temperature must have been fitted on the same kind of outputs (same network, same TTA or
    ensemble) it is applied to.

    Args:
        temperature: a number, or the path of a ``calibration.json`` written by
            :func:`monai_transfer.metrics.calibration.save_calibration` (read once, here).
        allow_missing: a missing ``calibration.json`` means ``T = 1`` (logged) instead of an error.
        mode: the model's task; a ``calibration.json`` fitted for another task (its ``mode``) is refused, naming the
            file. ``None`` (default) checks nothing; the bundles pass ``@mode``.
    """

    backend = [torch.Tensor]

    def __init__(
        self, temperature: float | str | os.PathLike = 1.0, allow_missing: bool = False, mode: Any = None
    ) -> None:
        self.temperature = resolve_temperature(temperature, allow_missing, mode)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``img / T``; tensors keep their type (and MetaTensor metadata), arrays stay arrays."""
        if not isinstance(img, torch.Tensor) and not hasattr(img, "__truediv__"):
            raise TypeError(f"ApplyTemperature expects a tensor or array of logits, got {type(img).__name__}")
        if isinstance(img, torch.Tensor) and not torch.is_floating_point(img):
            img = img.float()
        return img / self.temperature
