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
"""Exponential moving average (EMA) of the network weights, evaluated in place of the live weights at validation.

The average is a :class:`torch.optim.swa_utils.AveragedModel` updated after every training iteration. While the
trainer runs, each evaluator epoch sees the averaged weights (and buffers, e.g. batch-norm statistics): they are
copied into the network at the evaluator's ``EPOCH_STARTED`` and the live weights are put back at its
``EPOCH_COMPLETED``, after the evaluator's own handlers (key metric, best-model saver), so the saved best model is
the averaged one. Evaluations after training (a report run on the loaded best model) are left alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch.optim.swa_utils import AveragedModel

if TYPE_CHECKING:
    from ignite.engine import Engine

    from monai_transfer.handlers.checkpoint import HandlerStates

__all__ = ["WeightEMA", "ema_decay_at"]


def ema_decay_at(decay: float, num_updates: int, warmup: bool = True) -> float:
    """Decay used for update number ``num_updates`` (0-based): ``min(decay, (1 + n) / (10 + n))`` with ``warmup``.

    The warm-up (as in TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``) keeps the first updates from
    being dominated by the initial (pretrained, not yet fine-tuned) weights in short runs.
    """
    n = int(num_updates)
    return min(float(decay), (1.0 + n) / (10.0 + n)) if warmup else float(decay)


class WeightEMA:
    """Ignite handler keeping an EMA of ``network`` and evaluating it at validation during training.

    The average itself is PyTorch's ``AveragedModel``. Ignite's ``EMAHandler`` is not used: it averages into a
    separate ``ema_model``, so the bundle's evaluator and best-model saver (which hold ``network``) would see and
    save the live weights, and it has no ``state_dict``, so it cannot join the trainer checkpoint and a resumed run
    would restart the average (``tests/handlers/test_handler_ema.py::
    test_ignite_ema_handler_falls_short_for_the_bundles``).

    Args:
        network: the trained network (the one the trainer and the evaluator share).
        decay: EMA decay in ``(0, 1)``; the averaging horizon is about ``1 / (1 - decay)`` iterations.
        evaluator: the validation evaluator that should see the averaged weights; ``None``: only keep the average
            (:attr:`averaged` holds it).
        warmup: smaller decay for the first updates (:func:`ema_decay_at`).
        handler_states: the trainer checkpoint's :class:`~monai_transfer.handlers.checkpoint.HandlerStates`; the
            average registers itself there (as ``name``), so ``--resume true`` continues the same average instead of
            restarting it from the resumed weights.
        name: its name in ``handler_states``.

    Raises:
        ValueError: ``decay`` outside ``(0, 1)``.

    Example (bundle config, in ``train#handlers``)::

        {"_target_": "monai_transfer.handlers.ema.WeightEMA", "network": "@network", "decay": 0.99,
         "evaluator": "@validate#evaluator", "handler_states": "@train#handler_states"}
    """

    def __init__(
        self,
        network: torch.nn.Module,
        decay: float,
        evaluator: Engine | None = None,
        warmup: bool = True,
        handler_states: HandlerStates | None = None,
        name: str = "ema",
    ):
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"WeightEMA: decay must be in (0, 1), got {decay!r}.")
        self.network = network
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.evaluator = evaluator
        self.averaged = AveragedModel(network, avg_fn=self._avg, use_buffers=True)
        self._training = False
        self._backup: dict[str, torch.Tensor] | None = None
        if handler_states is not None:
            handler_states.add(name, self)

    def state_dict(self) -> dict[str, Any]:
        """The average (weights, buffers and the number of updates) for a trainer checkpoint."""
        return {"averaged": self.averaged.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the average of a checkpoint (:meth:`state_dict`)."""
        self.averaged.load_state_dict(state["averaged"])

    def _avg(self, averaged: torch.Tensor, current: torch.Tensor, num_averaged: Any) -> torch.Tensor:
        if not averaged.is_floating_point():  # e.g. batch-norm num_batches_tracked: follow the live value
            return current
        d = ema_decay_at(self.decay, int(num_averaged), self.warmup)
        return averaged * d + current.to(averaged.dtype) * (1.0 - d)

    def attach(self, engine: Engine) -> None:
        """Update after every iteration of ``engine`` (the trainer); swap weights around the evaluator's epochs."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.COMPLETED, self._stopped)
        engine.add_event_handler(Events.TERMINATE, self._stopped)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.EPOCH_STARTED, self.swap_in)
            self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self.swap_out)

    def _started(self, _: Any = None) -> None:
        self._training = True

    def _stopped(self, _: Any = None) -> None:
        self._training = False

    def update(self, _: Any = None) -> None:
        """Fold the network's current weights into the average."""
        self.averaged.update_parameters(self.network)

    def swap_in(self, _: Any = None) -> None:
        """Copy the averaged weights into the network (only while the trainer runs), keeping the live ones."""
        if not self._training or self._backup is not None:
            return
        self._backup = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
        self.network.load_state_dict(self.averaged.module.state_dict())

    def swap_out(self, _: Any = None) -> None:
        """Put the live weights back after an evaluation that :meth:`swap_in` prepared."""
        if self._backup is None:
            return
        self.network.load_state_dict(self._backup)
        self._backup = None
