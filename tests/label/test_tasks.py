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

from monai_transfer.networks.checkpoint_record import model_spec, write_checkpoint_record
from tests.label._bundle import CLASS_NAMES, make_tiny_bundle
from tests.label.test_monailabel_app import LABEL_PYTHON
from tests.utils import MaliciousPickle

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
    torch.save({"x": MaliciousPickle(marker)}, models / "evil.pt")
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


_INFER_SCRIPT = """
import json, sys
from monai_transfer.label import ClassificationBundleInferTask
out = {}
for bundle in sys.argv[2:]:
    task = ClassificationBundleInferTask(bundle, {})
    out[bundle] = [task({"image": img, "device": "cpu"})[1]["probabilities"] for img in json.loads(sys.argv[1])]
print(json.dumps(out))
"""


def test_infer_task_applies_calibration_and_serves_an_ensemble_like_the_cli(tmp_path):
    """The shipped xray inference.json in MONAI Label: calibration.json and a ``num_members`` ensemble give the
    probabilities of ``python -m monai_transfer.evaluate`` (one inference path)."""
    import shutil

    import numpy as np
    from PIL import Image

    from monai_transfer.evaluate import evaluate_bundle
    from monai_transfer.metrics.calibration import save_calibration
    from monai_transfer.networks.nets import save_ensemble_checkpoint
    from monai_transfer.utils.io import atomic_torch_save
    from tests.evaluate.test_inference_paths import XRAY, _member

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (70, 66)).astype(np.uint8)).save(images / f"img_{i}.png")
    cal, ens = tmp_path / "cal", tmp_path / "ens"
    for b in (cal, ens):
        shutil.copytree(XRAY / "configs", b / "configs")
    atomic_torch_save(_member(cal, 0).state_dict(), cal / "models" / "model.pt")
    save_calibration(cal / "models" / "calibration.json", 2.5)
    files = [atomic_torch_save(_member(ens, s).state_dict(), tmp_path / f"fold_{s}.pt") for s in (1, 2)]
    save_ensemble_checkpoint(_member(ens, 0), files, ens / "models" / "model.pt")
    cfg = json.loads((ens / "configs" / "inference.json").read_text())
    cfg["num_members"] = 2
    (ens / "configs" / "inference.json").write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    paths = sorted(str(p) for p in images.glob("*.png"))
    proc = subprocess.run(
        [str(LABEL_PYTHON), "-c", _INFER_SCRIPT, json.dumps(paths), str(cal), str(ens)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    for b in (cal, ens):
        res = evaluate_bundle(b, images, tmp_path / f"out_{b.name}", device="cpu", n_bootstrap=0, progress=False)
        cli = [p.probs for p in sorted(res.predictions, key=lambda p: p.case_id)]
        got = [[d["normal"], d["pneumonia"]] for d in served[str(b)]]
        np.testing.assert_allclose(got, cli, atol=1e-5)
    assert json.loads((tmp_path / "out_cal" / "summary.json").read_text())["calibration"]["temperature"] == 2.5


_ANSWER_SCRIPT = """
import json, sys
from monai_transfer.label import ClassificationBundleInferTask
out = {}
for bundle in sys.argv[2:]:
    task = ClassificationBundleInferTask(bundle, {})
    out[bundle] = [task({"image": img, "device": "cpu"})[1] for img in json.loads(sys.argv[1])]
print(json.dumps(out))
"""

FINDINGS = ["Atelectasis", "Effusion", "Pneumothorax"]


def _multilabel_bundle(root) -> object:
    """The tiny bundle with 3 findings: ``mode`` ``"multilabel"``, a sigmoid, ``threshold_path``, random weights."""
    from monai.bundle import ConfigParser

    from monai_transfer.utils.io import atomic_torch_save

    bundle = make_tiny_bundle(root, "xray_ml", seed=1)
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    cfg["network_def"]["out_channels"] = len(FINDINGS)
    cfg["postprocessing"]["transforms"][0].update(softmax=False, sigmoid=True)
    cfg.update(mode="multilabel", threshold_path="$@bundle_root + '/models/threshold.json'")
    (bundle / "configs" / "inference.json").write_text(json.dumps(cfg))
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["channel_def"] = {str(i): n for i, n in enumerate(FINDINGS)}
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    torch.manual_seed(1)
    net = ConfigParser(cfg).get_parsed_content("network_def")
    with torch.no_grad():  # spread the scores (random weights give near 0.5 otherwise)
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    atomic_torch_save(net.state_dict(), bundle / "models" / "model.pt")
    return bundle


def test_infer_task_answers_multilabel_findings_at_per_label_thresholds(tmp_path):
    """A multi-label bundle answers with every finding's probability (sigmoid, as the bundle's own inference) and
    the findings at or above their ``threshold.json`` thresholds; a 2-class bundle still answers with one label."""
    import numpy as np
    from PIL import Image

    from monai_transfer.metrics.threshold import save_threshold
    from tests.label._bundle import reference_probabilities

    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"img_{i}.png"))
        Image.fromarray(rng.integers(0, 255, (40, 36)).astype(np.uint8)).save(paths[-1])
    ml = _multilabel_bundle(tmp_path / "bundles")
    binary = make_tiny_bundle(tmp_path / "bundles", "xray")
    ref = np.array([reference_probabilities(ml, p) for p in paths])
    assert not np.allclose(ref.sum(1), 1.0)  # independent probabilities
    t = np.median(ref, 0)  # every finding present on some images and absent on others
    save_threshold(ml / "models" / "threshold.json", t, "youden", mode="multilabel", class_names=FINDINGS)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [str(LABEL_PYTHON), "-c", _ANSWER_SCRIPT, json.dumps(paths), str(ml), str(binary)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    found = []
    for i, ans in enumerate(served[str(ml)]):
        assert ans["mode"] == "multilabel" and list(ans["probabilities"]) == FINDINGS
        p = np.array([ans["probabilities"][n] for n in FINDINGS])
        np.testing.assert_allclose(p, ref[i], atol=1e-5)
        np.testing.assert_allclose([ans["thresholds"][n] for n in FINDINGS], t, atol=1e-12)
        clear = np.abs(p - t) > 1e-6  # a probability on its threshold may round either way between processes
        hit = np.array([n in ans["findings"] for n in FINDINGS])
        np.testing.assert_array_equal(hit[clear], (p >= t)[clear])
        assert ans["findings"] == [n for n, h in zip(FINDINGS, hit) if h] and ans["label"] == ";".join(ans["findings"])
        assert [d["positive"] for d in ans["prediction"]] == hit.tolist()
        assert [d["label"] for d in ans["prediction"]] == FINDINGS
        found.append(hit)
    assert np.array(found).any(0).all() and not np.array(found).all(0).any()  # per-label decisions, not a top-1
    for i, ans in enumerate(served[str(binary)]):  # 2 classes: one label (no threshold file: at 0.5, the top class)
        p = reference_probabilities(binary, paths[i])
        assert {"prediction", "probabilities", "label", "label_index", "score"} <= set(ans)  # + MONAI Label's keys
        assert "findings" not in ans and "thresholds" not in ans and "mode" not in ans and ans["threshold"] == 0.5
        assert ans["label_index"] == int(np.argmax(p)) and ans["label"] == CLASS_NAMES[ans["label_index"]]
        assert ans["score"] == pytest.approx(max(p), abs=1e-5)
