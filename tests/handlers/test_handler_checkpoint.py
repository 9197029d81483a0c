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

import os
import pickle

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader
from torch import nn

from monai_transfer.handlers.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    LastCheckpointResume,
    find_last_checkpoint,
)
from monai_transfer.utils.io import safe_torch_load


class _Malicious:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


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
    _save(tmp_path / "checkpoint_epoch=11.pt", 44, payload=_Malicious(marker))
    with pytest.warns(UserWarning, match="checkpoint_epoch=11.pt"):
        assert find_last_checkpoint(tmp_path).name == "checkpoint_epoch=10.pt"
    assert not marker.exists()


def test_monai_checkpoint_loader_refuses_malicious_pickle(tmp_path):
    """MONAI's CheckpointLoader (reused by LastCheckpointResume) loads with weights_only=True."""
    marker = tmp_path / "pwned"
    net = nn.Linear(2, 1)
    torch.save({"network": net.state_dict(), "x": _Malicious(marker)}, tmp_path / "evil.pt")
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
