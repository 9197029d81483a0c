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
"""Bundle-config hygiene (issues #17, #27): short expressions, full dotted ``_target_`` paths, no list-position
overrides, each setting said once.

Long ``$`` expressions become ``_target_`` components (MONAI calls a function target with the keys as keyword
arguments) or small library helpers; short names such as ``"Compose"`` become ``"monai.transforms.Compose"``. The
training configs stay within a line and ``$`` budget: what both bundles share lives in ``monai_transfer`` (the
training run, the logging handlers, the transform sequences), and the lists of settings that the run folder, the
report and the cross-validation folds need are derived from the config (``run_values``), never typed again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from monai.utils.module import locate

from tests.utils import REPO_ROOT

MAX_EXPRESSION = 120
#: ``(lines, "$ occurrences)`` at most, per training config (the model-zoo spleen bundle: 307 lines, 20 ``$``)
SIZE_LIMITS = {
    # xray: + shift_aug_prob and the train#shift_augmentation component (monai_transfer.transforms.pipelines), #31
    "bundles/xray/configs/train.json": (405, 45),
    # ct_slices: + the recipe ids of xray (ema_decay, label_smoothing, aug_strength, head_lr_mult; the EMA handler), #29
    "bundles/ct_slices/configs/train.json": (410, 45),
}
#: more bare references than this in one plain dict make it a hand-kept copy of a list of ids
MAX_ECHOED_IDS = 3

CONFIG_FILES = [
    "bundles/xray/configs/train.json",
    "bundles/xray/configs/multi_gpu_train.json",
    "bundles/xray/configs/train_cv.json",
    "bundles/ct_slices/configs/train_cv.json",
    "bundles/ct_slices/configs/train.json",
    "bundles/ct_slices/configs/multi_gpu_train.json",
    "bundles/xray/configs/inference.json",
    "bundles/xray/configs/evaluate.json",
    "bundles/ct_slices/configs/inference.json",
    "bundles/ct_slices/configs/evaluate.json",
]


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, str | None, Any]]:
    """``(config id, key, value)`` of every leaf and every dict key of a parsed JSON config."""
    if isinstance(node, dict):
        for k, v in node.items():
            sub = f"{path}#{k}" if path else k
            yield sub, k, v
            yield from _walk(v, sub)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            sub = f"{path}#{i}"
            yield sub, None, v
            yield from _walk(v, sub)


def _load(rel: str) -> dict[str, Any]:
    return json.loads((REPO_ROOT / rel).read_text(encoding="utf-8"))


def _long_expressions(config: Any) -> dict[str, int]:
    """``{id: length}`` of the ``$`` expressions over :data:`MAX_EXPRESSION` characters."""
    return {
        i: len(v)
        for i, _, v in _walk(config)
        if isinstance(v, str) and v.startswith("$") and len(v) > MAX_EXPRESSION
    }  # fmt: skip


def _bad_targets(config: Any) -> dict[str, Any]:
    """``{id: target}`` of the ``_target_`` values that are not a dotted path importing to a callable."""
    bad = {}
    for i, k, v in _walk(config):
        if k == "_target_" and not (isinstance(v, str) and "." in v and callable(locate(v))):
            bad[i] = v
    return bad


def _indexed_disabled(config: Any) -> list[str]:
    """Keys that disable a component through a list position, such as ``train#handlers#4#_disabled_``."""
    return [
        k
        for _, k, _ in _walk(config)
        if k is not None and k.endswith("_disabled_") and any(re.fullmatch(r"\d+", s) for s in k.split("#"))
    ]


def _echo_lists(config: Any) -> dict[str, list[str]]:
    """``{id: [referenced ids]}`` of the plain dicts (not components) that map more than :data:`MAX_ECHOED_IDS` keys
    to bare references of top-level ids, such as ``{"epochs": "@epochs", "seed": "@seed", ...}``: a list of ids kept
    by hand beside the ids themselves."""
    out = {}
    for i, _, v in [("", None, config), *_walk(config)]:
        if isinstance(v, dict) and "_target_" not in v:
            refs = [x[1:] for x in v.values() if isinstance(x, str) and re.fullmatch(r"@\w+", x)]
            if len(refs) > MAX_ECHOED_IDS:
                out[i] = refs
    return out


def test_walk_reports_ids_as_monai_writes_them():
    config = {"a": {"b": ["$x", {"_target_": "monai.transforms.Compose"}]}}
    assert {i for i, _, _ in _walk(config)} == {"a", "a#b", "a#b#0", "a#b#1", "a#b#1#_target_"}


def test_checks_reject_the_old_style():
    """What the configs used to hold fails each check (so the per-file tests can fail)."""
    old = {
        "datalists": "$monai_transfer.data.bundle_data.bundle_datalists(" + ", ".join(["x=@x"] * 30) + ")",
        "network": "$@network_def.to(@device)",
        "train#handlers#4#_disabled_": "$not @is_main_rank",
        "validate#dataset": {"_target_": "CacheDataset"},
        "validate#sampler": {"_target_": "monai.data.NoSuchSampler", "_disabled_": "$not @is_main_rank"},
        "validate#inferer": {"_target_": "monai.inferers.SimpleInferer"},
    }
    assert list(_long_expressions(old)) == ["datalists"]
    assert _bad_targets(old) == {
        "validate#dataset#_target_": "CacheDataset",
        "validate#sampler#_target_": "monai.data.NoSuchSampler",
    }
    assert _indexed_disabled(old) == ["train#handlers#4#_disabled_"]
    echoed = {
        "run_values": {"seed": "@seed", "epochs": "@epochs", "backbone": "@backbone", "image_size": "@image_size"},
        "cv_options": {"folds": "@cv_folds", "calibrate": "@cv_calibrate", "final_fit": "@cv_final_fit",
                       "group_key": "@cv_group_key"},
        "network_def": {"_target_": "x.Net", "backbone": "@backbone", "head": "@head", "dropout": "@dropout",
                        "weights": "@weights"},  # a component's wiring is not a copied list
        "save_dict": {"network": "@network", "optimizer": "@train#optimizer", "trainer": "@train#trainer",
                      "lr_scheduler": "@train#lr_scheduler"},  # sub-ids: not a list of settings
    }  # fmt: skip
    assert sorted(_echo_lists(echoed)) == ["cv_options", "run_values"]


@pytest.mark.parametrize("rel", CONFIG_FILES)
def test_no_long_expressions(rel):
    """Every ``$`` expression fits in 120 characters (longer logic is a component or a library helper)."""
    assert not _long_expressions(_load(rel)), f"{rel}: expressions over {MAX_EXPRESSION} characters"


@pytest.mark.parametrize("rel", CONFIG_FILES)
def test_targets_are_full_dotted_paths_that_import(rel):
    bad = _bad_targets(_load(rel))
    assert not bad, f"{rel}: _target_ values that are not full dotted paths to something callable: {bad}"


@pytest.mark.parametrize("rel", CONFIG_FILES)
def test_no_position_indexed_disabled_keys(rel):
    """``_disabled_`` lives in the component it disables, never behind a list position such as ``handlers#4``."""
    indexed = _indexed_disabled(_load(rel))
    assert not indexed, f"{rel}: position-indexed _disabled_ keys: {indexed}"


@pytest.mark.parametrize("bundle", ["xray", "ct_slices"])
def test_inference_input_dir_is_searched_recursively_and_must_hold_images(bundle, tmp_path):
    """``inference.json --input_dir``: images in sub-folders are found; a folder with none fails with its name (it
    used to end with exit 0 and no ``predictions.csv``)."""
    from monai.bundle import ConfigParser

    from monai_transfer.data.datalist import DatalistError

    ext = ".png" if bundle == "xray" else ".nii.gz"
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / bundle / "configs" / "inference.json"))
    (tmp_path / "empty").mkdir()
    parser["input_dir"] = str(tmp_path / "empty")
    with pytest.raises(Exception) as info:  # MONAI wraps the error of the expression it evaluates
        parser.get_parsed_content("datalist")
    chain = [info.value, info.value.__cause__, info.value.__context__]
    assert any(isinstance(e, DatalistError) and str(tmp_path / "empty") in str(e) for e in chain)
    (tmp_path / "nested" / "site_a").mkdir(parents=True)
    (tmp_path / "nested" / "site_a" / f"case{ext}").write_bytes(b"x")
    parser["input_dir"] = str(tmp_path / "nested")
    parser.parse(reset=True)
    assert parser.get_parsed_content("datalist") == [{"image": str(tmp_path / "nested" / "site_a" / f"case{ext}")}]


#: ids that define the model and its input: every config of a bundle that sets one must set the same value (they are
#: spelled in each file because MONAI resolves ``%file`` macros against the working directory and MONAI Label reads
#: one config file per task; this test is what keeps the copies one value)
MODEL_IDS = ("class_names", "num_classes", "backbone", "head", "dropout", "image_size", "slice_axis", "slice_offsets")


@pytest.mark.parametrize("bundle", ["xray", "ct_slices"])
def test_model_ids_agree_across_configs(bundle):
    configs = {
        p.name: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((REPO_ROOT / "bundles" / bundle / "configs").glob("*.json"))
        if p.name != "metadata.json"
    }
    train = configs["train.json"]
    assert {"backbone", "image_size", "class_names"} <= set(train)
    for name, cfg in configs.items():
        differ = {k: (cfg[k], train[k]) for k in MODEL_IDS if k in cfg and k in train and cfg[k] != train[k]}
        assert not differ, f"bundles/{bundle}/configs/{name} disagrees with train.json on {differ}"
    assert configs["inference.json"]["backbone"] == train["backbone"]


@pytest.mark.parametrize("rel", CONFIG_FILES)
def test_configs_are_formatted_as_monai_writes_them(rel):
    """``json.dumps(indent=4)`` (MONAI's ``export_config_file`` and the model zoo): the line counts mean the same
    in every file."""
    text = (REPO_ROOT / rel).read_text(encoding="utf-8")
    assert text.rstrip("\n") == json.dumps(json.loads(text), indent=4), f"{rel}: not json.dumps(config, indent=4)"


@pytest.mark.parametrize("rel", sorted(SIZE_LIMITS))
def test_training_configs_stay_within_their_size(rel):
    text = (REPO_ROOT / rel).read_text(encoding="utf-8")
    lines, dollars = len(text.splitlines()), text.count('"$')
    max_lines, max_dollars = SIZE_LIMITS[rel]
    assert lines <= max_lines, f"{rel}: {lines} lines (at most {max_lines}): move shared logic into monai_transfer"
    assert dollars <= max_dollars, f"{rel}: {dollars} $ expressions (at most {max_dollars})"


@pytest.mark.parametrize("rel", CONFIG_FILES)
def test_no_id_list_kept_by_hand(rel):
    """No config repeats a list of its own ids: the run's settings are ``run_values`` (derived from the config by
    ``monai_transfer.bundle_components.run_settings``), which the run folder, the report and the folds all take."""
    echoed = _echo_lists(_load(rel))
    assert not echoed, f"{rel}: hand-kept lists of ids {echoed}; derive them (run_values)"


@pytest.mark.parametrize("bundle", ["xray", "ct_slices"])
def test_settings_lists_are_derived(bundle):
    configs = REPO_ROOT / "bundles" / bundle / "configs"
    train = json.loads((configs / "train.json").read_text(encoding="utf-8"))
    evaluate = json.loads((configs / "evaluate.json").read_text(encoding="utf-8"))
    assert train["run_values"]["_target_"] == "monai_transfer.bundle_components.run_settings"
    assert set(train["run_values"]) <= {"_target_", "derived", "extra"}  # exceptions only, never the settings
    assert train["validate"]["report_writer"]["meta"]["config"] == "@run_values"
    assert evaluate["validate#report_writer#meta"]["config"].startswith("$dict(@run_values,")
    assert train["run"][1]["values"] == "@run_values"  # the run folder's configs
    if (configs / "train_cv.json").is_file():
        assert json.loads((configs / "train_cv.json").read_text(encoding="utf-8"))["cv_summary"]["settings"] == (
            "@run_values"
        )
