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
"""TTAInferer: exact probability averaging, invariance, views, use inside a MONAI evaluator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator
from monai.transforms import Activationsd, Compose

from monai_transfer.inferers import TTAInferer, average_probabilities


def _conv_net(seed: int = 0, k: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, stride=2),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(k),
    ).eval()


def test_average_matches_manual_softmax_average_and_softmax_roundtrip():
    net = _conv_net()
    x = torch.rand(5, 1, 12, 10, generator=torch.Generator().manual_seed(1))
    net(x)  # materialise the lazy layer
    tta = TTAInferer(flip_axes=[1, 0, (0, 1)], rotations=[], scales=[])
    assert tta.num_views == 4
    with torch.no_grad():
        out = tta(x, net)
        manual = torch.stack([torch.softmax(net(v), 1) for v in (x, x.flip(3), x.flip(2), x.flip(2).flip(3))]).mean(0)
    torch.testing.assert_close(torch.softmax(out, 1), manual, atol=1e-6, rtol=1e-5)  # post-processing gives mean p
    torch.testing.assert_close(TTAInferer(flip_axes=[1, 0, (0, 1)], rotations=[], output="probs")(x, net), manual)
    # not a trivial average: flipping changes this network's output
    assert not torch.allclose(torch.softmax(net(x), 1), torch.softmax(net(x.flip(3)), 1), atol=1e-4)


def test_flip_invariant_network_is_unchanged():
    """Global average pooling + linear is exactly flip-invariant: TTA over flips equals the plain prediction."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(2, 3)).eval()
    x = torch.rand(4, 2, 8, 8)
    with torch.no_grad():
        out = TTAInferer(flip_axes=[0, 1], rotations=[])(x, net)
        torch.testing.assert_close(torch.softmax(out, 1), torch.softmax(net(x), 1), atol=1e-6, rtol=1e-5)


def test_rotation_90_is_exact_and_zero_rotation_is_identity():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    views = TTAInferer(rotations=[0.0, 90.0, -90.0], scales=[1.0], include_identity=False).views(x)
    torch.testing.assert_close(views[0], x, atol=1e-4, rtol=0)
    rotated = {tuple(torch.rot90(x, k, dims=(2, 3)).flatten().tolist()) for k in (1, -1)}
    for v in views[1:3]:  # one is +90, the other -90 (pixel centres map onto pixel centres: exact)
        assert any(torch.allclose(v.flatten(), torch.tensor(r), atol=1e-3) for r in rotated)
    assert not torch.allclose(views[1], views[2])
    torch.testing.assert_close(views[3], x, atol=1e-4, rtol=0)
    # a small rotation moves content but keeps the range (border padding)
    small = TTAInferer(rotations=[5.0], include_identity=False).views(x)[0]
    assert not torch.allclose(small, x) and small.min() >= x.min() - 1e-4 and small.max() <= x.max() + 1e-4


def test_sigmoid_logit_output_and_errors():
    outs = [torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, -2.0]])]
    got = average_probabilities(outs, "sigmoid")
    expected = (torch.sigmoid(outs[0]) + torch.sigmoid(outs[1])) / 2
    torch.testing.assert_close(torch.sigmoid(got), expected)
    with pytest.raises(ValueError, match="one shape"):
        average_probabilities([torch.zeros(1, 2), torch.zeros(1, 3)])
    with pytest.raises(ValueError, match="activation"):
        TTAInferer(activation="relu")
    with pytest.raises(ValueError, match="no view"):
        TTAInferer(rotations=[], include_identity=False)
    with pytest.raises(ValueError, match="out of range"):
        TTAInferer(flip_axes=[2], rotations=[]).views(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="2D"):
        TTAInferer(rotations=[5]).views(torch.zeros(1, 1, 4, 4, 4))
    # 3D flips are fine
    assert len(TTAInferer(flip_axes=[2], rotations=[]).views(torch.zeros(1, 1, 4, 4, 4))) == 2


def test_as_evaluator_inferer():
    net = _conv_net(k=2)
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    net(x)
    data = [{"image": x[i], "label": torch.tensor(i % 2)} for i in range(6)]
    loader = torch.utils.data.DataLoader(data, batch_size=3)
    preds = []
    ev = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=loader, network=net,
        inferer=TTAInferer(flip_axes=[1], rotations=[]),
        postprocessing=Compose([Activationsd("pred", softmax=True)]),
    )  # fmt: skip
    ev.add_event_handler(Events.ITERATION_COMPLETED, lambda e: preds.extend(o["pred"] for o in e.state.output))
    ev.run()
    with torch.no_grad():
        manual = (torch.softmax(net(x), 1) + torch.softmax(net(x.flip(3)), 1)) / 2
    torch.testing.assert_close(torch.stack(preds).as_subclass(torch.Tensor), manual, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_wiring_into_the_xray_inference_config(tmp_path):
    """The wiring of docs/generalisation.md, as overrides of the shipped inference.json: TTA inferer, calibration
    before the softmax, and a ProbabilityEnsemble network_def with one combined checkpoint."""
    from monai.bundle import ConfigWorkflow

    from monai_transfer.metrics.calibration import save_calibration
    from monai_transfer.networks.nets import Pretrained2DNet, ProbabilityEnsemble, save_ensemble_checkpoint
    from tests.utils import REPO_ROOT, read_csv

    configs = REPO_ROOT / "bundles" / "xray" / "configs"
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(tmp_path / f"fold_{seed}.pt")
        torch.save(Pretrained2DNet(weights="none", num_classes=2, in_channels=3).state_dict(), members[-1])
    ckpt = save_ensemble_checkpoint(Pretrained2DNet(weights="none", num_classes=2, in_channels=3), members,
                                    tmp_path / "models" / "model.pt")  # fmt: skip
    save_calibration(tmp_path / "models" / "calibration.json", 2.0)
    member_def = {"_target_": "monai_transfer.networks.nets.Pretrained2DNet", "weights": "none", "num_classes": 2,
                  "in_channels": 3}  # fmt: skip
    wf = ConfigWorkflow(
        config_file=str(configs / "inference.json"), meta_file=str(configs / "metadata.json"), logging_file=False,
        workflow_type="infer", output_dir=str(tmp_path / "out"), ckpt_path=str(ckpt), image_size=32, device="cpu",
        network_def={"_target_": "monai_transfer.networks.nets.ProbabilityEnsemble", "network": member_def,
                     "num_members": 2},
        inferer={"_target_": "monai_transfer.inferers.TTAInferer", "rotations": [-5, 5]},
        **{"postprocessing#transforms": [
            {"_target_": "monai_transfer.transforms.ApplyTemperatured", "keys": "pred",
             "temperature": "$os.path.join(os.path.dirname(@ckpt_path), 'calibration.json')"},
            {"_target_": "Activationsd", "keys": "pred", "softmax": True}]},
    )  # fmt: skip
    wf.initialize()
    wf.run()
    wf.finalize()
    rows = read_csv(tmp_path / "out" / "predictions.csv")
    assert len(rows) == 8
    # the same numbers by hand: mean over members and views of the softmax, then temperature 2 on log(mean p)
    template = Pretrained2DNet(weights="none", num_classes=2, in_channels=3)
    ens = ProbabilityEnsemble(network=template, checkpoints=members).eval()
    pre = wf.parser.get_parsed_content("preprocessing")
    data = wf.parser.get_parsed_content("datalist")
    x = torch.stack([pre(dict(d))["image"].as_tensor() for d in data])
    tta = TTAInferer(rotations=[-5, 5], output="probs")
    with torch.no_grad():
        mean_p = tta(x, lambda v: ens(v))  # ens returns log(mean over members); TTA averages its softmax
        expected = torch.softmax(torch.log(mean_p) / 2.0, 1)
    assert (expected[:, 1] - mean_p[:, 1]).abs().max() > 1e-4  # the temperature changed the probabilities
    got = {Path(r["file_name"]).name: float(r["prob_pneumonia"]) for r in rows}
    for d, e in zip(data, expected[:, 1].tolist()):
        assert got[Path(d["image"]).name] == pytest.approx(e, abs=2e-5)
