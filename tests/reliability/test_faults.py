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
"""Faults: an unwritable bundle output folder fails before training; a crash while writing a report keeps the old one.

SIGKILL + resume, atomic checkpoints and safe loading are tested in tests/engines/test_training.py,
tests/handlers/test_handler_checkpoint.py, tests/test_utils_io.py and tests/networks/backbones/test_weights.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

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
    # MONAI wraps expression failures ("Failed to evaluate ConfigExpression ...check_output_dir..."); the cause,
    # printed with it in the traceback, is our PermissionError naming the folder
    with pytest.raises(Exception) as exc:  # noqa: PT011
        wf.initialize()
    assert "check_output_dir" in str(exc.value)
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
