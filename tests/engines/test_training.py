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
"""End-to-end training on tiny real images: loss decreases, runs are reproducible, resume equals uninterrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from ignite.engine import Events

from monai_transfer.handlers.checkpoint import find_last_checkpoint
from monai_transfer.utils.io import safe_torch_load
from tests.engines._training import build_run, evaluate_loss, tiny_pneumonia
from tests.utils import REPO_ROOT, requires_shared_data


@pytest.fixture(autouse=True)
def _restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs: max abs diff {(a[k] - b[k]).abs().max().item()}"


@requires_shared_data()
def test_training_decreases_loss(tmp_path):
    data = tiny_pneumonia()
    trainer = build_run(tmp_path, epochs=3, data=data, save_checkpoints=False)
    before = evaluate_loss(trainer.network, data)
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output[0]["loss"]))
    trainer.run()
    after = evaluate_loss(trainer.network, data)
    assert len(losses) == 3 * 6
    assert after < 0.9 * before, (before, after)
    assert trainer.state.grad_norm > 0  # GradNormClipper ran


@requires_shared_data()
def test_same_seed_same_weights(tmp_path):
    a = build_run(tmp_path / "a", epochs=2, save_checkpoints=False)
    a.run()
    b = build_run(tmp_path / "b", epochs=2, save_checkpoints=False)
    b.run()
    _assert_same_weights(a.network.state_dict(), b.network.state_dict())
    c = build_run(tmp_path / "c", epochs=2, seed=1, save_checkpoints=False)
    c.run()
    assert not torch.equal(a.network.fc.weight, c.network.fc.weight)


@requires_shared_data()
def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    full = build_run(tmp_path / "full", epochs=3)
    full.run()

    part = build_run(tmp_path / "part", epochs=3)
    part.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate())
    part.run()
    assert part.state.epoch == 1
    ckpt = find_last_checkpoint(tmp_path / "part" / "checkpoints")
    assert ckpt is not None and ckpt.name == "checkpoint_epoch=1.pt"
    assert set(safe_torch_load(ckpt)) == {"network", "optimizer", "lr_scheduler", "trainer"}

    resumed = build_run(tmp_path / "part", epochs=3, resume=True)
    started_at = []
    resumed.add_event_handler(Events.EPOCH_STARTED, lambda e: started_at.append(e.state.epoch))
    resumed.run()
    assert started_at == [2, 3]
    assert resumed.state.iteration == full.state.iteration == 18
    _assert_same_weights(full.network.state_dict(), resumed.network.state_dict())
    assert resumed.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]


@pytest.mark.slow
@requires_shared_data()
def test_sigkill_mid_epoch_then_resume(tmp_path):
    """A real subprocess SIGKILLs itself mid-epoch 3 (checkpoint of epoch 2 on disk); the resumed run ends with the
    same weights as an uninterrupted run."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [
        sys.executable,
        "-m",
        "tests.engines._training",
        str(out),
        "--epochs",
        "3",
        "--threads",
        str(torch.get_num_threads()),
    ]
    t0 = time.time()
    killed = subprocess.run([*cmd, "--kill-at-iteration", "15"], cwd=REPO_ROOT, env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert not (out / "final.pt").exists()
    ckpt_dir = out / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    assert find_last_checkpoint(ckpt_dir).name == "checkpoint_epoch=2.pt"

    resumed = subprocess.run([*cmd, "--resume"], cwd=REPO_ROOT, env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    print(f"SIGKILL + resume subprocesses took {time.time() - t0:.1f} s")  # about 20 s on 2 busy cores

    full = build_run(tmp_path / "full", epochs=3, save_checkpoints=False)
    full.run()
    _assert_same_weights(full.network.state_dict(), safe_torch_load(out / "final.pt"))
    assert not [p for p in out.rglob("*.tmp")]
