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
"""Gradual unfreezing of a pretrained backbone during training (an Ignite handler)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["GradualUnfreeze"]


class GradualUnfreeze:
    """Unfreeze backbone stages, nearest the head first, at the start of scheduled epochs.

    The network (a :class:`~monai_transfer.networks.nets.Pretrained2DNet`, possibly wrapped in DataParallel/DDP)
    starts with some stages frozen (``fine_tune="linear_probe"`` or ``"freeze_stages"``). The number of stages
    unfrozen at epoch ``e`` (Ignite's 1-based epoch, checked at ``EPOCH_STARTED``) is computed from the epoch alone,
    so resuming a run from a checkpoint restores the same state:

    - ``schedule={3: 1, 5: 3, 8: -1}``: from epoch 3 one stage, from epoch 5 three stages, from epoch 8 all
      (``-1``). Keys may be strings (JSON).
    - ``every_n_epochs=2, stages_per_step=1``: one more stage every 2 epochs (epochs 1-2 none, 3-4 one, ...).

    Optimizer: the simplest setup builds the optimizer over all parameters, e.g.
    ``net.param_groups(lr, include_frozen=True)``: frozen parameters get no gradient and are not updated until
    unfrozen, and optimizer checkpoints stay loadable. Alternatively pass ``optimizer`` and the newly unfrozen
    parameters are added to it as new groups (``lr``, ``layer_decay``, ``head_lr_mult`` as in
    ``Pretrained2DNet.param_groups``); then an LR scheduler created earlier does not know the new groups and an
    optimizer checkpoint saved later does not load into a fresh optimizer.

    Args:
        network: the network (anything with ``freeze_stages(k)``, ``num_frozen_stages`` and ``param_groups``).
        schedule: ``{epoch: number of stages unfrozen from that epoch on}`` (``-1`` = all).
        every_n_epochs: alternative to ``schedule``: unfreeze ``stages_per_step`` more stages every n epochs.
        stages_per_step: stages unfrozen per step with ``every_n_epochs``.
        optimizer: optional optimizer to which newly trainable parameters are added.
        lr: base LR of added groups; default ``optimizer.defaults["lr"]``.
        layer_decay: layer-wise LR decay of added groups.
        head_lr_mult: head LR multiplier (the head is normally already in the optimizer).
        name: logger name; default the class name.

    Raises:
        ValueError: neither or both of ``schedule`` and ``every_n_epochs``, or bad values (named with the value).
        TypeError: ``network`` has no stage-freezing API.

    Example::

        net = Pretrained2DNet(fine_tune="linear_probe")
        GradualUnfreeze(net, schedule={2: 1, 4: -1}).attach(trainer)
    """

    def __init__(
        self,
        network: torch.nn.Module,
        schedule: Mapping[int | str, int] | None = None,
        every_n_epochs: int | None = None,
        stages_per_step: int = 1,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float | None = None,
        layer_decay: float = 1.0,
        head_lr_mult: float = 1.0,
        name: str | None = None,
    ) -> None:
        net = (
            network.module
            if isinstance(network, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel))
            else network
        )
        for attr in ("freeze_stages", "num_frozen_stages", "param_groups"):
            if not hasattr(net, attr):
                raise TypeError(f"network must provide '{attr}' (e.g. Pretrained2DNet), got {type(net).__name__}.")
        if (schedule is None) == (every_n_epochs is None):
            raise ValueError(
                f"give exactly one of schedule and every_n_epochs, got schedule={schedule!r}, "
                f"every_n_epochs={every_n_epochs!r}."
            )
        self.schedule: dict[int, int] = {}
        if schedule is not None:
            for k, v in schedule.items():
                e, n = int(k), int(v)
                if e < 1 or n < -1:
                    raise ValueError(f"schedule entries must be epoch >= 1: stages >= -1, got {k!r}: {v!r}.")
                self.schedule[e] = n
        if every_n_epochs is not None and int(every_n_epochs) < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}.")
        if stages_per_step < 1:
            raise ValueError(f"stages_per_step must be >= 1, got {stages_per_step}.")
        self.network = net
        self.every_n_epochs = None if every_n_epochs is None else int(every_n_epochs)
        self.stages_per_step = int(stages_per_step)
        self.optimizer = optimizer
        self.lr = lr
        self.layer_decay = layer_decay
        self.head_lr_mult = head_lr_mult
        self.initial_frozen = int(net.num_frozen_stages)
        self.logger = logging.getLogger(name or self.__class__.__name__)

    def unfrozen_at(self, epoch: int) -> int:
        """Number of stages (counted from the head) unfrozen during ``epoch`` (1-based)."""
        if self.every_n_epochs is not None:
            return ((epoch - 1) // self.every_n_epochs) * self.stages_per_step
        n = 0
        for e in sorted(self.schedule):
            if e <= epoch:
                n = self.initial_frozen if self.schedule[e] == -1 else self.schedule[e]
        return n

    def attach(self, engine: Engine) -> None:
        """Run at every ``EPOCH_STARTED`` of ``engine`` (the trainer)."""
        if not engine.has_event_handler(self, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.apply(int(engine.state.epoch))

    def apply(self, epoch: int) -> int:
        """Set the frozen stages for ``epoch``; returns the number of frozen stages."""
        target = max(0, self.initial_frozen - self.unfrozen_at(epoch))
        if target < self.network.num_frozen_stages:
            self.network.freeze_stages(target)
            added = self._extend_optimizer()
            self.logger.info(f"epoch {epoch}: {target} backbone stages frozen; {added} parameters added to optimizer.")
        return int(self.network.num_frozen_stages)

    def _extend_optimizer(self) -> int:
        if self.optimizer is None:
            return 0
        present = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        lr = self.lr if self.lr is not None else float(self.optimizer.defaults["lr"])
        added = 0
        for group in self.network.param_groups(lr, layer_decay=self.layer_decay, head_lr_mult=self.head_lr_mult):
            new = [p for p in group["params"] if id(p) not in present]
            if new:
                g: dict[str, Any] = {**group, "params": new}
                self.optimizer.add_param_group(g)
                added += sum(p.numel() for p in new)
        return added
