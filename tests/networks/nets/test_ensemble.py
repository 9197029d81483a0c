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
"""ProbabilityEnsemble: exact probability averaging of tiny nets, loading members from checkpoints, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_transfer.networks.nets import ProbabilityEnsemble, save_ensemble_checkpoint
from monai_transfer.utils.io import load_state_dict_file


def _tiny(seed: int, k: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, k)).eval()


def test_averages_probabilities_not_logits():
    nets = [_tiny(s) for s in range(3)]
    with torch.no_grad():
        nets[2][-1].weight.mul_(50.0)  # one very confident member: a logit average would follow it
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ens = ProbabilityEnsemble(networks=nets).eval()
    with torch.no_grad():
        mean_p = torch.stack([torch.softmax(n(x), 1) for n in nets]).mean(0)
        out = ens(x)
        logit_avg = torch.softmax(torch.stack([n(x) for n in nets]).mean(0), 1)
    torch.testing.assert_close(torch.softmax(out, 1), mean_p, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ProbabilityEnsemble(networks=nets, output="probs")(x), mean_p)
    assert not torch.allclose(logit_avg, mean_p, atol=1e-3)
    assert len(ens) == 3
    scripted = torch.jit.script(ens)  # monai.bundle ckpt_export compiles network_def with TorchScript
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), out)


def test_members_from_checkpoints_equal_the_saved_networks(tmp_path):
    nets = [_tiny(s, k=2) for s in (10, 11)]
    paths = []
    for i, n in enumerate(nets):
        paths.append(tmp_path / f"fold_{i}.pt")
        torch.save(n.state_dict(), paths[-1])
    ens = ProbabilityEnsemble(network=_tiny(99, k=2), checkpoints=paths).eval()
    x = torch.rand(3, 1, 6, 6)
    with torch.no_grad():
        for m, n in zip(ens.members, nets):
            torch.testing.assert_close(m(x), n(x))
        expected = (torch.softmax(nets[0](x), 1) + torch.softmax(nets[1](x), 1)) / 2
        torch.testing.assert_close(torch.softmax(ens(x), 1), expected, atol=1e-6, rtol=1e-5)
    # the members are copies, not the same module
    assert ens.members[0] is not ens.members[1]
    # one combined checkpoint for tools that load a single model.pt into network_def
    combined = save_ensemble_checkpoint(_tiny(99, k=2), paths, tmp_path / "model_ensemble.pt")
    shell = ProbabilityEnsemble(network=_tiny(50, k=2), num_members=2).eval()
    shell.load_state_dict(load_state_dict_file(combined), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(shell(x), ens(x))


def test_sigmoid_members_and_errors(tmp_path):
    nets = [_tiny(s, k=2) for s in (1, 2)]
    x = torch.rand(2, 1, 6, 6)
    with torch.no_grad():
        out = ProbabilityEnsemble(networks=nets, activation="sigmoid")(x)
        expected = (torch.sigmoid(nets[0](x)) + torch.sigmoid(nets[1](x))) / 2
    torch.testing.assert_close(torch.sigmoid(out), expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="needs networks"):
        ProbabilityEnsemble()
    with pytest.raises(ValueError, match="num_members"):
        ProbabilityEnsemble(network=nets[0], num_members=0)
    with pytest.raises(ValueError, match="not both"):
        ProbabilityEnsemble(networks=nets, network=nets[0], checkpoints=["a.pt"])
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ProbabilityEnsemble(network=nets[0], checkpoints=[tmp_path / "missing.pt"])
    torch.save(_tiny(0, k=5).state_dict(), tmp_path / "other.pt")
    with pytest.raises(RuntimeError, match="other.pt"):
        ProbabilityEnsemble(network=nets[0], checkpoints=[tmp_path / "other.pt"])


def test_member_or_ensemble_is_the_member_for_one_and_an_ensemble_for_more():
    """``inference.json``'s ``network_def``: the member itself for ``num_members=1``, else K copies averaged."""
    from monai_transfer.networks.nets import ProbabilityEnsemble, member_or_ensemble

    net = torch.nn.Linear(3, 2)
    assert member_or_ensemble(net, 1) is net
    ens = member_or_ensemble(net, 3, activation="sigmoid")
    assert isinstance(ens, ProbabilityEnsemble) and len(ens.members) == 3 and ens.activation == "sigmoid"
    with pytest.raises(ValueError, match="num_members"):
        member_or_ensemble(net, 0)
