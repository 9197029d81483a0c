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
"""End to end: a real ``monailabel start_server`` with ``apps/monailabel`` serving a bundle as a classification model.

MONAI Label lives in its own virtual environment (``scripts/setup_label_env.sh``); the server runs with that
environment's python, found from ``$MONAI_TRANSFER_LABEL_PYTHON`` or ``<repo>/.venv-label/bin/python``. The test
process (core environment) runs the bundle's ``inference.json`` itself and compares. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from monai_transfer.label import LABEL_FILE_SUFFIX, is_classification_bundle, read_class_names
from monai_transfer.utils.io import safe_torch_load, sha256_file
from tests.label._bundle import make_tiny_bundle, reference_probabilities
from tests.utils import REPO_ROOT, load_pneumonia, requires_shared_data

APP_DIR = REPO_ROOT / "apps" / "monailabel"
REPO_XRAY = REPO_ROOT / "bundles" / "xray"
STARTUP_TIMEOUT_S = 90.0
REQUEST_TIMEOUT_S = 60.0
TRAIN_TIMEOUT_S = 180.0


def _label_python() -> Path | None:
    env = os.environ.get("MONAI_TRANSFER_LABEL_PYTHON")
    path = Path(env) if env else REPO_ROOT / ".venv-label" / "bin" / "python"
    return path if path.is_file() else None


LABEL_PYTHON = _label_python()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.label,
    pytest.mark.skipif(
        LABEL_PYTHON is None,
        reason="MONAI Label environment not found: run `bash scripts/setup_label_env.sh .venv-label` or set "
        "MONAI_TRANSFER_LABEL_PYTHON to its python",
    ),
    requires_shared_data(),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None) -> dict:
    assert url.startswith("http://127.0.0.1:"), url  # never leave the machine
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
        return json.loads(r.read().decode("utf-8"))


def _multipart(field: str, filename: str, content: bytes, params: str = "{}") -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{params}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


class _Server:
    """``monailabel start_server`` in its own process group; always stopped (terminate, then kill)."""

    def __init__(self, work: Path, studies: Path, bundles_dir: Path, models: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # a copy of the app: start_server creates model/, lib/, logs/, bin/ inside the app folder
        self.app = work / "app"
        shutil.copytree(APP_DIR, self.app, ignore=shutil.ignore_patterns("model", "lib", "logs", "bin", "__pycache__"))
        self.log = work / "server.log"
        cmd = [str(LABEL_PYTHON), "-m", "monailabel.main", "start_server", "--app", str(self.app)]
        cmd += ["--studies", str(studies), "--conf", "models", models, "--conf", "bundles_dir", str(bundles_dir)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1", "MONAI_LABEL_TRACKING_ENABLED": "false"}
        self._log_fh = open(self.log, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=work, env=env, stdout=self._log_fh, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.is_file() else ""

    def wait_ready(self) -> dict:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"MONAI Label server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return _request(f"{self.url}/info/")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        pytest.fail(f"MONAI Label server not ready after {STARTUP_TIMEOUT_S}s:\n{self.log_tail()}")

    def wait_train(self) -> dict:
        """Poll ``GET /train/`` until the last training task is no longer submitted/running; return its status."""
        deadline = time.monotonic() + TRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            task = _request(f"{self.url}/train/")
            if task.get("status") not in ("SUBMITTED", "RUNNING"):
                return task
            time.sleep(1.0)
        pytest.fail(f"training not finished after {TRAIN_TIMEOUT_S}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=15)
        self._log_fh.close()


def _network_from_inference(bundle: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    return parser.get_parsed_content("network_def")


def _train_run_folder(tmp_path: Path) -> Path:
    """A training run of bundles/xray on a class-folder set with other class names and image size: a run folder."""
    from PIL import Image

    images, labels = load_pneumonia("train", n=24, seed=2)
    data = tmp_path / "run_data"
    for i, (img, lab) in enumerate(zip(images, labels)):
        (data / RUN_CLASSES[lab]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(img, dtype=np.uint8)).save(data / RUN_CLASSES[lab] / f"case_{i:03d}.png")
    run = tmp_path / "runs" / "chest_run"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/xray/configs/train.json"]
    cmd += ["--dataset_dir", str(data), "--class_names", json.dumps(RUN_CLASSES), "--image_size", "40"]
    cmd += ["--epochs", "1", "--batch_size", "4", "--n_bootstrap", "10", "--device", "cpu", "--output_dir", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"training the run folder failed:\n{proc.stderr[-4000:]}"
    assert read_class_names(run) == RUN_CLASSES
    return run


#: class names of the run-folder bundle (not the template's).
RUN_CLASSES = ["clear", "opacity"]


@pytest.fixture(params=["bundles/xray", "tiny", "run"])
def served_bundle(request, tmp_path) -> tuple[Path, Path]:
    """``(bundles_dir, bundle)``: the repository's xray bundle, a tiny random bundle with the same ids, or a training
    run folder of bundles/xray (served by path: ``--conf models /path/to/run``)."""
    if request.param == "tiny":
        bundle = make_tiny_bundle(tmp_path / "bundles", "xray")
        return bundle.parent, bundle
    if request.param == "run":
        run = _train_run_folder(tmp_path)
        return run.parent, run
    if not is_classification_bundle(REPO_XRAY):
        pytest.skip(f"{REPO_XRAY} is not there yet (needs configs/inference.json and metadata.json with channel_def)")
    # always a copy: training through MONAI Label writes models/, logs/ and eval/ into the served bundle
    bundle = tmp_path / "bundles" / "xray"
    shutil.copytree(REPO_XRAY / "configs", bundle / "configs")
    (bundle / "models").mkdir(parents=True)
    if (REPO_XRAY / "models" / "model.pt").is_file():
        shutil.copy2(REPO_XRAY / "models" / "model.pt", bundle / "models" / "model.pt")
        return bundle.parent, bundle
    # weights are git-ignored (a clean clone has none): use the packaged ImageNet backbone and a seeded head, built
    # from the bundle's own inference.json
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    return bundle.parent, bundle


def test_server_serves_classification_bundle(served_bundle, tmp_path):
    from PIL import Image

    bundles_dir, bundle = served_bundle
    class_names = read_class_names(bundle)
    studies = tmp_path / "studies"
    studies.mkdir()
    images, labels = load_pneumonia("val", n=8, seed=1)
    assert set(labels.tolist()) == {0, 1}  # both classes, so the per-class train/validation split is non-empty
    ids = []
    for i, img in enumerate(images):
        ids.append(f"pmnist_val_{i:03d}")
        Image.fromarray(np.asarray(img, dtype=np.uint8)).save(studies / f"{ids[-1]}.png")

    # a run folder is served by its path, the shipped bundles by their name in bundles_dir
    name = bundle.name
    is_run = (bundle / "models" / "model.json").is_file()
    server = _Server(tmp_path, studies, bundles_dir, str(bundle) if is_run else name)
    try:
        info = server.wait_ready()
        model = info["models"].get(name)
        assert model is not None, f"{name} not served; /info/ models: {list(info['models'])}\n{server.log_tail()}"
        assert model["type"] == "classification"
        assert model["labels"] == {n: i for i, n in enumerate(class_names)}
        assert model["class_names"] == class_names
        if is_run:  # the run's own classes travel with its weights
            assert class_names == RUN_CLASSES
        assert info["datastore"]["total"] == len(ids)

        for image_id in ids[:2]:
            res = _request(f"{server.url}/infer/{name}?image={image_id}&output=json", method="POST", data=b"")
            expected = reference_probabilities(bundle, str(studies / f"{image_id}.png"))
            got = [res["probabilities"][n] for n in class_names]
            np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=f"image {image_id}")
            assert abs(sum(got) - 1.0) < 1e-4
            assert res["label"] == class_names[int(np.argmax(expected))]
            assert [p["label"] for p in res["prediction"]] == class_names

        # image-level labels through the datastore API: <id>.label.json under labels/final
        for image_id, lab in zip(ids, labels):
            body, headers = _multipart(
                "label", f"{image_id}{LABEL_FILE_SUFFIX}", json.dumps({"label": class_names[lab]}).encode()
            )
            _request(f"{server.url}/datastore/label?image={image_id}&tag=final", "PUT", body, headers)
        assert _request(f"{server.url}/info/")["datastore"]["completed"] == len(ids)

        # training through the train endpoint on those labels (bundles with configs/train.json only)
        can_train = (bundle / "configs" / "train.json").is_file()
        assert (name in info["trainers"]) == can_train
        if can_train:
            model_pt = bundle / "models" / "model.pt"
            before = (sha256_file(model_pt), model_pt.stat().st_mtime_ns)
            params = {"max_epochs": 1, "val_split": 0.25, "device": "cpu", "n_bootstrap": 20, "batch_size": 4}
            _request(
                f"{server.url}/train/{name}", "POST", json.dumps(params).encode(), {"Content-Type": "application/json"}
            )
            task = server.wait_train()
            assert task["status"] == "DONE", f"training failed: {task}\n{server.log_tail(8000)}"
            assert (sha256_file(model_pt), model_pt.stat().st_mtime_ns) != before
            state = safe_torch_load(model_pt)
            net = _network_from_inference(bundle)
            net.load_state_dict(state)  # strict: the trained checkpoint matches the served network
            # per-class split of 8 labels with val_split 0.25: 6 train, 2 validation (one of each class)
            report = json.loads((bundle / "eval" / "val" / "metrics.json").read_text())
            data = report["meta"]["data"]
            assert data["train"] == {"n": 6, "per_class": {"0": 3, "1": 3}}, data
            assert data["val"] == {"n": 2, "per_class": {"0": 1, "1": 1}}, data
            assert (report["meta"]["config"]["epochs"], report["meta"]["config"]["batch_size"]) == (1, 4)
            # inference reloads the new weights
            res = _request(f"{server.url}/infer/{name}?image={ids[0]}&output=json", method="POST", data=b"")
            expected = reference_probabilities(bundle, str(studies / f"{ids[0]}.png"))
            np.testing.assert_allclose([res["probabilities"][n] for n in class_names], expected, atol=1e-4)
    finally:
        server.stop()
    assert server.proc.returncode is not None

    # the train task's datalist: integer class labels read back from the saved label files (MONAI Label env)
    script = (
        "import json, sys\n"
        "from monailabel.datastore.local import LocalDatastore\n"
        "from monai_transfer.label import ClassificationBundleTrainTask, LABEL_FILE_SUFFIX\n"
        "ds = LocalDatastore(sys.argv[1], extensions=['*.png', '*' + LABEL_FILE_SUFFIX], auto_reload=False)\n"
        "task = ClassificationBundleTrainTask(sys.argv[2], {})\n"
        "print(json.dumps(task._fetch_datalist({'model': sys.argv[3]}, ds)))\n"
    )
    out = subprocess.run(
        [str(LABEL_PYTHON), "-c", script, str(studies), str(bundle), name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    datalist = json.loads(out.stdout.strip().splitlines()[-1])
    got = {Path(d["image"]).stem: d["label"] for d in datalist}
    assert got == {i: int(lab) for i, lab in zip(ids, labels)}
    assert sorted(p.name for p in (studies / "labels" / "final").iterdir()) == sorted(
        i + LABEL_FILE_SUFFIX for i in ids
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
