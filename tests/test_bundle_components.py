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
"""``monai_transfer.bundle_components``: settings derived from the config, the shared training run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import EarlyStopHandler, ValidationHandler, stopping_fn_from_metric
from monai.transforms import Activationsd, Compose
from torch import nn

from monai_transfer.bundle_components import (
    INVOCATION_IDS,
    current_parser,
    local_rank_device,
    run_settings,
    setting_ids,
    start_run,
    train_and_report,
)
from monai_transfer.handlers.checkpoint import AtomicCheckpointSaver, HandlerStates
from monai_transfer.handlers.metric_handlers import AUCHandler
from monai_transfer.utils.io import safe_torch_load
from tests.utils import REPO_ROOT

XRAY = REPO_ROOT / "bundles" / "xray"


def _bundle(root: Path, config: dict) -> Path:
    """A bundle folder whose ``configs/train.json`` is ``config`` (its ``bundle_root`` is the folder)."""
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "train.json").write_text(json.dumps({"bundle_root": str(root), **config}))
    return root


def test_setting_ids_are_the_plain_top_level_values():
    config = {
        "bundle_root": "/somewhere", "epochs": 6, "lr": 1e-3, "names": ["a", "b"], "none": None, "flag": False,
        "expr": "$@epochs + 1", "ref": "@epochs", "macro": "%epochs", "net": {"_target_": "torch.nn.Identity"},
        "section": {"a": 1}, "steps": ["$print(1)"], "imports": ["$import os"], "run": [], "finalize": [],
    }  # fmt: skip
    assert setting_ids(config) == ["epochs", "lr", "names", "none", "flag"]


def test_run_settings_are_derived_from_the_config_not_listed(tmp_path):
    """Every plain top-level id of the training config is a setting, with the run's value (command-line overrides
    included); an override that replaces an expression (``device``) does not make it one; ``derived`` ids are
    evaluated, ``skip`` and the invocation switches left out, ``extra`` added under its own names."""
    config = {
        "epochs": 6, "lr": 0.1, "names": ["a", "b"], "resume": False, "export_samples": 4,
        "mode": "$'binary' if len(@names) == 2 else 'multiclass'", "device": "$'cpu'", "output_dir": "$'/tmp'",
        "net": {"_target_": "torch.nn.Identity"},
        "run_values": {"_target_": "monai_transfer.bundle_components.run_settings", "derived": ["mode"],
                       "extra": {"alias": "@lr"}},
    }  # fmt: skip
    bundle = _bundle(tmp_path / "b", config)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.update({"epochs": 2, "device": "cuda:3", "output_dir": "/elsewhere", "names": ["x", "y", "z"]})
    values = parser.get_parsed_content("run_values")
    assert values == {"epochs": 2, "lr": 0.1, "names": ["x", "y", "z"], "mode": "multiclass", "alias": 0.1}
    assert set(INVOCATION_IDS) == {"resume", "export_samples"}

    # a new setting needs no other edit: it is in the run's values as soon as train.json sets it
    config["label_smoothing"] = 0.1
    (bundle / "configs" / "train.json").write_text(json.dumps({"bundle_root": str(bundle), **config}))
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    assert parser.get_parsed_content("run_values")["label_smoothing"] == 0.1
    # from plain Python: an explicit parser, the same values; skip= overrides the default switches
    assert run_settings(skip=(), parser=parser)["resume"] is False


def test_run_settings_errors_name_the_file_and_the_id(tmp_path):
    bundle = _bundle(tmp_path / "b", {"epochs": 1})
    parser = ConfigParser({"bundle_root": str(tmp_path / "nowhere"), "epochs": 1})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_settings(parser=parser)
    parser = ConfigParser({"bundle_root": str(bundle), "epochs": 1})
    with pytest.raises(KeyError, match="mode"):
        run_settings(derived=["mode"], parser=parser)
    with pytest.raises(RuntimeError, match="parser="):
        current_parser()


def test_xray_run_values_are_every_setting_of_train_json():
    """The shipped bundle: ``run_values`` holds each plain id of train.json (no list to keep in step), the report
    records them, and train_cv.json forwards them to the folds."""
    train = json.loads((XRAY / "configs" / "train.json").read_text())
    parser = ConfigParser()
    parser.read_config(str(XRAY / "configs" / "train.json"))
    parser.update({"max_items": 8, "device": "cpu"})
    values = parser.get_parsed_content("run_values")
    expected = [k for k in setting_ids(train) if k not in INVOCATION_IDS]
    assert list(values) == [k for k in train if k in expected or k in train["run_values"]["derived"]]
    assert values["mode"] == "binary" and values["loss"] == "ce" and values["max_items"] == 8
    assert parser["validate#report_writer#meta#config"] == "@run_values"
    cv = json.loads((XRAY / "configs" / "train_cv.json").read_text())
    assert cv["cv_summary"]["settings"] == "@run_values"


def test_a_new_xray_setting_reaches_the_run_folder_report_and_folds(tmp_path, monkeypatch):
    """Adding a top-level setting to the bundle's train.json is the only edit needed: the run values (run folder,
    report) and the cross-validation overrides carry it."""
    import monai_transfer.cv.run as cv_module

    bundle = tmp_path / "xray"
    shutil.copytree(XRAY / "configs", bundle / "configs")
    train = json.loads((bundle / "configs" / "train.json").read_text())
    train["my_new_setting"] = 0.25
    (bundle / "configs" / "train.json").write_text(json.dumps(train))
    calls = []
    monkeypatch.setattr(cv_module, "run_cross_validation", lambda *a, **k: calls.append((a, k)) or {})
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json"), str(bundle / "configs" / "train_cv.json")])
    parser.update({"bundle_root": str(bundle), "dataset_dir": str(XRAY / "data"), "max_items": 8, "device": "cpu"})
    assert parser.get_parsed_content("run_values")["my_new_setting"] == 0.25
    parser.get_parsed_content("cv_summary")
    ((args, kwargs),) = calls
    assert Path(args[0]) == bundle / "configs" / "train.json" and kwargs["my_new_setting"] == 0.25
    # the cross-validation's own options come from the cv_* ids and win over the single run's same-named settings
    assert kwargs["folds"] == 5 and kwargs["calibrate"] is True and kwargs["threshold_method"] == "youden"
    assert kwargs["device"] == "cpu" and kwargs["max_items"] == 8 and "cv_folds" not in kwargs


def _tiny_engines(tmp_path: Path, max_epochs: int):
    """A linear classifier on 16 separable 4x4 images: trainer, evaluator (AUC, best-model saver), handler states."""
    torch.manual_seed(0)
    data = [
        {"image": torch.full((1, 4, 4), float(i % 2)) + 0.1 * torch.randn(1, 4, 4), "label": i % 2} for i in range(16)
    ]
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    best = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True, key_metric_filename="model.pt"
    )
    evaluator = SupervisedEvaluator(
        device="cpu", val_data_loader=DataLoader(data, batch_size=8), network=net,
        postprocessing=Compose([Activationsd("pred", softmax=True)]), key_val_metric={"val_auc": AUCHandler()},
        val_handlers=[best],
    )  # fmt: skip
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=max_epochs, train_data_loader=DataLoader(data, batch_size=8), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=nn.CrossEntropyLoss(),
        train_handlers=[ValidationHandler(1, evaluator)],
    )  # fmt: skip
    early_stop = EarlyStopHandler(patience=5, score_function=stopping_fn_from_metric("val_auc"))
    states = HandlerStates(best_model=best, early_stop=early_stop, evaluator=evaluator)
    return trainer, evaluator, early_stop, states


class _ReportSpy:
    """Stands for the report writer: records the runs it sees and the weights they evaluate."""

    def __init__(self) -> None:
        self.weights: list[dict] = []
        self.engines: list = []

    def attach(self, engine) -> None:
        self.engines.append(engine)
        engine.add_event_handler(Events.COMPLETED, lambda e: self.weights.append(
            {k: v.clone() for k, v in e.network.state_dict().items()}))  # fmt: skip


def test_train_and_report_trains_checkpoints_and_reports_the_best_model(tmp_path):
    trainer, evaluator, early_stop, states = _tiny_engines(tmp_path, max_epochs=2)
    aucs = []
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: aucs.append(e.state.metrics["val_auc"]))
    spy = _ReportSpy()
    train_and_report(trainer, evaluator, spy, tmp_path, handler_states=states, early_stop=early_stop,
                     early_stop_patience=5)  # fmt: skip
    assert trainer.state.epoch == 2
    assert sorted(p.name for p in (tmp_path / "last").iterdir()) == ["checkpoint_epoch=2.pt"]
    ckpt = safe_torch_load(tmp_path / "last" / "checkpoint_epoch=2.pt")
    assert list(ckpt) == ["network", "optimizer", "trainer", "handler_states"]
    # early stopping counted the validations during training (a second epoch that did not beat the first: 1)
    assert len(aucs) == 3 and ckpt["handler_states"]["early_stop"]["counter"] == int(aucs[1] <= aucs[0])
    # early stopping was wired for training only; the report ran once, on the evaluator, with the best model
    assert early_stop._handler.trainer is trainer
    assert not evaluator.has_event_handler(early_stop, Events.EPOCH_COMPLETED)
    best = safe_torch_load(tmp_path / "model.pt")
    assert spy.engines == [evaluator] and len(spy.weights) == 1
    assert all(torch.equal(spy.weights[0][k], best[k]) for k in best)

    # resume: a longer run continues from the last checkpoint (one more epoch of 2 iterations)
    trainer, evaluator, early_stop, states = _tiny_engines(tmp_path, max_epochs=3)
    iterations = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations.append(e.state.iteration))
    report = SupervisedEvaluator(device="cpu", val_data_loader=evaluator.data_loader, network=trainer.network)
    spy = _ReportSpy()
    train_and_report(trainer, evaluator, spy, tmp_path, handler_states=states, resume=True, report_evaluator=report)
    assert iterations == [5, 6] and trainer.state.epoch == 3
    assert spy.engines == [report]  # the report pass of another evaluator (multi_gpu_train.json's rank-0 one)
    assert not evaluator.has_event_handler(early_stop, Events.EPOCH_COMPLETED)  # patience 0: never attached
    assert safe_torch_load(tmp_path / "last" / "checkpoint_epoch=3.pt")["trainer"]["iteration"] == 6


def test_start_run_and_local_rank_device(tmp_path, monkeypatch):
    assert start_run(tmp_path / "out", 3, "cpu") == 3 and (tmp_path / "out").is_dir()
    assert torch.initial_seed() == 3
    monkeypatch.setenv("LOCAL_RANK", "1")
    expected = torch.device("cuda:1") if torch.cuda.is_available() else "cpu"
    assert local_rank_device() == expected
