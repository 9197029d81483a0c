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
"""The recipe ids that ``bundles/ct_slices`` shares with ``bundles/xray`` (issue #29) mean the same in both bundles:
``ema_decay`` (weight EMA evaluated at validation; <= 0 off), ``label_smoothing`` (of the loss), ``aug_strength``
(multiplies every magnitude of the random affine; 0: identity) and ``head_lr_mult`` (head learning rate =
``learning_rate`` x it)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.utils import REPO_ROOT

__all__: list[str] = []

BUNDLES = ("xray", "ct_slices")
SHARED_IDS = ("ema_decay", "label_smoothing", "aug_strength", "head_lr_mult")
TINY = {"max_items": 8, "image_size": 32, "batch_size": 4, "n_bootstrap": 0, "device": "cpu", "duplicates": "off"}
#: the magnitude keys of the random affine that ``aug_strength`` scales in both bundles
AFFINE_KEYS = ("rotate_range", "scale_range", "translate_range")


def _train(bundle: str) -> dict:
    return json.loads((REPO_ROOT / "bundles" / bundle / "configs" / "train.json").read_text(encoding="utf-8"))


def _parser(bundle: str, **override):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / bundle / "configs" / "train.json"))
    parser.update(pairs={**TINY, **override})
    return parser


def _affine(parser) -> dict:
    (i,) = [i for i, t in enumerate(parser["train#augmentation"]) if t["_target_"].endswith("RandAffined")]
    return {k: parser.get_parsed_content(f"train#augmentation#{i}#{k}") for k in AFFINE_KEYS}


def _ema_handler(config: dict) -> dict:
    (h,) = [h for h in config["train"]["handlers"] if h["_target_"] == "monai_transfer.handlers.ema.WeightEMA"]
    return h


def test_shared_ids_are_plain_settings_with_the_same_neutral_defaults():
    """Plain numbers in both configs (so ``run_values`` forwards them to the folds); the neutral values agree: no
    smoothing, the bundle's own augmentation, the head at the body's learning rate. ``ema_decay`` is 0.99 in both:
    each bundle's CV winner (xray's recipe round, ct_slices' volume round)."""
    configs = {b: _train(b) for b in BUNDLES}
    for b, c in configs.items():
        assert all(isinstance(c[k], float) for k in SHARED_IDS), b
        assert (c["label_smoothing"], c["aug_strength"], c["head_lr_mult"]) == (0.0, 1.0, 1.0), b
    assert configs["ct_slices"]["ema_decay"] == configs["xray"]["ema_decay"] == 0.99
    # the EMA handler is the same component, wired and switched off the same way
    assert _ema_handler(configs["xray"]) == _ema_handler(configs["ct_slices"])
    for b in BUNDLES:
        settings = _parser(b).get_parsed_content("run_values")
        assert set(SHARED_IDS) <= set(settings), b


@pytest.mark.parametrize("bundle", BUNDLES)
def test_aug_strength_scales_the_affine_magnitudes(bundle):
    base = _affine(_parser(bundle))
    half = _affine(_parser(bundle, aug_strength=0.5))
    assert half == pytest.approx({k: 0.5 * v for k, v in base.items()})
    assert all(v == 0 for v in _affine(_parser(bundle, aug_strength=0.0)).values())  # 0: the identity
    assert all(v > 0 for v in base.values())


@pytest.mark.parametrize("bundle", BUNDLES)
def test_label_smoothing_and_head_lr_mult_reach_loss_and_optimizer(bundle):
    p = _parser(bundle, label_smoothing=0.1, head_lr_mult=10.0, learning_rate=0.01, weights="none")
    loss = p.get_parsed_content("train#loss_function")
    assert loss.label_smoothing == 0.1
    logits, y = torch.tensor([[4.0, -4.0]]), torch.tensor([[0]])
    plain = _parser(bundle).get_parsed_content("train#loss_function")
    assert float(loss(logits, y)) > float(plain(logits, y))  # a confident correct prediction costs more
    lrs = sorted({g["lr"] for g in p.get_parsed_content("train#optimizer").param_groups})
    assert lrs[-1] == pytest.approx(0.1) and lrs[0] == pytest.approx(0.01)  # the head at 10x, the body at lr


@pytest.mark.parametrize("bundle", BUNDLES)
def test_ema_decay_switches_the_weight_average(bundle):
    from monai_transfer.handlers.ema import WeightEMA

    p = _parser(bundle, ema_decay=0.9, weights="none")
    (ema,) = [h for h in p.get_parsed_content("train#handlers") if isinstance(h, WeightEMA)]
    assert ema.decay == 0.9 and ema.evaluator is p.get_parsed_content("validate#evaluator")
    off = _parser(bundle, ema_decay=0.0, weights="none").get_parsed_content("train#handlers")
    assert not any(isinstance(h, WeightEMA) for h in off)


def test_ct_slices_ema_run_saves_the_averaged_weights(tmp_path):
    """One tiny ct_slices epoch with ``ema_decay``: the best model saved at validation is the average."""
    from monai.bundle import ConfigWorkflow

    from monai_transfer.handlers.ema import WeightEMA

    wf = ConfigWorkflow(
        config_file=str(REPO_ROOT / "bundles" / "ct_slices" / "configs" / "train.json"), workflow_type="train",
        output_dir=str(tmp_path), epochs=1, **{**TINY, "train_slices": 2, "val_slices": 2, "weights": "none",
                                                "ema_decay": 0.9, "cache_rate": 0.0},
    )  # fmt: skip
    wf.initialize()
    (ema,) = [h for h in wf.parser.get_parsed_content("train#handlers") if isinstance(h, WeightEMA)]
    wf.run()
    saved = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    averaged = ema.averaged.module.state_dict()
    floats = [k for k, v in averaged.items() if v.is_floating_point()]
    assert all(torch.allclose(saved[k], averaged[k]) for k in floats)
    wf.finalize()
