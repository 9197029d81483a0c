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
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from monai_transfer.engines.utils import (
    ChannelsLastPrepareBatch,
    amp_enabled,
    auto_device,
    configure_cuda_speedups,
    rank_batch_size,
    rank_zero_score,
    set_run_determinism,
    to_device,
)


@pytest.fixture(autouse=True)
def _restore_global_flags():
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False


def test_auto_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert auto_device().type == expected and auto_device("auto").type == expected
    assert auto_device("CPU") == torch.device("cpu")
    with pytest.raises(ValueError, match="'gpu0'"):
        auto_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            auto_device("cuda")
    assert amp_enabled("cpu") is False and amp_enabled(torch.device("cuda")) is True


def test_set_run_determinism_reproduces_draws():
    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    assert set_run_determinism(7) == 7
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    a = draws()
    set_run_determinism(7)
    assert draws() == a
    set_run_determinism(7, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled() and draws() == a
    with pytest.raises(ValueError, match="seed"):
        set_run_determinism(-1)


def test_configure_cuda_speedups_cpu_noop():
    assert configure_cuda_speedups("cpu") == {"cudnn_benchmark": False, "tf32": False}


def test_prepare_batch_cpu_and_label_shapes():
    pb = ChannelsLastPrepareBatch()
    img = MetaTensor(torch.rand(2, 1, 8, 8))
    x, y = pb({"image": img, "label": torch.tensor([[1], [0]])}, torch.device("cpu"), False)
    assert x.shape == (2, 1, 8, 8) and x.is_contiguous() and isinstance(x, MetaTensor)
    assert y.tolist() == [[1], [0]]
    x, y = pb({"image": img}, "cpu")
    assert y is None
    with pytest.raises(KeyError, match="'image'"):
        pb({"img": img}, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_prepare_batch_channels_last_on_cuda():
    x, y = ChannelsLastPrepareBatch()({"image": torch.rand(2, 3, 8, 8), "label": torch.tensor([1, 0])}, "cuda")
    assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last) and y.is_cuda
    x3, _ = ChannelsLastPrepareBatch()({"image": torch.rand(2, 1, 4, 8, 8), "label": torch.tensor([1, 0])}, "cuda")
    assert x3.is_contiguous(memory_format=torch.channels_last_3d)


def test_usable_from_bundle_config():
    parser = ConfigParser(
        {
            "imports": ["$import monai_transfer"],
            "device": "$monai_transfer.engines.utils.auto_device('cpu')",
            "amp": "$monai_transfer.engines.utils.amp_enabled(@device)",
            "prepare_batch": {"_target_": "monai_transfer.engines.utils.ChannelsLastPrepareBatch"},
            "loss": {"_target_": "monai_transfer.losses.classification.build_loss", "name": "focal", "gamma": 1.5},
        }
    )
    assert parser.get_parsed_content("amp") is False
    assert isinstance(parser.get_parsed_content("prepare_batch"), ChannelsLastPrepareBatch)
    assert parser.get_parsed_content("loss").gamma == 1.5


def test_rank_zero_score_without_and_with_a_process_group(tmp_path):
    """The score passes through unchanged in one process; 2-rank agreement is tested by the xray torchrun test."""
    import torch.distributed as dist
    from ignite.engine import Engine

    engine = Engine(lambda e, b: None)
    engine.state.metrics["val_auc"] = 0.625
    score = rank_zero_score(lambda e: e.state.metrics["val_auc"])
    assert score(engine) == 0.625
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        assert score(engine) == 0.625
    finally:
        dist.destroy_process_group()


def test_to_device_channels_last_only_on_cuda():
    """CPU keeps the memory format; a CUDA device asks for channels-last (checked on the call, no GPU needed)."""
    from unittest import mock

    net = torch.nn.Conv2d(3, 4, 3)
    assert to_device(net, "cpu") is net
    assert net.weight.device.type == "cpu" and net.weight.is_contiguous()
    fake = mock.Mock(spec=torch.nn.Module)
    fake.to.return_value = fake
    assert to_device(fake, "cuda:1") is fake
    fake.to.assert_called_once_with("cuda:1", memory_format=torch.channels_last)
    fake.to.reset_mock()
    to_device(fake, torch.device("cpu"))
    fake.to.assert_called_once_with(torch.device("cpu"), memory_format=torch.preserve_format)
    parsed = ConfigParser(
        {"network_def": {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1}, "device": "cpu",
         "network": {"_target_": "monai_transfer.engines.utils.to_device", "network": "@network_def",
                     "device": "@device"}}
    )  # fmt: skip
    assert parsed.get_parsed_content("network") is parsed.get_parsed_content("network_def")


def test_rank_batch_size_caps_at_one_ranks_share(monkeypatch):
    import torch.distributed as dist

    assert rank_batch_size(8, 100) == 8
    assert rank_batch_size(8, 5) == 5
    assert rank_batch_size(0, 5) == 1 and rank_batch_size(8, 0) == 1
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 4)
    assert rank_batch_size(8, 20) == 5  # 20 volumes over 4 ranks: 5 each
    assert rank_batch_size(2, 20) == 2
    assert rank_batch_size(8, 3) == 1


def test_rank_batch_size_reduces_a_batch_larger_than_the_split_with_a_warning(caplog, monkeypatch):
    """16 training images at the default batch size 32: one batch of 16 (a ``drop_last`` loader of 32 has no step),
    and the warning names ``--batch_size`` and the split size; a slice bundle counts volumes of ``train_slices``."""
    import logging

    import torch.distributed as dist

    with caplog.at_level(logging.WARNING, logger="monai_transfer.engines.utils"):
        assert rank_batch_size(32, 16) == 16
    (msg,) = [r.getMessage() for r in caplog.records]
    assert msg.startswith("--batch_size 32 is larger than the training split (16 images): training with batches of 16")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_transfer.engines.utils"):
        assert rank_batch_size(32, 100) == 32 and rank_batch_size(32, 32) == 32  # fits: no warning
        assert not caplog.records
        assert rank_batch_size(32, 5, slices_per_item=4) == 5  # 8 volumes of 4 slices wanted, 5 volumes there
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "--batch_size 32 (8 volumes of 4 slices) is larger than the training split (5 volumes)" in msg
    assert "batches of 5 volumes (20 slices)" in msg
    caplog.clear()
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    with caplog.at_level(logging.WARNING, logger="monai_transfer.engines.utils"):
        assert rank_batch_size(32, 40) == 20
    assert "the training split (40 images, 20 per rank of 2)" in caplog.records[0].getMessage()
