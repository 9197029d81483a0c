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
"""End to end: a real MONAI Label server with ``apps/monailabel`` serving a bundle as a classification model.

The user's sequence: MONAI Label lives in its own virtual environment built by ``scripts/setup_label_env.sh``, whose
python (``$MONAI_TRANSFER_LABEL_PYTHON``, else ``<repo>/.venv-label/bin/python``) replaces ``.venv-label/bin/python``
in the README's start command, run as written (no venv on PATH). ``/infer`` on PNG and DICOM studies must then give
the answers of the bundle's ``inference.json`` (its ``predictions.csv``, run by the test process in the core
environment): the same calibrated probabilities and the same label at the stored threshold. Only 127.0.0.1 is
contacted.
"""

from __future__ import annotations

import json
import os
import shlex
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
from tests.utils import REPO_ROOT, bundle_cli, load_pneumonia, read_csv, requires_shared_data

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


def readme_start_command() -> list[str]:
    """The server start command of the README's "MONAI Label" section, as tokens."""
    section = (REPO_ROOT / "README.md").read_text(encoding="utf-8").split("\n## MONAI Label", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.splitlines() if "start_server" in line]
    assert len(lines) == 1, f"the README's MONAI Label section should hold one start command, got {lines}"
    return shlex.split(lines[0])


#: the README's placeholders that the test replaces (everything else of the command runs as written).
README_PLACEHOLDERS = (".venv-label/bin/python", "apps/monailabel", "/path/to/studies", "xray", "8000")


def start_command(app: Path, studies: Path, models: str, port: int) -> list[str]:
    """The README's start command with this test's label python, app copy, studies, models and port."""
    tokens = readme_start_command()
    subs = dict(zip(README_PLACEHOLDERS, (str(LABEL_PYTHON), str(app), str(studies), models, str(port))))
    missing = [k for k in subs if k not in tokens]
    assert not missing, f"README start command {tokens} lacks {missing}: update the test's placeholders"
    assert tokens[1:4] == ["-m", "monailabel.main", "start_server"], tokens
    return [subs.get(t, t) for t in tokens]


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
        cmd = start_command(self.app, studies, models, self.port) + ["--conf", "bundles_dir", str(bundles_dir)]
        # as a user runs it: no virtual environment active, nothing of ours on PATH
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        env.update(PATH="/usr/bin:/bin", OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
        env["MONAI_LABEL_TRACKING_ENABLED"] = "false"
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


def _dicom_studies() -> list[Path]:
    """DICOM studies: the radiograph shipped with bundles/xray and a real MONOCHROME1 chest CR (pydicom-data)."""
    from pydicom.data import get_testdata_file

    cr = get_testdata_file("RG1_UNCI.dcm", download=False)
    assert cr, "pydicom-data (the [test] extra) provides RG1_UNCI.dcm"
    return sorted((REPO_XRAY / "data" / "dicom_samples").glob("*.dcm")) + [Path(cr)]


def _inference_json_answers(bundle: Path, studies: Path, out: Path) -> dict[str, dict[str, str]]:
    """``predictions.csv`` of the bundle's ``inference.json`` over ``studies`` (core environment), by image id."""
    config = bundle / "configs" / "inference.json"
    bundle_cli("run", "--config_file", str(config), "--bundle_root", str(bundle), "--input_dir", str(studies),
               "--output_dir", str(out))  # fmt: skip
    return {Path(row.get("image") or row["id"]).name.split(".")[0]: row for row in read_csv(out / "predictions.csv")}


def _calibrate_with_a_deciding_threshold(bundle: Path, images: list[Path], class_names: list[str]) -> float:
    """Give the bundle ``models/calibration.json`` (temperature 1.7) and a ``models/threshold.json`` chosen so that
    at least one of ``images`` gets another label than the arg-max (a served arg-max then fails the test)."""
    from monai_transfer.metrics.calibration import save_calibration
    from monai_transfer.metrics.threshold import save_threshold

    cal = bundle / "models" / "calibration.json"
    save_calibration(cal, 1.7, fitted_on="test")
    p1 = sorted({reference_probabilities(bundle, str(p))[1] for p in images})
    gaps = [((a + b) / 2, b - a) for a, b in zip(p1, p1[1:]) if b - a > 2e-3]
    flips = [t for t, _ in gaps if any(min(t, 0.5) <= v < max(t, 0.5) for v in p1)]
    assert flips, f"calibrated p({class_names[1]}) {p1}: no threshold separates them from the arg-max"
    threshold = max(flips, key=lambda t: abs(t - 0.5))
    applies_to = f"probabilities after temperature scaling with {cal}"
    save_threshold(bundle / "models" / "threshold.json", threshold, method="youden", applies_to=applies_to,
                   class_names=class_names)  # fmt: skip
    return threshold


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
    # the project's bundles and run folders (the tiny one is plain MONAI: LoadImaged) also get DICOM studies
    is_project = "monai_transfer." in (bundle / "configs" / "inference.json").read_text()
    dicom_ids = []
    for path in _dicom_studies() if is_project else []:
        shutil.copy2(path, studies / path.name)
        dicom_ids.append(path.stem)
    is_run = (bundle / "models" / "model.json").is_file()
    threshold = None
    if is_project and not is_run:  # a calibrated bundle whose stored threshold decides otherwise than the arg-max
        threshold = _calibrate_with_a_deciding_threshold(bundle, sorted(studies.iterdir()), class_names)
    # what inference.json answers for the same files (before the server adds labels/ to the studies folder)
    expected = _inference_json_answers(bundle, studies, tmp_path / "inference_json") if is_project else {}

    # a run folder is served by its path, the shipped bundles by their name in bundles_dir
    name = bundle.name
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
        assert info["datastore"]["total"] == len(ids) + len(dicom_ids)

        answers = {}
        for image_id in ids[:2] if not is_project else ids + dicom_ids:
            res = _request(f"{server.url}/infer/{name}?image={image_id}&output=json", method="POST", data=b"")
            answers[image_id] = res
            got = [res["probabilities"][n] for n in class_names]
            assert abs(sum(got) - 1.0) < 1e-4
            assert [p["label"] for p in res["prediction"]] == class_names
            if not is_project:  # the tiny bundle: its in-process chain, no threshold file (0.5)
                ref = reference_probabilities(bundle, str(studies / f"{image_id}.png"))
                np.testing.assert_allclose(got, ref, atol=1e-4, err_msg=f"image {image_id}")
                assert res["label"] == class_names[int(ref[1] >= 0.5)]
                continue
            # one image, one answer: the probabilities and label of inference.json's predictions.csv
            row = expected[image_id]
            want = [float(row[f"prob_{n}"]) for n in class_names]
            np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"image {image_id}")
            assert res["label"] == row["prediction_name"], f"image {image_id}: {res} vs {row}"
            assert res["threshold"] == pytest.approx(float(row["threshold"]), abs=1e-6)
        if threshold is not None:
            assert all(a["threshold"] == pytest.approx(threshold) for a in answers.values())
            argmax = {i: class_names[int(np.argmax(list(a["probabilities"].values())))] for i, a in answers.items()}
            assert any(argmax[i] != a["label"] for i, a in answers.items()), "the threshold decided nothing"
            # training below refits without calibration (train.json's calibrate is false) and rewrites the
            # threshold; a calibration.json left beside it would be refused (check_threshold_calibration). The
            # answer after training must then drop the old temperature too (the server rebuilds its postprocessing)
            (bundle / "models" / "calibration.json").unlink()
        if dicom_ids:
            assert set(dicom_ids) <= set(answers)

        # an unknown image id: 404 naming it (MONAI Label alone answers 500)
        with pytest.raises(urllib.error.HTTPError) as err:
            _request(f"{server.url}/infer/{name}?image=no_such_image&output=json", method="POST", data=b"")
        assert err.value.code == 404 and "no_such_image" in err.value.read().decode()

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
            ref = reference_probabilities(bundle, str(studies / f"{ids[0]}.png"))
            np.testing.assert_allclose([res["probabilities"][n] for n in class_names], ref, atol=1e-4)
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
