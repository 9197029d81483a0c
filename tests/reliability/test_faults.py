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
"""Faults: an unwritable bundle output folder fails before training; a crash while writing a report keeps the old one;
a full disk while writing a checkpoint, ``model.pt``, ``threshold.json`` or a report names the file.

SIGKILL + resume, atomic checkpoints and safe loading are tested in tests/engines/test_training.py,
tests/handlers/test_handler_checkpoint.py, tests/test_utils_io.py and tests/networks/backbones/test_weights.py.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_transfer.reports.writer import write_classification_report
from tests.utils import REPO_ROOT

__all__: list[str] = []

CONFIGS = REPO_ROOT / "bundles" / "xray" / "configs"


def test_bundle_unwritable_output_dir_fails_in_initialize(tmp_path):
    from monai.bundle import ConfigWorkflow

    blocker = tmp_path / "a_file"
    blocker.write_text("a regular file where a folder is needed")
    out = blocker / "run"
    wf = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        workflow_type="train",
        output_dir=str(out),
        epochs=1,
        max_items=8,
        device="cpu",
    )
    # MONAI wraps expression failures ("Failed to evaluate ConfigExpression ...start_run..."; start_run checks the
    # folder first); the cause, printed with it in the traceback, is our PermissionError naming the folder
    with pytest.raises(Exception) as exc:  # noqa: PT011
        wf.initialize()
    assert "start_run" in str(exc.value)
    causes, e = [], exc.value
    while e is not None:
        causes.append(e)
        e = e.__cause__ or e.__context__
    perm = [c for c in causes if isinstance(c, PermissionError)]
    assert perm and str(out) in str(perm[0]) and "not writable" in str(perm[0]), causes
    assert blocker.read_text().startswith("a regular file")  # nothing written, no training started


def test_crash_while_writing_report_keeps_previous_metrics(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 10)
    p = np.clip(y * 0.6 + rng.random(20) * 0.4, 0, 1)
    written = write_classification_report(tmp_path, y, p, n_bootstrap=0, plots=False)
    before = written["metrics"].read_bytes()
    assert json.loads(before)["n_samples"] == 20

    import monai_transfer.utils.io as io_mod

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io_mod.os, "fsync", disk_full)  # the temporary file is written, then the disk "fills up"
    with pytest.raises(OSError, match="No space left"):
        write_classification_report(tmp_path, y[:10], p[:10], n_bootstrap=0, plots=False)
    monkeypatch.undo()
    assert written["metrics"].read_bytes() == before  # the old report is intact, not truncated
    assert json.loads(written["metrics"].read_text())["n_samples"] == 20
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # and no temporary file is left behind


class _FullDisk:
    """A file object over a real one whose ``write`` fails with ``ENOSPC`` once ``room`` bytes are written."""

    def __init__(self, f, room: int) -> None:
        self._f, self._room = f, room

    def write(self, b) -> int:
        n = memoryview(b).nbytes
        if n > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= n
        return self._f.write(b)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def _fill_disk(monkeypatch, room: int = 100, only: str = "") -> None:
    """Writes through ``monai_transfer.utils.io`` to temporary files of names starting with ``.<only>`` fail with
    ENOSPC after ``room`` bytes (the temporary file's name is read from ``/proc/self/fd``)."""
    import monai_transfer.utils.io as io_mod

    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        return _FullDisk(f, room) if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{only}") else f

    monkeypatch.setattr(io_mod.os, "fdopen", fdopen)


def _disk_full_error(exc: BaseException):
    from monai_transfer.utils.io import DiskFullError

    e, chain = exc, []
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    found = [c for c in chain if isinstance(c, DiskFullError)]
    assert found, f"no DiskFullError in {chain}"
    return found[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_disk_full_names_the_file_for_every_writer(tmp_path, monkeypatch):
    """torch.save (its zip writer hides the OSError behind "unexpected pos"), JSON, a checkpoint saved by the
    trainer's saver and a report: each ends with DiskFullError naming the file; the old file stays, no .tmp left."""
    from ignite.engine import Engine
    from torch import nn

    from monai_transfer.handlers.checkpoint import AtomicCheckpointSaver
    from monai_transfer.utils.io import DiskFullError, atomic_torch_save, atomic_write_json

    model_pt, thr = tmp_path / "model.pt", tmp_path / "threshold.json"
    atomic_torch_save({"w": torch.zeros(3)}, model_pt)
    atomic_write_json(thr, {"threshold": 0.5})
    before = {p: p.read_bytes() for p in (model_pt, thr)}
    _fill_disk(monkeypatch)
    with pytest.raises(DiskFullError) as exc:
        atomic_torch_save({"w": torch.zeros(10_000)}, model_pt)
    assert exc.value.errno == errno.ENOSPC and isinstance(exc.value, OSError)
    assert str(model_pt) in str(exc.value) and "disk full" in str(exc.value) and "MiB free" in str(exc.value)
    assert isinstance(exc.value.__cause__, RuntimeError)  # what torch.save raised
    with pytest.raises(DiskFullError, match=f"No space left on device \\(disk full\\) while writing {thr}"):
        atomic_write_json(thr, {"threshold": 0.25, "pad": "x" * 500})

    net = nn.Linear(100, 10)
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(str(tmp_path / "last"), {"network": net, "trainer": engine}, save_interval=1).attach(engine)
    with pytest.raises(DiskFullError, match="checkpoint_epoch=1.pt"):
        engine.run([0], max_epochs=1)

    y = np.array([0, 1] * 10)
    with pytest.raises(DiskFullError, match="metrics.json"):
        write_classification_report(tmp_path / "report", y, y * 0.8, n_bootstrap=0, plots=False)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in (model_pt, thr)} == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not (tmp_path / "last" / "checkpoint_epoch=1.pt").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_bundle_training_disk_full_names_model_pt(tmp_path, monkeypatch):
    """The xray bundle's training stops at the first model.pt write on a full disk with an error naming the file."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
        output_dir=str(tmp_path / "run"), epochs=1, max_items=8, batch_size=4, image_size=32, n_bootstrap=10,
        device="cpu",
    )  # fmt: skip
    wf.initialize()
    _fill_disk(monkeypatch, room=0, only="model.pt.")
    with pytest.raises(Exception) as exc:  # noqa: PT011  (MONAI wraps it: "Failed to evaluate ...trainer.run()")
        wf.run()
    err = _disk_full_error(exc.value)
    assert str(tmp_path / "run" / "models" / "model.pt") in str(err) and "disk full" in str(err)
    assert not (tmp_path / "run" / "models" / "model.pt").exists()
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name.endswith(".tmp")]
    wf.finalize()
