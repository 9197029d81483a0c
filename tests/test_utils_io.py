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
"""Tests of ``monai_transfer.utils.io`` (here, not in ``tests/utils/``, because ``tests/utils.py`` is the helper
module and a ``tests/utils/`` package would shadow it)."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
import torch

from monai_transfer.utils.io import (
    UnsafeCheckpointError,
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    load_state_dict_file,
    safe_torch_load,
    sha256_file,
    verify_sha256,
)
from tests.utils import MaliciousPickle


def test_safe_torch_load_refuses_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"network": {"w": torch.ones(2)}, "payload": MaliciousPickle(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt"):
        safe_torch_load(path)
    with pytest.raises(UnsafeCheckpointError):
        load_state_dict_file(path)
    assert not marker.exists()


def test_safe_torch_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        safe_torch_load(tmp_path / "missing.pt")
    good = atomic_torch_save({"w": torch.arange(1000.0)}, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(RuntimeError, match="truncated.pt"):
        safe_torch_load(truncated)
    assert torch.equal(safe_torch_load(good)["w"], torch.arange(1000.0))


def test_load_state_dict_file_unwraps(tmp_path):
    sd = {"module.fc.weight": torch.ones(2, 2), "module.fc.bias": torch.zeros(2)}
    atomic_torch_save({"state_dict": sd, "epoch": 3}, tmp_path / "w.pt")
    out = load_state_dict_file(tmp_path / "w.pt")
    assert sorted(out) == ["fc.bias", "fc.weight"] and torch.equal(out["fc.weight"], torch.ones(2, 2))
    from safetensors.torch import save_file

    save_file({"a": torch.ones(3)}, str(tmp_path / "w.safetensors"))
    assert torch.equal(load_state_dict_file(tmp_path / "w.safetensors")["a"], torch.ones(3))
    atomic_torch_save({"x": 1}, tmp_path / "not_sd.pt")
    with pytest.raises(RuntimeError, match="not_sd.pt"):
        load_state_dict_file(tmp_path / "not_sd.pt")


def test_atomic_write_crash_keeps_old_file_and_no_temp(tmp_path):
    path = atomic_write_text(tmp_path / "model.txt", "good content")

    def crash(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, crash)
    assert path.read_text() == "good content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.txt"]

    # interruption (KeyboardInterrupt is a BaseException) is handled too
    def interrupt(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupt)
    assert path.read_text() == "good content" and len(list(tmp_path.iterdir())) == 1


def test_atomic_write_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_atomic_write_json_nan_and_tensors(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"auc": float("nan"), "t": torch.tensor([1.5, 2.0]), 3: "x"})
    assert json.loads(path.read_text()) == {"auc": None, "t": [1.5, 2.0], "3": "x"}


def test_sha256(tmp_path):
    path = atomic_write_text(tmp_path / "f.bin", "abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    assert sha256_file(path) == digest == verify_sha256(path, digest[:8].upper())
    with pytest.raises(ValueError, match="f.bin"):
        verify_sha256(path, "0" * 64)
    with pytest.raises(ValueError, match="mismatch"):
        verify_sha256(path, digest[:4])  # too short a prefix is refused


def test_check_output_dir(tmp_path):
    out = check_output_dir(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []
    blocker = tmp_path / "plain_file"
    blocker.write_text("x")
    # a folder below a regular file cannot be created, even by root
    with pytest.raises(PermissionError, match="plain_file"):
        check_output_dir(blocker / "run1")
    with pytest.raises(PermissionError, match="not a folder"):
        check_output_dir(blocker)
    with pytest.raises(OSError, match="MiB free"):
        check_output_dir(tmp_path, min_free_mb=1e15)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write to read-only folders")
def test_check_output_dir_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            check_output_dir(ro)
    finally:
        ro.chmod(0o755)


def test_read_json_file_names_the_file(tmp_path):
    from monai_transfer.utils.io import read_json_file

    good = tmp_path / "t.json"
    good.write_text(json.dumps({"threshold": 0.3}))
    assert read_json_file(good, "threshold file") == {"threshold": 0.3}
    with pytest.raises(FileNotFoundError, match=r"threshold file not found: .*missing.json"):
        read_json_file(tmp_path / "missing.json", "threshold file")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"threshold": 0.')
    with pytest.raises(ValueError, match=r"calibration file .*bad.json is not valid JSON"):
        read_json_file(bad, "calibration file")
    bad.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_json_file(bad)
