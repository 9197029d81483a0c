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
"""``ClassificationBundleInferTask`` checks the weights before MONAI Label loads them (runs in the MONAI Label env)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from monai_transfer.utils.run_bundle import model_spec, write_checkpoint_record
from tests.label._bundle import CLASS_NAMES, make_tiny_bundle
from tests.label.test_monailabel_app import LABEL_PYTHON

pytestmark = [
    pytest.mark.slow,  # a MONAI Label process (cold imports)
    pytest.mark.label,
    pytest.mark.skipif(LABEL_PYTHON is None, reason="MONAI Label environment not found (MONAI_TRANSFER_LABEL_PYTHON)"),
]

_SCRIPT = """
import json, sys
from monai_transfer.label import ClassificationBundleInferTask
task = ClassificationBundleInferTask(sys.argv[1], {})
out = {}
for name in sys.argv[2:]:
    if name != "model.pt":
        import shutil; shutil.copy(sys.argv[1] + "/models/" + name, sys.argv[1] + "/models/model.pt")
        shutil.copy(sys.argv[1] + "/models/" + name.replace(".pt", ".json"), sys.argv[1] + "/models/model.json")
    try:
        task._get_network("cpu", {})
        out[name] = "ok"
    except Exception as e:
        out[name] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


class _Malicious:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_infer_task_refuses_mismatched_or_unsafe_weights(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundles", "xray")
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    cfg["model_spec"] = {"class_names": CLASS_NAMES, "image_size": 32}  # what this config expects
    (bundle / "configs" / "inference.json").write_text(json.dumps(cfg))
    models = bundle / "models"
    spec = model_spec("tf_efficientnet_lite0", CLASS_NAMES, 32)
    write_checkpoint_record(models / "model.pt", spec)
    # a checkpoint trained with other classes and size, and a malicious one
    (models / "other.pt").write_bytes((models / "model.pt").read_bytes())
    write_checkpoint_record(models / "other.pt", model_spec("tf_efficientnet_lite0", ["no", "yes"], 128))
    marker = tmp_path / "pwned"
    torch.save({"x": _Malicious(marker)}, models / "evil.pt")
    write_checkpoint_record(models / "evil.pt", spec)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [str(LABEL_PYTHON), "-c", _SCRIPT, str(bundle), "model.pt", "other.pt", "evil.pt"],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["model.pt"] == "ok"
    assert out["other.pt"].startswith("CheckpointConfigMismatchError")
    assert "image_size 128, bundle" in out["other.pt"] and "says 32" in out["other.pt"]
    assert out["evil.pt"].startswith("UnsafeCheckpointError") and str(models / "model.pt") in out["evil.pt"]
    assert not marker.exists()
