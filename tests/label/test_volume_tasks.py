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
"""MONAI Label serving ``bundles/ct_slices``: one answer per VOLUME, pooled from its slices.

The fast tests run in the core environment; the server test starts a real ``monailabel start_server`` (MONAI Label
environment, see ``tests/label/test_monailabel_app.py``) on a copy of ``bundles/ct_slices`` and compares each answer
with the bundle's ``inference.json`` chain run in this process.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.utils import OptionalImportError

from monai_transfer.label import (
    ClassificationBundleInferTask,
    VolumeSliceBundleInferTask,
    has_monailabel,
    infer_task_class,
    is_slice_bundle,
    read_class_names,
)
from monai_transfer.metrics.volume_calibration import VolumePlatt
from monai_transfer.utils.io import load_state_dict_file
from tests.label._bundle import make_tiny_bundle
from tests.utils import REPO_ROOT

CT = REPO_ROOT / "bundles" / "ct_slices"
VOLUMES = CT / "data" / "volumes"


def test_slice_bundles_get_the_volume_task(tmp_path):
    assert is_slice_bundle(CT) and infer_task_class(CT) is VolumeSliceBundleInferTask
    xray = REPO_ROOT / "bundles" / "xray"
    assert not is_slice_bundle(xray) and infer_task_class(xray) is ClassificationBundleInferTask
    tiny = make_tiny_bundle(tmp_path / "bundles", "tiny")
    assert infer_task_class(tiny) is ClassificationBundleInferTask
    assert not is_slice_bundle(tmp_path / "no_bundle")
    bad = tmp_path / "bad"
    (bad / "configs").mkdir(parents=True)
    (bad / "configs" / "inference.json").write_text("{not json")
    with pytest.raises(ValueError, match="inference.json"):
        is_slice_bundle(bad)


@pytest.mark.skipif(bool(has_monailabel), reason="checks the error raised without MONAI Label")
def test_volume_task_needs_monailabel():
    with pytest.raises(OptionalImportError):
        VolumeSliceBundleInferTask(str(CT), {})


#: the served copy's calibration.json: no temperature change, a Platt step fitted (as the CV stores it) for mean pooling
PLATT = VolumePlatt(0.5, -1.0, "mean")


def _served_copy(bundles_dir: Path) -> Path:
    """A copy of bundles/ct_slices' configs with seeded random weights built from its own inference.json, and a
    ``calibration.json`` holding :data:`PLATT`."""
    from monai.bundle import ConfigParser

    bundle = bundles_dir / "ct_slices"
    shutil.copytree(CT / "configs", bundle / "configs")
    (bundle / "models").mkdir(parents=True)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    cal = {"method": "temperature", "temperature": 1.0, "mode": "binary", "volume_platt": PLATT.to_dict()}
    (bundle / "models" / "calibration.json").write_text(json.dumps(cal))
    return bundle


def _reference(bundle: Path, volume: Path) -> tuple[list[int], np.ndarray]:
    """Slice indices and per-slice softmax probabilities of ``inference.json``'s chain, in this process."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(load_state_dict_file(bundle / "models" / "model.pt"))
    slices = parser.get_parsed_content("preprocessing")({"image": str(volume)})
    with torch.no_grad():
        logits = net.eval()(torch.stack([s["image"].as_tensor() for s in slices]))
    return [int(s["slice_index"]) for s in slices], torch.softmax(logits, 1).numpy()


def _params_only_multipart(params: dict) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{json.dumps(params)}\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.mark.slow
@pytest.mark.label
def test_server_serves_ct_slices_one_prediction_per_volume(tmp_path):
    from tests.label import test_monailabel_app as app_test

    if app_test.LABEL_PYTHON is None:
        pytest.skip("MONAI Label environment not found: set MONAI_TRANSFER_LABEL_PYTHON to its python")
    bundle = _served_copy(tmp_path / "bundles")
    class_names = read_class_names(bundle)
    studies = tmp_path / "studies"
    studies.mkdir()
    names = [p.name for p in sorted(VOLUMES.glob("adrenal_val_00*.nii.gz"))[:2]]
    for n in names:
        shutil.copy(VOLUMES / n, studies / n)
    ids = [n[: -len(".nii.gz")] for n in names]

    server = app_test._Server(tmp_path, studies, bundle.parent, "ct_slices")
    answers = {}
    try:
        info = server.wait_ready()
        model = info["models"].get("ct_slices")
        assert model is not None, f"ct_slices not served: {list(info['models'])}\n{server.log_tail()}"
        assert model["type"] == "classification" and model["class_names"] == class_names
        assert info["datastore"]["total"] == len(ids)
        for image_id in ids:
            answers[image_id] = app_test._request(
                f"{server.url}/infer/ct_slices?image={image_id}&output=json", method="POST", data=b""
            )
        body, headers = _params_only_multipart({"aggregation": "max"})
        answers["max"] = app_test._request(
            f"{server.url}/infer/ct_slices?image={ids[0]}&output=json", "POST", body, headers
        )
    finally:
        server.stop()

    num_slices = json.loads((bundle / "configs" / "inference.json").read_text())["num_slices"]
    means = []
    for image_id, name in zip(ids, names):
        res = answers[image_id]
        index, probs = _reference(bundle, VOLUMES / name)
        platt = PLATT.to_dict()
        assert res["aggregation"] == {"method": "mean", "k": None, "n_slices": num_slices, "volume_platt": platt}
        assert [s["slice_index"] for s in res["slices"]] == index
        got_slices = np.array([[s["probabilities"][c] for c in class_names] for s in res["slices"]])
        np.testing.assert_allclose(got_slices, probs, atol=1e-4, err_msg=image_id)
        got = np.array([res["probabilities"][c] for c in class_names])
        want = PLATT(probs.mean(0))  # ONE prediction per volume: the mean of its slices, then the volume Platt step
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=image_id)
        # binary: the label at the stored threshold (the served copy has no threshold.json: 0.5), as inference.json
        assert res["threshold"] == 0.5 and res["label"] == class_names[int(want[1] >= 0.5)]
        assert float(np.ptp(probs[:, 1])) > 1e-3  # the slices disagree, so the pooling matters
        means.append(got)
    assert not np.allclose(means[0], means[1], atol=1e-4)  # two volumes, two answers
    # a request may pick the pooling: "max" is the slice with the highest positive probability, with no Platt step
    # (the stored one was fitted for mean pooling)
    _, probs = _reference(bundle, VOLUMES / names[0])
    res = answers["max"]
    assert res["aggregation"]["method"] == "max" and res["aggregation"]["volume_platt"] is None
    np.testing.assert_allclose(
        [res["probabilities"][c] for c in class_names], probs[int(np.argmax(probs[:, 1]))], atol=1e-4
    )
