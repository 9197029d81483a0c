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
"""The logging handlers both bundles attach to their trainer and evaluator, as one handler each.

:class:`TrainingLoggers` is Ignite's ``ProgressBar``, the epoch loss on the console (MONAI ``StatsHandler``) and in
TensorBoard (``TensorBoardStatsHandler``) and the learning rates and input images of
:class:`~monai_transfer.handlers.tensorboard.TensorBoardTrainingExtras`; :class:`ValidationLoggers` is the
evaluator's metrics on the console and in TensorBoard. Each is one entry of a config's handler list, so a torchrun
config switches all of them off on the other ranks with one ``"_disabled_": "$not @is_main_rank"``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from monai.handlers import StatsHandler, TensorBoardStatsHandler, from_engine
from monai.utils import IgniteInfo, min_version, optional_import

from monai_transfer.handlers.tensorboard import TensorBoardTrainingExtras, log_folder_writer

ProgressBar, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "ProgressBar")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["TrainingLoggers", "ValidationLoggers"]


class _HandlerGroup:
    """Handlers attached together, in order."""

    handlers: list[Any]

    def attach(self, engine: Engine) -> None:
        """Attach every handler to ``engine``, in the order of :attr:`handlers`."""
        for handler in self.handlers:
            handler.attach(engine)


class TrainingLoggers(_HandlerGroup):
    """What a trainer logs: a progress bar, the epoch loss (console and TensorBoard), learning rates and images.

    Attached in this order: ``ignite.handlers.ProgressBar(persist=True)``, ``monai.handlers.StatsHandler`` and
    ``monai.handlers.TensorBoardStatsHandler`` of ``loss`` under ``tag_name`` (per epoch on the console),
    :class:`~monai_transfer.handlers.tensorboard.TensorBoardTrainingExtras`.

    The TensorBoard handlers share one writer (:func:`~monai_transfer.handlers.tensorboard.log_folder_writer`), whose
    failed writes name ``log_dir``.

    Args:
        log_dir: TensorBoard folder.
        optimizer: the optimiser whose learning rates are logged (default: the trainer's).
        tag_name: tag of the loss.
        progress: show the progress bar.

    Example::

        {"_target_": "monai_transfer.handlers.loggers.TrainingLoggers", "log_dir": "@log_dir",
         "optimizer": "@train#optimizer", "_disabled_": "$not @is_main_rank"}
    """

    def __init__(
        self, log_dir: str | os.PathLike, optimizer: Any = None, tag_name: str = "train_loss", progress: bool = True
    ) -> None:
        loss = from_engine(["loss"], first=True)
        writer = log_folder_writer(log_dir)  # one event file; a failed write (e.g. a full disk) names the folder
        self.handlers = [ProgressBar(persist=True)] if progress else []
        self.handlers += [
            StatsHandler(tag_name=tag_name, iteration_log=False, output_transform=loss),
            TensorBoardStatsHandler(summary_writer=writer, tag_name=tag_name, output_transform=loss),
            TensorBoardTrainingExtras(summary_writer=writer, optimizer=optimizer),
        ]


class ValidationLoggers(_HandlerGroup):
    """What an evaluator logs: its metrics per epoch on the console and in TensorBoard.

    ``monai.handlers.StatsHandler`` and ``monai.handlers.TensorBoardStatsHandler``, both without per-iteration logs.

    Args:
        log_dir: TensorBoard folder.

    Example::

        {"_target_": "monai_transfer.handlers.loggers.ValidationLoggers", "log_dir": "@log_dir",
         "_disabled_": "$not @is_main_rank"}
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.handlers = [
            StatsHandler(iteration_log=False),
            TensorBoardStatsHandler(summary_writer=log_folder_writer(log_dir), iteration_log=False),
        ]
