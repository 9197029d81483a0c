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
"""Recipe ids of ``bundles/xray/configs/train.json``: ``label_smoothing``, ``ema_decay``, ``aug_strength``,
``mixup_alpha``/``cutmix_alpha``/``mix_prob`` and ``layer_decay``/``head_lr_mult``."""

from __future__ import annotations

import json

import pytest
import torch

from tests.utils import REPO_ROOT

__all__: list[str] = []

TRAIN = REPO_ROOT / "bundles" / "xray" / "configs" / "train.json"
TINY = {"max_items": 16, "image_size": 32, "batch_size": 8, "n_bootstrap": 0, "device": "cpu"}


def _parser(**override):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(TRAIN))
    parser.update(pairs={**TINY, **override})
    return parser


def _one_epoch(output_dir, **override):
    """An initialised training workflow: one tiny epoch, batches of 4 (several iterations)."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=str(TRAIN), workflow_type="train", output_dir=str(output_dir), epochs=1,
        **{**TINY, "batch_size": 4, **override},
    )  # fmt: skip
    wf.initialize()
    return wf


def test_defaults_keep_the_previous_augmentation_and_loss():
    p = _parser()
    assert p["label_smoothing"] == 0.0 and p["aug_strength"] == 1.0
    # the CV winner of scripts/bench/recipe_xray.py (benchmarks/results/recipe_xray/summary.json) = accuracy_xray.RECIPE
    assert p["ema_decay"] == 0.99 and p["backbone"] == "tf_efficientnet_lite1"
    keys = ("rotate_range", "scale_range", "shear_range", "translate_range")
    got = {k: p.get_parsed_content(f"train#augmentation#0#{k}") for k in keys}
    assert got == {"rotate_range": 0.17, "scale_range": 0.1, "shear_range": 0.05, "translate_range": 3}
    assert p.get_parsed_content("train#augmentation#2#factors") == 0.1
    assert p.get_parsed_content("train#augmentation#3#gamma") == [0.8, 1.25]
    assert p.get_parsed_content("train#loss_function").label_smoothing == 0.0
    from monai_transfer.handlers.ema import WeightEMA

    assert not any(isinstance(h, WeightEMA) for h in _parser(ema_decay=0.0).get_parsed_content("train#handlers"))


def test_aug_strength_scales_every_magnitude():
    p = _parser(aug_strength=0.5)
    assert p.get_parsed_content("train#augmentation#0#rotate_range") == pytest.approx(0.085)
    assert p.get_parsed_content("train#augmentation#0#translate_range") == pytest.approx(1.5)
    assert p.get_parsed_content("train#augmentation#2#factors") == pytest.approx(0.05)
    assert p.get_parsed_content("train#augmentation#3#gamma") == pytest.approx([0.8**0.5, 1.25**0.5])
    p0 = _parser(aug_strength=0.0)  # strength 0: every random transform is the identity
    assert p0.get_parsed_content("train#augmentation#0#rotate_range") == 0.0
    assert p0.get_parsed_content("train#augmentation#3#gamma") == [1.0, 1.0]


def test_shift_aug_prob_switches_the_acquisition_shift_augmentation():
    """``shift_aug_prob`` (0.3 by default, the fourth recipe round's winner) is the probability of each of the four
    acquisition-shift transforms; 0 gives the recipe before them."""
    names = {"FastRandRicianNoised", "RandGibbsNoised", "FastRandHistogramShiftd", "RandBiasFieldd"}
    for value in (None, 0.0):
        p = _parser() if value is None else _parser(shift_aug_prob=value)
        shift = p.get_parsed_content("train#shift_augmentation")
        assert not any(type(t).__name__ in names for t in p.get_parsed_content("train#augmentation"))
        assert all(t in p.get_parsed_content("train#preprocessing").transforms for t in shift)
        assert {type(t).__name__ for t in shift} == names
        assert all(t.prob == pytest.approx(0.3 if value is None else 0.0) for t in shift)


def test_label_smoothing_reaches_the_loss():
    p = _parser(label_smoothing=0.1)
    loss = p.get_parsed_content("train#loss_function")
    assert loss.label_smoothing == 0.1
    logits, y = torch.tensor([[4.0, -4.0]]), torch.tensor([[0]])
    plain = _parser().get_parsed_content("train#loss_function")
    assert float(loss(logits, y)) > float(plain(logits, y))  # a confident correct prediction costs more


def test_ema_run_saves_the_averaged_weights(tmp_path):
    """One tiny epoch with ``ema_decay``: the best model saved at validation is the EMA, not the live weights."""
    from monai_transfer.handlers.ema import WeightEMA

    wf = _one_epoch(tmp_path, ema_decay=0.9)
    ema = [h for h in wf.parser.get_parsed_content("train#handlers") if isinstance(h, WeightEMA)]
    assert len(ema) == 1 and ema[0].decay == 0.9
    wf.run()
    saved = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    averaged = ema[0].averaged.module.state_dict()
    last = torch.load(next((tmp_path / "models" / "last").glob("*.pt")), map_location="cpu", weights_only=False)
    live = last["network"]  # the live weights at the end of the epoch
    floats = [k for k, v in averaged.items() if v.is_floating_point()]
    assert all(torch.allclose(saved[k], averaged[k]) for k in floats)  # the saved best model is the average
    assert any(not torch.allclose(live[k], averaged[k]) for k in floats)  # which differs from the live weights
    wf.finalize()


def test_mixing_is_off_by_default_and_configured_by_its_ids():
    from monai_transfer.handlers.mixing import MixBatchHandler

    p = _parser()
    assert (p["mixup_alpha"], p["cutmix_alpha"], p["mix_prob"]) == (0.0, 0.0, 1.0)
    assert not any(isinstance(h, MixBatchHandler) for h in p.get_parsed_content("train#handlers"))
    on = _parser(cutmix_alpha=1.0, mix_prob=0.5, seed=7)
    (mixer,) = [h for h in on.get_parsed_content("train#handlers") if isinstance(h, MixBatchHandler)]
    assert (mixer.seed, mixer.mixer.cutmix_alpha, mixer.mixer.prob, mixer.mixer.one_hot) == (7, 1.0, 0.5, True)
    assert on.get_parsed_content("run_values")["cutmix_alpha"] == 1.0


def test_discriminative_learning_rate_reaches_the_optimizer():
    p = _parser(layer_decay=0.5, head_lr_mult=10.0, learning_rate=0.01)
    assert p.get_parsed_content("run_values")["head_lr_mult"] == 10.0
    lrs = sorted({g["lr"] for g in p.get_parsed_content("train#optimizer").param_groups})
    assert lrs[-1] == pytest.approx(0.1) and lrs[0] < 0.01  # head at 10x, early stages decayed


def test_mixup_run_trains_on_soft_targets(tmp_path):
    """One tiny epoch with MixUp and CutMix: the trainer's batches hold mixed soft targets; the run completes."""
    from ignite.engine import Events

    wf = _one_epoch(tmp_path, mixup_alpha=0.4, cutmix_alpha=1.0)
    seen = []
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.batch[0]["label"]))
    wf.run()
    assert seen and all(t.shape == (2,) and float(t.sum()) == pytest.approx(1.0) for t in seen)
    assert any(0.0 < float(t[0]) < 1.0 for t in seen)  # some targets are mixed
    assert (tmp_path / "models" / "model.pt").is_file()
    exported = json.loads((tmp_path / "configs" / "train.json").read_text())  # the run folder carries the recipe
    assert (exported["mixup_alpha"], exported["cutmix_alpha"]) == (0.4, 1.0)
    wf.finalize()
