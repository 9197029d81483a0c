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
"""``monai_transfer.handlers.loggers``: the bundles' logging handlers, one config entry each."""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from monai.bundle import ConfigParser
from monai.handlers import StatsHandler, TensorBoardStatsHandler
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from monai_transfer.handlers.loggers import TrainingLoggers, ValidationLoggers
from monai_transfer.handlers.tensorboard import TensorBoardTrainingExtras


def test_training_loggers_attach_the_four_handlers_in_order_and_log_the_loss(tmp_path):
    net = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    losses = iter([0.9, 0.7, 0.5, 0.4])
    engine = Engine(lambda e, b: [{"loss": next(losses)}])
    loggers = TrainingLoggers(log_dir=tmp_path, optimizer=opt)
    assert [type(h) for h in loggers.handlers] == [ProgressBar, StatsHandler, TensorBoardStatsHandler,
                                                   TensorBoardTrainingExtras]  # fmt: skip
    loggers.attach(engine)
    engine.run([{"image": torch.rand(2, 1, 8, 8)}] * 2, max_epochs=2)
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    assert [round(e.value, 4) for e in acc.Scalars("train_loss")] == [0.9, 0.7, 0.5, 0.4]  # per iteration
    assert [e.step for e in acc.Scalars("lr/group_0")] == [1, 2, 3, 4] and acc.Tags()["images"]
    assert not any(isinstance(h, ProgressBar) for h in TrainingLoggers(tmp_path, progress=False).handlers)


def test_validation_loggers_log_the_metrics_per_epoch(tmp_path):
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metric(e):
        e.state.metrics["val_auc"] = 0.5 + 0.1 * e.state.epoch

    ValidationLoggers(tmp_path).attach(engine)
    engine.run([0, 1], max_epochs=2)
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("val_auc")] == [(1, 0.6), (2, 0.7)]


def test_disabled_as_one_config_entry(tmp_path):
    """A torchrun config switches the whole group off on the other ranks with one ``_disabled_``."""
    entry = {"_target_": "monai_transfer.handlers.loggers.TrainingLoggers", "log_dir": str(tmp_path)}
    parser = ConfigParser({"main": False, "handlers": [{**entry, "_disabled_": "$not @main"}, entry]})
    handlers = parser.get_parsed_content("handlers")
    assert len(handlers) == 1 and isinstance(handlers[0], TrainingLoggers)
