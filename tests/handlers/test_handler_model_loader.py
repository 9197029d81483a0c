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
"""``VerifiedCheckpointLoader`` / ``load_verified_model``: safe loading, the weights-record check, named errors."""

from __future__ import annotations

import shutil

import pytest
import torch
from ignite.engine import Engine
from torch import nn

from monai_transfer.handlers.model_loader import VerifiedCheckpointLoader, load_verified_model
from monai_transfer.networks.checkpoint_record import CheckpointConfigMismatchError, model_spec, write_checkpoint_record
from monai_transfer.utils.io import UnsafeCheckpointError, atomic_torch_save
from tests.utils import REPO_ROOT, MaliciousPickle, bundle_workflow

XRAY = REPO_ROOT / "bundles" / "xray"


def _run_engine(handler):
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run([0], max_epochs=1)


def test_loads_plain_and_wrapped_state_dicts(tmp_path):
    src = nn.Linear(3, 2)
    atomic_torch_save(src.state_dict(), tmp_path / "plain.pt")
    atomic_torch_save({"model": src.state_dict()}, tmp_path / "wrapped.pt")
    for name in ("plain.pt", "wrapped.pt"):
        net = nn.Linear(3, 2)
        _run_engine(VerifiedCheckpointLoader(tmp_path / name, {"model": net}))
        torch.testing.assert_close(net.weight, src.weight)
    # several entries: each must be a key of the checkpoint
    atomic_torch_save({"a": src.state_dict(), "b": src.state_dict()}, tmp_path / "two.pt")
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    VerifiedCheckpointLoader(tmp_path / "two.pt", {"a": a, "b": b})()
    torch.testing.assert_close(b.bias, src.bias)
    with pytest.raises(RuntimeError, match=r"two.pt has no entries \['c'\]"):
        VerifiedCheckpointLoader(tmp_path / "two.pt", {"a": a, "c": b})()
    with pytest.raises(ValueError, match="load_dict"):
        VerifiedCheckpointLoader(tmp_path / "plain.pt", {})


def test_errors_name_the_file(tmp_path):
    atomic_torch_save(nn.Linear(3, 2).state_dict(), tmp_path / "model.pt")
    with pytest.raises(RuntimeError, match=r"model.pt does not fit the config's network"):
        load_verified_model(nn.Linear(4, 2), tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt not found"):
        load_verified_model(nn.Linear(3, 2), tmp_path / "missing.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "model.pt").read_bytes()[:40])
    with pytest.raises(RuntimeError, match="cut.pt"):
        load_verified_model(nn.Linear(3, 2), tmp_path / "cut.pt")


def test_record_mismatch_is_refused_before_loading(tmp_path):
    src = nn.Linear(3, 2)
    atomic_torch_save(src.state_dict(), tmp_path / "model.pt")
    write_checkpoint_record(tmp_path / "model.pt", model_spec("tf_efficientnet_lite0", ["no", "yes"], 128))
    net = nn.Linear(3, 2)
    before = net.weight.detach().clone()
    config = model_spec("tf_efficientnet_lite0", ["no", "yes"], 64)
    with pytest.raises(CheckpointConfigMismatchError, match="trained at image_size 128, config says 64"):
        _run_engine(VerifiedCheckpointLoader(tmp_path / "model.pt", {"model": net}, expected=config))
    torch.testing.assert_close(net.weight, before)  # nothing was loaded
    load_verified_model(net, tmp_path / "model.pt", expected=model_spec("tf_efficientnet_lite0", ["no", "yes"], 128))
    torch.testing.assert_close(net.weight, src.weight)


@pytest.fixture
def xray_copy(tmp_path):
    """The xray bundle's configs in a temporary bundle folder (models/ written by the test)."""
    bundle = tmp_path / "xray"
    shutil.copytree(XRAY / "configs", bundle / "configs")
    (bundle / "models").mkdir()
    return bundle


def _cause(err: BaseException, kind: type) -> BaseException:
    """The exception of type ``kind`` in the chain (the config's ``run`` expression wraps it in a RuntimeError)."""
    e: BaseException | None = err
    while e is not None and not isinstance(e, kind):
        e = e.__cause__ or e.__context__
    assert e is not None, f"no {kind.__name__} in the chain of {err!r}"
    return e


def _infer(bundle, out):
    wf = bundle_workflow(
        bundle / "configs",
        bundle / "configs" / "inference.json",
        "infer",
        bundle_root=str(bundle),
        input_dir=str(XRAY / "data" / "dicom_samples"),
        output_dir=str(out),
        device="cpu",
    )
    wf.initialize()
    try:
        wf.run()
    finally:
        wf.finalize()


def test_inference_json_refuses_malicious_model_pt_naming_it(xray_copy, tmp_path):
    """inference.json loads model.pt through the project's safe loader: refused, the file named, no code run."""
    marker = tmp_path / "pwned"
    evil = xray_copy / "models" / "model.pt"
    torch.save({"head.1.weight": torch.zeros(2, 4), "x": MaliciousPickle(marker)}, evil)
    with pytest.raises(RuntimeError) as err:
        _infer(xray_copy, tmp_path / "out")
    cause = _cause(err.value, UnsafeCheckpointError)
    assert f"refusing to load {evil}" in str(cause)
    assert not marker.exists()


def test_inference_json_refuses_a_checkpoint_trained_with_other_settings(xray_copy, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(xray_copy / "configs" / "inference.json"))
    parser["bundle_root"] = str(xray_copy)
    ckpt = xray_copy / "models" / "model.pt"
    backbone = parser.get_parsed_content("backbone")
    atomic_torch_save(parser.get_parsed_content("network_def").state_dict(), ckpt)
    write_checkpoint_record(ckpt, model_spec(backbone, ["normal", "pneumonia"], 128))
    with pytest.raises(RuntimeError) as err:
        _infer(xray_copy, tmp_path / "out")
    cause = _cause(err.value, CheckpointConfigMismatchError)
    assert f"checkpoint {ckpt} was trained at image_size 128, config says 64" in str(cause)
    write_checkpoint_record(ckpt, model_spec(backbone, ["normal", "pneumonia"], 64))
    _infer(xray_copy, tmp_path / "out")  # the matching record loads and predicts
    assert (tmp_path / "out" / "predictions.csv").is_file()
