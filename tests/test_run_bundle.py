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
"""``monai_transfer.run_bundle``: the run root and the run-folder export."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from monai_transfer.networks.checkpoint_record import model_spec, read_checkpoint_record
from monai_transfer.run_bundle import export_run_bundle, resolve_run_root
from monai_transfer.utils.io import atomic_torch_save
from tests.utils import REPO_ROOT

XRAY = REPO_ROOT / "bundles" / "xray"


def _ckpt(tmp_path, seed=0):
    torch.manual_seed(seed)
    path = tmp_path / "models" / "model.pt"
    atomic_torch_save(torch.nn.Linear(3, 2).state_dict(), path)
    return path


def test_resolve_run_root_follows_config_file_then_cwd_then_export_path(tmp_path, monkeypatch):
    run, moved = tmp_path / "run", tmp_path / "moved"
    for b in (run, moved):
        (b / "configs").mkdir(parents=True)
        (b / "configs" / "metadata.json").write_text("{}")
    monkeypatch.delenv("MONAI_TRANSFER_BUNDLE_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["x"])
    assert resolve_run_root(run) == str(run.resolve())
    monkeypatch.setattr(sys, "argv", ["x", "run", "--config_file", f"['{moved}/configs/inference.json','b.json']"])
    assert resolve_run_root(run) == str(moved.resolve())
    monkeypatch.setattr(sys, "argv", ["x"])
    monkeypatch.chdir(moved)
    assert resolve_run_root(run) == str(moved.resolve())
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(run)
    with pytest.raises(FileNotFoundError, match="--bundle_root"):
        resolve_run_root(run)


def test_export_writes_run_configs_and_leaves_a_template_alone(tmp_path):
    """Export from the xray template (no training): run values replace the template's ids; the template is kept."""
    run = tmp_path / "run"
    ckpt = _ckpt(run)
    images = tmp_path / "data"
    datalists = {"train": [], "val": []}
    for i in range(6):
        src = sorted((XRAY / "data" / "val" / ("normal" if i % 2 else "pneumonia")).glob("*.png"))[i]
        datalists["val"].append({"image": str(src), "label": i % 2})
    values = {"dataset_dir": str(images), "class_names": ["yes", "no"], "image_size": 40, "batch_size": 4}
    spec = model_spec("tf_efficientnet_lite0", ["yes", "no"], 40)
    export_run_bundle(run, XRAY, values=values, spec=spec, datalists=datalists, n_samples=4)
    inf = json.loads((run / "configs" / "inference.json").read_text())
    assert inf["class_names"] == ["yes", "no"] and inf["image_size"] == 40
    assert inf["batch_size"] == 32  # a training-loop setting never replaces the inference one
    assert inf["dataset_dir"] == "@input_dir" and inf["input_dir"] == "$@bundle_root + '/data/samples'"
    assert inf["bundle_root"].startswith("$monai_transfer.run_bundle.resolve_run_root(")
    train = json.loads((run / "configs" / "train.json").read_text())
    assert train["dataset_dir"] == str(images) and train["batch_size"] == 4  # train.json takes every run value
    meta = json.loads((run / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "yes", "1": "no"}
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [40, 40]
    assert "40x40" in meta["image_classes"] and meta["data_source"].startswith(str(images))
    samples = sorted(p.name for p in (run / "data" / "samples").iterdir())
    assert len(samples) == 5 and "labels.csv" in samples
    labels = (run / "data" / "samples" / "labels.csv").read_text().splitlines()
    assert labels[0] == "image,label" and {line.split(",")[1] for line in labels[1:]} == {"yes", "no"}
    readme = (run / "docs" / "README.md").read_text()
    assert (
        "0: `yes`, 1: `no`" in readme
        and "python -m monai.bundle run --config_file $RUN/configs/inference.json" in readme
    )
    assert read_checkpoint_record(ckpt)["class_names"] == ["yes", "no"]
    assert (run / "configs" / "logging.conf").is_file() and (run / "configs" / "evaluate.json").is_file()

    # exporting into the template folder itself only writes the weights record
    template = tmp_path / "template"
    shutil.copytree(XRAY / "configs", template / "configs")
    template_ckpt = _ckpt(template)
    before = {p.name: p.read_bytes() for p in (template / "configs").iterdir()}
    export_run_bundle(template, template, values=values, spec=spec, datalists=datalists)
    assert {p.name: p.read_bytes() for p in (template / "configs").iterdir()} == before
    assert not (template / "docs").exists() and not (template / "data").exists()
    assert read_checkpoint_record(template_ckpt)["image_size"] == 40


def test_export_writes_the_run_mode_over_the_inference_expression(tmp_path):
    """``mode`` is decided by the training's labels: a multi-label run's inference.json says so (the template's
    expression would read 3 classes as multi-class and apply a softmax)."""
    run = tmp_path / "run"
    _ckpt(run)
    names = ["Atelectasis", "Effusion", "Mass"]
    values = {"class_names": names, "mode": "multilabel", "image_size": 32}
    export_run_bundle(run, XRAY, values=values, spec=model_spec("tf_efficientnet_lite0", names, 32), n_samples=0)
    assert json.loads((XRAY / "configs" / "inference.json").read_text())["mode"].startswith("$")
    assert json.loads((run / "configs" / "inference.json").read_text())["mode"] == "multilabel"
    assert json.loads((run / "configs" / "train.json").read_text())["mode"] == "multilabel"


def test_export_describes_the_data_checks_and_writes_current_metadata_names(tmp_path):
    """The run README lists the splits and the data checks (not "audit: None images ()"), and a template that still
    has MONAI's deprecated ``optional_packages_version`` gives a run ``metadata.json`` with only the new name."""
    from monai_transfer.data.bundle_data import SplitDatalists
    from tests.utils import assert_no_deprecated_meta_names

    template = tmp_path / "template"
    shutil.copytree(XRAY / "configs", template / "configs")
    meta = json.loads((template / "configs" / "metadata.json").read_text())
    meta["optional_packages_version"] = {"timm": "1.0.0", "monai_transfer": "0.0.1"}
    meta["required_packages_version"] = {"monai_transfer": "0.1.0"}
    (template / "configs" / "metadata.json").write_text(json.dumps(meta))
    run = tmp_path / "run"
    _ckpt(run)
    audit_dir = run / "audit"
    audit_dir.mkdir(parents=True)
    datalists = SplitDatalists(
        train=[{"image": f"t{i}.png", "label": i % 2} for i in range(6)],
        val=[{"image": f"v{i}.png", "label": i % 2} for i in range(2)],
    )
    summary = {"n_clusters": 2, "n_clusters_across_splits": 1, "n_files_in_clusters_across_splits": 2,
               "n_label_conflicts": 0, "n_unreadable": 0}  # fmt: skip
    datalists.audit = {"duplicates": summary, "report": str(audit_dir / "audit.json")}
    values = {"class_names": ["no", "yes"], "image_size": 32, "dataset_dir": str(tmp_path / "data")}
    export_run_bundle(run, template, values=values, spec=model_spec("tf_efficientnet_lite0", ["no", "yes"], 32),
                      datalists=datalists, n_samples=0)  # fmt: skip
    readme = (run / "docs" / "README.md").read_text()
    assert "- train: 6 images (no: 3, yes: 3)" in readme and "- val: 2 images (no: 1, yes: 1)" in readme
    assert "None images" not in readme and "- audit:" not in readme
    assert "- near-duplicate check: 1 cluster(s) of copies across splits (2 files), 2 cluster(s) in all" in readme
    assert "- audit report: `audit/audit.json`" in readme
    run_meta = json.loads((run / "configs" / "metadata.json").read_text())
    assert "optional_packages_version" not in run_meta
    assert run_meta["required_packages_version"] == {"timm": "1.0.0", "monai_transfer": "0.1.0"}
    assert_no_deprecated_meta_names(run / "configs" / "metadata.json")
