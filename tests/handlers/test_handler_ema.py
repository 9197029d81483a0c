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
from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from monai_transfer.handlers.ema import WeightEMA, ema_decay_at


def test_ema_decay_warmup_and_validation():
    assert ema_decay_at(0.99, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.99, 10) == pytest.approx(11 / 20)
    assert ema_decay_at(0.99, 10_000) == 0.99
    assert ema_decay_at(0.99, 0, warmup=False) == 0.99
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="decay"):
            WeightEMA(torch.nn.Linear(2, 1), decay=bad)


def test_ema_tracks_weights_and_is_evaluated_only_during_training():
    """Each trainer iteration sets the weight to the iteration number; the evaluator (run after every trainer epoch)
    must see the hand-computed EMA, the live weight must come back after it, and an evaluation after training
    (a report run) must see the live weight."""
    net = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    net[0].weight.data.fill_(0.0)
    seen: list[float] = []
    evaluator = Engine(lambda e, b: seen.append(net[0].weight.item()))
    decay = 0.5

    def step(engine, batch):
        net[0].weight.data.fill_(float(engine.state.iteration))
        net.train()
        net(torch.randn(4, 1))  # moves the batch-norm running statistics (averaged buffers)

    trainer = Engine(step)
    ema = WeightEMA(net, decay=decay, evaluator=evaluator, warmup=False)
    ema.attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run([0]))
    live_after_eval: list[float] = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: live_after_eval.append(float(net[0].weight)))
    trainer.run([0, 1, 2], max_epochs=2)

    expected, avg = [], None
    for it in range(1, 7):
        avg = float(it) if avg is None else decay * avg + (1 - decay) * it  # first update copies the weights
        if it % 3 == 0:
            expected.append(avg)
    assert seen == pytest.approx(expected)
    assert live_after_eval == [3.0, 6.0]  # the live weights are back after each validation
    assert float(ema.averaged.module[1].running_mean) != 0.0  # buffers are averaged too
    evaluator.run([0])  # after training: no swap
    assert seen[-1] == 6.0 and float(net[0].weight) == 6.0


def test_ema_without_evaluator_only_keeps_the_average():
    net = torch.nn.Linear(1, 1, bias=False)
    net.weight.data.fill_(1.0)
    trainer = Engine(lambda e, b: net.weight.data.fill_(3.0))
    ema = WeightEMA(net, decay=0.9, warmup=False)
    ema.attach(trainer)
    trainer.run([0, 1], max_epochs=1)
    assert float(net.weight) == 3.0
    assert float(ema.averaged.module.weight) == pytest.approx(3.0)  # first update copies, second averages 3 and 3


def test_ema_state_travels_in_handler_states():
    """Registered in the trainer checkpoint's HandlerStates, the average (and its update count, which drives the
    warm-up decay) is saved and restored: resuming continues the same average."""
    from monai_transfer.handlers.checkpoint import HandlerStates

    def run(ema, values):
        trainer = Engine(lambda e, b: net.weight.data.fill_(values[e.state.iteration - 1]))
        ema.attach(trainer)
        trainer.run(list(range(len(values))), max_epochs=1)

    net = torch.nn.Linear(1, 1, bias=False)
    states = HandlerStates()
    uninterrupted = WeightEMA(net, decay=0.9, handler_states=states)
    assert states.handlers == {"ema": uninterrupted}
    run(uninterrupted, [1.0, 2.0, 3.0, 4.0])

    first = WeightEMA(net, decay=0.9, handler_states=(saved := HandlerStates()))
    run(first, [1.0, 2.0])
    checkpoint = saved.state_dict()
    resumed = WeightEMA(net, decay=0.9, handler_states=(restored := HandlerStates()))
    restored.load_state_dict(checkpoint)
    run(resumed, [3.0, 4.0])
    assert int(resumed.averaged.n_averaged) == 4
    assert float(resumed.averaged.module.weight) == float(uninterrupted.averaged.module.weight)
    with pytest.raises(ValueError, match="already registered"):
        WeightEMA(net, decay=0.9, handler_states=states)


def test_exported_from_handlers_package():
    import monai_transfer.handlers as handlers

    assert handlers.WeightEMA is WeightEMA and handlers.ema_decay_at is ema_decay_at
    assert {"WeightEMA", "ema_decay_at"} <= set(handlers.__all__)


def test_ignite_ema_handler_falls_short_for_the_bundles(tmp_path):
    """Why :class:`WeightEMA` is kept (issue #27 reuse): Ignite's ``EMAHandler`` averages into a separate copy
    (``ema_model``), so the bundle's evaluator and best-model saver, which hold the trained network, see and save
    the live weights; and it has no ``state_dict``, so it cannot go into the trainer checkpoint and a resumed run
    would restart the average. ``WeightEMA`` evaluates the average through the shared network and is checkpointed."""
    from ignite.handlers import Checkpoint, EMAHandler

    def run(make_ema):
        net = torch.nn.Linear(1, 1, bias=False)
        net.weight.data.fill_(0.0)
        seen: list[float] = []
        evaluator = Engine(lambda e, b: seen.append(net.weight.item()))
        trainer = Engine(lambda e, b: net.weight.data.fill_(float(e.state.iteration)))
        ema = make_ema(net, evaluator)
        ema.attach(trainer)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0]))
        trainer.run([0] * 4, max_epochs=1)
        return seen[0], ema

    live, ignite_ema = run(lambda net, ev: EMAHandler(net, momentum=0.5))
    assert live == 4.0  # the evaluator saw the live weight ...
    assert ignite_ema.ema_model.weight.item() != 4.0  # ... not the average
    with pytest.raises(TypeError, match="state_dict"):
        Checkpoint({"ema": ignite_ema}, save_handler=str(tmp_path))

    averaged, ours = run(lambda net, ev: WeightEMA(net, decay=0.5, evaluator=ev, warmup=False))
    assert averaged == pytest.approx(ours.averaged.module.weight.item()) and averaged != 4.0
    Checkpoint({"ema": ours}, save_handler=str(tmp_path))  # has state_dict/load_state_dict
