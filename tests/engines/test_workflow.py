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
"""Workflow helpers that bundle configs call (``monai_transfer.engines.workflow``)."""

from __future__ import annotations

import pytest
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

from monai_transfer.engines.workflow import detach_handler


def test_detach_handler_removes_only_an_attached_handler():
    engine = Engine(lambda e, b: None)
    calls = []

    def handler(e):
        calls.append(e.state.epoch)

    assert detach_handler(engine, handler) is False  # never attached: left alone, no error
    engine.add_event_handler(Events.EPOCH_COMPLETED, handler)
    engine.run([0], max_epochs=1)
    assert calls == [1]
    assert detach_handler(engine, handler, Events.ITERATION_COMPLETED) is False  # other event: kept
    assert detach_handler(engine, handler) is True
    assert not engine.has_event_handler(handler, Events.EPOCH_COMPLETED)
    engine.run([0], max_epochs=2)
    assert calls == [1]


def test_detach_handler_as_a_config_component():
    """A ``run`` step written as a ``_target_`` component calls the helper with its keys as arguments."""
    engine = Engine(lambda e, b: None)

    def handler(e):
        pass

    engine.add_event_handler(Events.EPOCH_COMPLETED, handler)
    parser = ConfigParser(
        {"engine": "$None", "run": [{"_target_": "monai_transfer.engines.workflow.detach_handler",
                                     "engine": "@engine", "handler": "@handler"}]}
    )  # fmt: skip
    parser["engine"], parser["handler"] = engine, handler
    assert parser.get_parsed_content("run#0") is True
    assert not engine.has_event_handler(handler, Events.EPOCH_COMPLETED)


def _tiny_train_and_validate(tmp_path, epochs: int = 3):
    """A MONAI trainer/evaluator pair as the bundles wire them: ValidationHandler every epoch, TensorBoardStatsHandler
    on the evaluator (epoch-level ``val_*`` scalars), and a key metric whose best epoch is recorded."""
    import torch
    from monai.engines import SupervisedEvaluator, SupervisedTrainer
    from monai.handlers import TensorBoardStatsHandler, ValidationHandler, from_engine
    from monai.transforms import Activationsd, Compose

    from monai_transfer.handlers.metric_handlers import AUCHandler

    torch.manual_seed(0)
    x = torch.randn(16, 4)
    y = (x[:, 0] > 0).long()
    data = [{"image": x[i : i + 8], "label": y[i : i + 8]} for i in (0, 8)]
    net = torch.nn.Linear(4, 2)
    evaluator = SupervisedEvaluator(
        device="cpu", val_data_loader=data, network=net,
        postprocessing=Compose([Activationsd(keys="pred", softmax=True)]),
        key_val_metric={"val_auc": AUCHandler(output_transform=from_engine(["pred", "label"]))},
        val_handlers=[TensorBoardStatsHandler(log_dir=str(tmp_path), iteration_log=False)],
    )  # fmt: skip
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=epochs, train_data_loader=data, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.5), loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=[ValidationHandler(validator=evaluator, epoch_level=True, interval=1)],
    )  # fmt: skip
    trainer.run()
    return trainer, evaluator


def test_final_evaluation_keeps_the_validation_curves_monotonic(tmp_path):
    """After 3 epochs, the final re-evaluation writes no ``val_auc`` at step 1 (the curve would jump back): its
    scalars go to ``best_model/val_auc`` at the best epoch; a plain ``evaluator.run()`` would rewind the curve."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from monai_transfer.engines.workflow import run_final_evaluation

    trainer, evaluator = _tiny_train_and_validate(tmp_path / "tb")
    best_epoch = evaluator.state.best_metric_epoch
    assert 1 <= best_epoch <= 3
    state = run_final_evaluation(evaluator)
    assert "val_auc" in state.metrics
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("val_auc")] == [1, 2, 3]
    (best,) = acc.Scalars("best_model/val_auc")
    assert best.step == best_epoch and best.value == pytest.approx(state.metrics["val_auc"], abs=1e-6)
    # the handler is back to its default writer: the old behaviour, for comparison, rewinds the curve
    evaluator.run()
    acc.Reload()
    assert [e.step for e in acc.Scalars("val_auc")] == [1, 2, 3, 1]
