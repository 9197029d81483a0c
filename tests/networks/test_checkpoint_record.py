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
"""``monai_transfer.networks.checkpoint_record``: model spec, weights record and its check."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from monai_transfer.networks.checkpoint_record import (
    CheckpointConfigMismatchError,
    check_checkpoint_record,
    checkpoint_record_path,
    model_spec,
    read_checkpoint_record,
    write_checkpoint_record,
    write_ensemble_record,
)
from monai_transfer.utils.io import atomic_torch_save, sha256_file


def _ckpt(tmp_path, seed=0):
    torch.manual_seed(seed)
    path = tmp_path / "models" / "model.pt"
    atomic_torch_save(torch.nn.Linear(3, 2).state_dict(), path)
    return path


def test_model_spec_reads_backbone_stats_and_hashes_preprocessing():
    spec = model_spec("tf_efficientnet_lite0", ["no", "yes"], 128)
    assert spec["class_names"] == ["no", "yes"] and spec["num_classes"] == 2 and spec["in_channels"] == 3
    assert spec["normalization"]["mean"] == [0.5, 0.5, 0.5] and spec["normalization"]["repeat_channels"] is True
    assert spec["slicing"] is None
    # the hash covers the preprocessing only: class names do not change it, the size and the slicing do
    assert model_spec("tf_efficientnet_lite0", ["a", "b"], 128)["preprocessing_sha256"] == spec["preprocessing_sha256"]
    assert (
        model_spec("tf_efficientnet_lite0", ["no", "yes"], 64)["preprocessing_sha256"] != spec["preprocessing_sha256"]
    )
    vol = model_spec("tf_efficientnet_lite0", ["no", "yes"], 128, slice_axis="axial", slice_offsets=[-1, 0, 1])
    assert vol["slicing"] == {"axis": "axial", "offsets": [-1, 0, 1]}
    assert vol["preprocessing_sha256"] != spec["preprocessing_sha256"]


def test_record_round_trip_and_mismatch_names_both_values(tmp_path):
    ckpt = _ckpt(tmp_path)
    trained = model_spec("tf_efficientnet_lite0", ["no", "yes"], 128)
    path = write_checkpoint_record(ckpt, trained, extra={"epochs": 3})
    assert path == checkpoint_record_path(ckpt) == tmp_path / "models" / "model.json"
    record = read_checkpoint_record(ckpt)
    assert record["weights_sha256"] == sha256_file(ckpt) and record["run"] == {"epochs": 3}
    assert check_checkpoint_record(ckpt, trained)["image_size"] == 128  # agreeing config: no error

    config = model_spec("tf_efficientnet_lite0", ["normal", "pneumonia"], 64)
    with pytest.raises(CheckpointConfigMismatchError) as err:
        check_checkpoint_record(ckpt, config, source="inference.json")
    msg = str(err.value)
    assert str(ckpt) in msg and str(path) in msg
    assert "image_size 128, inference.json says 64" in msg
    assert '["no", "yes"], inference.json says ["normal", "pneumonia"]' in msg
    assert "preprocessing_sha256" not in msg  # the named difference explains the hash
    # a config that only knows some fields checks those
    with pytest.raises(CheckpointConfigMismatchError, match="backbone tf_efficientnet_lite0, config says resnet18"):
        check_checkpoint_record(ckpt, {"backbone": "resnet18"})
    # a preprocessing difference without a named field is caught by the hash
    other = dict(trained, preprocessing_sha256="0" * 64)
    with pytest.raises(CheckpointConfigMismatchError, match="preprocessing_sha256"):
        check_checkpoint_record(ckpt, other)


def test_ensemble_record_carries_the_members_settings_and_refuses_mixed_members(tmp_path):
    spec = model_spec("tf_efficientnet_lite0", ["no", "yes"], 64)
    members = [_ckpt(tmp_path / f"fold_{k}", seed=k) for k in range(2)]
    for m in members:
        write_checkpoint_record(m, spec, extra={"epochs": 3})
    ens = tmp_path / "ensemble" / "model.pt"
    atomic_torch_save({"members.0.weight": torch.zeros(1)}, ens)
    assert write_ensemble_record(members, ens) == checkpoint_record_path(ens)
    record = read_checkpoint_record(ens)
    assert record["weights_sha256"] == sha256_file(ens)
    assert record["run"] == {"ensemble_members": [str(m) for m in members]}
    assert check_checkpoint_record(ens, spec)["image_size"] == 64  # checked as one model
    with pytest.raises(CheckpointConfigMismatchError, match="image_size 64, config says 128"):
        check_checkpoint_record(ens, model_spec("tf_efficientnet_lite0", ["no", "yes"], 128))
    # members of other settings are not one ensemble; a member without a record leaves nothing to check
    write_checkpoint_record(members[1], model_spec("tf_efficientnet_lite0", ["no", "yes"], 128))
    with pytest.raises(ValueError, match="other settings"):
        write_ensemble_record(members, ens)
    checkpoint_record_path(members[1]).unlink()
    assert write_ensemble_record(members, ens) is None


def test_missing_damaged_and_stale_records(tmp_path, caplog):
    ckpt = _ckpt(tmp_path)
    with caplog.at_level(logging.WARNING, logger="monai_transfer.networks.checkpoint_record"):
        assert check_checkpoint_record(ckpt, {"image_size": 64}) is None
    assert "no weights record model.json" in caplog.text and str(ckpt) in caplog.text
    write_checkpoint_record(ckpt, model_spec("tf_efficientnet_lite0", ["a", "b"], 32))
    _ckpt(tmp_path, seed=1)  # the weights are replaced after the record was written
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_transfer.networks.checkpoint_record"):
        check_checkpoint_record(ckpt, {"image_size": 32})
    assert "SHA-256 differs" in caplog.text
    checkpoint_record_path(ckpt).write_text("{not json")
    with pytest.raises(ValueError, match="model.json of checkpoint .* cannot be read"):
        read_checkpoint_record(ckpt)
    checkpoint_record_path(ckpt).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="is not a monai_transfer.checkpoint_record/1 record"):
        read_checkpoint_record(ckpt)
    with pytest.raises(FileNotFoundError, match="no such file"):
        write_checkpoint_record(tmp_path / "nothing.pt", {})
