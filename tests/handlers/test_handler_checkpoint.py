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

import pickle

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader
from torch import nn

from monai_transfer.handlers.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    HandlerStates,
    LastCheckpointResume,
    find_last_checkpoint,
)
from monai_transfer.utils.io import safe_torch_load
from tests.utils import MaliciousPickle


def _engine(net, epoch_length=4):
    """Each iteration adds 1 to the (zero-initialised) weights: weights == iterations run."""
    with torch.no_grad():
        net.weight.zero_()

    def step(engine, batch):
        with torch.no_grad():
            net.weight.add_(1.0)

    engine = Engine(step)
    engine.state.epoch_length = epoch_length
    return engine


def test_saver_writes_monai_names_atomically(tmp_path):
    net = nn.Linear(2, 1, bias=False)
    engine = _engine(net)
    save_dict = {"network": net, "trainer": engine}
    saver = AtomicCheckpointSaver(str(tmp_path), save_dict, save_interval=1, n_saved=2, save_final=True)
    assert isinstance(saver._interval_checkpoint.save_handler, AtomicDiskSaver)
    assert isinstance(saver._final_checkpoint.save_handler, AtomicDiskSaver)
    saver.attach(engine)
    engine.run(range(4), max_epochs=3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt", "checkpoint_final_iteration=12.pt"]
    ckpt = safe_torch_load(tmp_path / "checkpoint_epoch=2.pt")
    assert ckpt["trainer"]["iteration"] == 8 and torch.equal(ckpt["network"]["weight"], torch.full((1, 2), 8.0))
    assert find_last_checkpoint(tmp_path).name in ("checkpoint_epoch=3.pt", "checkpoint_final_iteration=12.pt")


def test_saver_failure_keeps_previous_checkpoint(tmp_path):
    net = nn.Linear(2, 1, bias=False)
    engine = _engine(net)
    unpicklable = {"w": torch.ones(1)}

    class Flaky:
        def state_dict(self):
            return unpicklable

        def load_state_dict(self, sd):
            pass

    saver = AtomicCheckpointSaver(str(tmp_path), {"network": net, "extra": Flaky()}, save_interval=1, n_saved=1)
    saver.attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: unpicklable.update(bad=lambda: 0))
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        engine.run(range(4), max_epochs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=1.pt"]
    assert torch.equal(
        safe_torch_load(tmp_path / "checkpoint_epoch=1.pt")["network"]["weight"], torch.full((1, 2), 4.0)
    )


def _save(path, iteration, epoch_length=4, **extra):
    torch.save(
        {
            "network": {"w": torch.ones(1)},
            "trainer": {"iteration": iteration, "epoch_length": epoch_length, "max_epochs": 5},
            **extra,
        },
        path,
    )


def test_find_last_checkpoint(tmp_path):
    assert find_last_checkpoint(tmp_path / "missing") is None
    assert find_last_checkpoint(tmp_path) is None
    _save(tmp_path / "checkpoint_epoch=2.pt", 8)
    _save(tmp_path / "checkpoint_epoch=10.pt", 40)
    _save(tmp_path / "checkpoint_final_iteration=42.pt", 42)  # written on an exception, mid-epoch
    (tmp_path / ".checkpoint_epoch=11.pt.abcd.tmp").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("x")
    assert find_last_checkpoint(tmp_path).name == "checkpoint_epoch=10.pt"
    assert find_last_checkpoint(tmp_path, epoch_boundary_only=False).name == "checkpoint_final_iteration=42.pt"
    marker = tmp_path / "pwned"
    _save(tmp_path / "checkpoint_epoch=11.pt", 44, payload=MaliciousPickle(marker))
    with pytest.warns(UserWarning, match="checkpoint_epoch=11.pt"):
        assert find_last_checkpoint(tmp_path).name == "checkpoint_epoch=10.pt"
    assert not marker.exists()


def test_monai_checkpoint_loader_refuses_malicious_pickle(tmp_path):
    """MONAI's CheckpointLoader (reused by LastCheckpointResume) loads with weights_only=True."""
    marker = tmp_path / "pwned"
    net = nn.Linear(2, 1)
    torch.save({"network": net.state_dict(), "x": MaliciousPickle(marker)}, tmp_path / "evil.pt")
    engine = _engine(net)
    CheckpointLoader(str(tmp_path / "evil.pt"), {"network": net}).attach(engine)
    with pytest.raises(pickle.UnpicklingError):
        engine.run(range(4), max_epochs=1)
    assert not marker.exists()


def test_last_checkpoint_resume(tmp_path):
    src = nn.Linear(2, 1, bias=False)
    engine = _engine(src)
    AtomicCheckpointSaver(str(tmp_path), {"network": src, "trainer": engine}, save_interval=1).attach(engine)
    engine.run(range(4), max_epochs=2)

    # disabled, or no checkpoint: fresh start
    net = nn.Linear(2, 1, bias=False)
    fresh = _engine(net)
    off = LastCheckpointResume(tmp_path, {"network": net, "trainer": fresh}, enabled=False)
    off.attach(fresh)
    fresh.run(range(4), max_epochs=1)
    assert off.loaded_path is None and fresh.state.iteration == 4 and torch.equal(net.weight, torch.full((1, 2), 4.0))
    empty = LastCheckpointResume(tmp_path / "none", {"network": net})
    e2 = _engine(net)
    empty.attach(e2)
    e2.run(range(4), max_epochs=1)
    assert empty.loaded_path is None

    net = nn.Linear(2, 1, bias=False)
    resumed = _engine(net)
    handler = LastCheckpointResume(tmp_path, {"network": net, "trainer": resumed})
    handler.attach(resumed)
    epochs = []
    resumed.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    resumed.run(range(4), max_epochs=3)
    assert handler.loaded_path.name == "checkpoint_epoch=2.pt"
    assert epochs == [3] and resumed.state.iteration == 12
    assert torch.equal(net.weight, torch.full((1, 2), 12.0))
    with pytest.raises(ValueError, match="load_dict"):
        LastCheckpointResume(tmp_path, {})


def _run_with_validation(folder, scores, resume=False, handler_states=True, kill_after=None, max_epochs=6):
    """A trainer (weights == iterations run) validated every epoch by an evaluator whose key metric ``auc`` is
    ``scores[epoch - 1]``; the best-model saver writes ``model.pt``, early stopping has patience 2, and the trainer
    checkpoint holds the handlers' states (or not, ``handler_states=False``: the behaviour before the fix)."""
    from monai.handlers import EarlyStopHandler, stopping_fn_from_metric

    net = nn.Linear(2, 1, bias=False)
    trainer = _engine(net)
    evaluator = Engine(lambda e, b: None)
    evaluator.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(auc=scores[trainer.state.epoch - 1])
    )
    best = AtomicCheckpointSaver(
        str(folder), {"model": net}, save_key_metric=True, key_metric_name="auc", key_metric_filename="model.pt"
    )
    best.attach(evaluator)
    early_stop = EarlyStopHandler(patience=2, score_function=stopping_fn_from_metric("auc"), trainer=trainer)
    early_stop.attach(evaluator)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0], max_epochs=1))
    save_dict = {"network": net, "trainer": trainer}
    if handler_states:
        save_dict["handler_states"] = HandlerStates(best_model=best, early_stop=early_stop, evaluator=evaluator)
    resume_handler = LastCheckpointResume(folder / "last", save_dict, enabled=resume)
    resume_handler.attach(trainer)
    AtomicCheckpointSaver(str(folder / "last"), save_dict, save_interval=1, n_saved=1).attach(trainer)
    if kill_after:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=kill_after), lambda e: e.terminate())
    trainer.run(range(4), max_epochs=max_epochs)
    return trainer, float(safe_torch_load(folder / "model.pt")["weight"][0, 0])


def test_resume_keeps_best_model_and_early_stopping_state(tmp_path):
    """Best epoch 2 (0.9), then worse epochs: the uninterrupted run stops at epoch 4 (patience 2) with epoch 2's
    weights in model.pt; a run killed after epoch 3 and resumed must end the same."""
    scores = [0.6, 0.9, 0.7, 0.8, 0.85, 0.95]
    full, full_best = _run_with_validation(tmp_path / "full", scores)
    assert full.state.epoch == 4 and full_best == 8.0  # epoch 2's weights (4 iterations per epoch)

    part, _ = _run_with_validation(tmp_path / "part", scores, kill_after=3)
    assert part.state.epoch == 3
    ckpt = safe_torch_load(tmp_path / "part" / "last" / "checkpoint_epoch=3.pt")
    states = ckpt["handler_states"]
    assert states["best_model"] == {"_saved": [(0.9, "model_key_metric=0.9000.pt")]}  # Ignite's name; file: model.pt
    assert states["early_stop"]["counter"] == 1 and states["early_stop"]["best_score"] == 0.9
    resumed, resumed_best = _run_with_validation(tmp_path / "part", scores, resume=True)
    assert (resumed.state.epoch, resumed_best) == (full.state.epoch, full_best)

    # resuming the run that stopped early (e.g. killed while writing its report) trains no further epoch
    again, again_best = _run_with_validation(tmp_path / "full", scores, resume=True)
    assert (again.state.epoch, again_best) == (4, 8.0)

    # the behaviour before HandlerStates: a worse epoch overwrites model.pt and early stopping starts over
    _run_with_validation(tmp_path / "old", scores, handler_states=False, kill_after=3)
    old, old_best = _run_with_validation(tmp_path / "old", scores, handler_states=False, resume=True)
    assert old.state.epoch == 6 and old_best == 24.0


def test_handler_states_round_trip_and_edge_cases(tmp_path):
    from monai.engines import SupervisedEvaluator
    from monai.handlers import EarlyStopHandler

    net = nn.Linear(2, 1, bias=False)
    evaluator = SupervisedEvaluator(device="cpu", val_data_loader=[], network=net)
    evaluator.state.best_metric, evaluator.state.best_metric_epoch = torch.tensor(0.75), 3
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_filename="model.pt")
    saver._key_metric_checkpoint._saved.append(saver._key_metric_checkpoint.Item(0.75, "model.pt"))
    off = EarlyStopHandler(patience=1, score_function=lambda e: 0.0)  # never set up: early stopping switched off
    states = HandlerStates(best_model=saver, early_stop=off, evaluator=evaluator, disabled=None)
    sd = states.state_dict()
    assert sd == {
        "best_model": {"_saved": [(0.75, "model.pt")]},
        "evaluator": {"best_metric": 0.75, "best_metric_epoch": 3},
    }
    torch.save(sd, tmp_path / "states.pt")
    sd = safe_torch_load(tmp_path / "states.pt")  # plain values: readable with weights_only=True

    # the recorded best model file is gone: warn, forget the best score so that the next model is saved
    fresh_saver = AtomicCheckpointSaver(
        str(tmp_path), {"model": net}, save_key_metric=True, key_metric_filename="model.pt"
    )
    fresh_eval = SupervisedEvaluator(device="cpu", val_data_loader=[], network=net)
    with pytest.warns(UserWarning, match="model.pt"):
        HandlerStates(best_model=fresh_saver, evaluator=fresh_eval).load_state_dict(sd)
    assert fresh_saver._key_metric_checkpoint._saved == []
    assert (fresh_eval.state.best_metric, fresh_eval.state.best_metric_epoch) == (0.75, 3)
    (tmp_path / "model.pt").write_bytes(b"x")
    HandlerStates(best_model=fresh_saver).load_state_dict(sd)
    assert [tuple(x) for x in fresh_saver._key_metric_checkpoint._saved] == [(0.75, "model.pt")]
    # early stopping switched on now, but the checkpoint has no state for it: warn and start afresh
    on = EarlyStopHandler(patience=1, score_function=lambda e: 0.0, trainer=Engine(lambda e, b: None))
    with pytest.warns(UserWarning, match="no state for 'early_stop'"):
        HandlerStates(early_stop=on).load_state_dict(sd)
    assert on._handler.counter == 0


def test_resume_from_checkpoint_without_handler_states(tmp_path):
    """A checkpoint written before HandlerStates existed still resumes (with a warning)."""
    src = nn.Linear(2, 1, bias=False)
    engine = _engine(src)
    AtomicCheckpointSaver(str(tmp_path), {"network": src, "trainer": engine}, save_interval=1).attach(engine)
    engine.run(range(4), max_epochs=1)
    net = nn.Linear(2, 1, bias=False)
    resumed = _engine(net)
    load_dict = {"network": net, "trainer": resumed, "handler_states": HandlerStates(evaluator=Engine(lambda e, b: 0))}
    LastCheckpointResume(tmp_path, load_dict).attach(resumed)
    with pytest.warns(UserWarning, match="holds no \\['handler_states'\\]"):
        resumed.run(range(4), max_epochs=2)
    assert resumed.state.iteration == 8 and torch.equal(net.weight, torch.full((1, 2), 8.0))


def test_ignite_atomic_disk_saver_falls_short_of_keeping_a_checkpoint(tmp_path):
    """Why :class:`AtomicDiskSaver` adds to Ignite's ``DiskSaver(atomic=True)`` (issue #27 reuse): Ignite's
    ``Checkpoint`` deletes the previous file before it writes the next one, so with ``n_saved=1`` a save that fails
    leaves no checkpoint at all to resume from; ours keeps the previous one (same scenario:
    ``test_saver_failure_keeps_previous_checkpoint``)."""
    from ignite.handlers import Checkpoint, DiskSaver

    net = nn.Linear(2, 1, bias=False)
    engine = _engine(net)
    unpicklable = {"w": torch.ones(1)}

    class Flaky:
        def state_dict(self):
            return unpicklable

        def load_state_dict(self, sd):
            pass

    saver = DiskSaver(str(tmp_path), atomic=True, require_empty=False)
    engine.add_event_handler(Events.EPOCH_COMPLETED, Checkpoint({"network": net, "extra": Flaky()}, saver, n_saved=1))
    engine.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: unpicklable.update(bad=lambda: 0))
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        engine.run(range(4), max_epochs=2)
    assert not list(tmp_path.glob("*.pt"))  # the epoch-1 checkpoint was deleted before the failed save
