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
"""Gradient-norm clipping for MONAI's ``SupervisedTrainer``, as an Ignite handler."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from monai.engines.utils import IterationEvents

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["GradNormClipper"]


class GradNormClipper:
    """Ignite handler clipping the gradient norm between ``loss.backward()`` and ``optimizer.step()``.

    MONAI's ``SupervisedTrainer`` (1.4 to 1.6) has no clipping argument, but fires
    ``IterationEvents.BACKWARD_COMPLETED`` right after ``backward()`` and before the optimiser step; this handler
    runs on that event. Under AMP the gradients are first unscaled (``scaler.unscale_``), so ``max_norm`` applies to
    the true gradients; with ``accumulation_steps > 1`` it clips only on iterations that step the optimiser.
    The norm before clipping is stored in ``engine.state.grad_norm`` (for logging).

    Args:
        max_norm: maximum total norm; must be positive.
        norm_type: p of the p-norm (``2.0``, or ``inf``).

    Raises:
        ValueError: when ``max_norm`` is not positive.

    Example::

        {"_target_": "monai_transfer.handlers.grad_clip.GradNormClipper", "max_norm": 1.0}
    """

    def __init__(self, max_norm: float, norm_type: float = 2.0) -> None:
        if not max_norm > 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}.")
        self.max_norm = float(max_norm)
        self.norm_type = float(norm_type)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Register on ``IterationEvents.BACKWARD_COMPLETED`` of a MONAI trainer.

        Raises:
            ValueError: when the engine does not fire ``BACKWARD_COMPLETED`` (not a MONAI ``SupervisedTrainer``).
        """
        if not engine.has_registered_events(IterationEvents.BACKWARD_COMPLETED):
            raise ValueError(
                "GradNormClipper needs an engine that fires IterationEvents.BACKWARD_COMPLETED "
                f"(MONAI SupervisedTrainer), got {type(engine).__name__}."
            )
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def _steps_now(self, engine: Any) -> bool:
        acc = int(getattr(engine, "accumulation_steps", 1) or 1)
        if acc <= 1:
            return True
        epoch_length = engine.state.epoch_length
        if epoch_length is not None:
            local = (engine.state.iteration - 1) % epoch_length
            return (local + 1) % acc == 0 or (local + 1) == epoch_length
        return engine.state.iteration % acc == 0

    def __call__(self, engine: Any) -> None:
        """Unscale (AMP) and clip ``engine.network``'s gradients."""
        if not self._steps_now(engine):
            return
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            engine.scaler.unscale_(engine.optimizer)
        params: Iterable[torch.Tensor] = [p for p in engine.network.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type)
        engine.state.grad_norm = float(norm)
        if not math.isfinite(engine.state.grad_norm):
            it = engine.state.iteration
            self.logger.warning(f"non-finite gradient norm {engine.state.grad_norm} at iteration {it}")
