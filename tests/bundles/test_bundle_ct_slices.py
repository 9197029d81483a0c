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
"""The ``bundles/ct_slices`` MONAI bundle: configs, metadata, slice splits, and train -> evaluate -> inference.

Every run writes to a temporary ``output_dir``; nothing is written inside the bundle folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.utils import (
    REPO_ROOT,
    REQUIRED_BUNDLE_META,
    assert_no_deprecated_meta_names,
    assert_png,
    bundle_cli,
    bundle_workflow,
    read_csv,
    torchrun_bundle,
)

__all__: list[str] = []

BUNDLE = REPO_ROOT / "bundles" / "ct_slices"
CONFIGS = BUNDLE / "configs"
META = CONFIGS / "metadata.json"
TRAIN = CONFIGS / "train.json"
EVALUATE = CONFIGS / "evaluate.json"
INFERENCE = CONFIGS / "inference.json"
MULTI_GPU = CONFIGS / "multi_gpu_train.json"
CLASS_NAMES = ["normal", "adrenal_mass"]
VOLUMES = BUNDLE / "data" / "volumes"
# tiny settings for the end-to-end runs (2 shared CPU cores): 6 train + 6 val volumes, 2 slices each, 32x32
TINY = [
    "--epochs", "1", "--max_items", "6", "--image_size", "32", "--train_slices", "2", "--batch_size", "6",
    "--val_slices", "3", "--n_bootstrap", "50", "--device", "cpu",
]  # fmt: skip
# the ids python -m monai_transfer.evaluate reads from inference.json (docs/ARCHITECTURE.md, bundle contract)
CONTRACT_IDS = (
    "bundle_root",
    "class_names",
    "num_classes",
    "network_def",
    "network",
    "volume_preprocessing",
    "slicing",
    "aggregation",
    "preprocessing",
    "postprocessing",
    "ckpt_path",
)


def _parser(config=INFERENCE):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(BUNDLE)
    parser["device"] = "cpu"
    return parser


# ---------------------------------------------------------------------------------------------------------- fast


def test_configs_keep_contract_ids():
    from monai.bundle import ConfigParser

    from monai_transfer.data.volumes import AGGREGATION_METHODS

    inf = _parser(INFERENCE)
    for key in (*CONTRACT_IDS, "dataset_dir", "dataset", "evaluator", "inferer", "threshold_path"):
        assert key in inf, f"inference.json has no '{key}'"
    assert inf["class_names"] == CLASS_NAMES
    assert inf["aggregation"] in AGGREGATION_METHODS
    assert inf["ckpt_path"] == "$@bundle_root + '/models/model.pt'"
    train = _parser(TRAIN)
    for key in ("bundle_root", "device", "class_names", "num_classes", "network_def", "network", "datalists",
                "backbone", "weights", "image_size", "seed", "epochs", "batch_size", "learning_rate", "fine_tune",
                "output_dir", "aggregation", "volume_preprocessing"):  # fmt: skip
        assert key in train, f"train.json has no '{key}'"
    assert train["class_names"] == CLASS_NAMES and train["aggregation"] == inf["aggregation"]
    # the key metric (best checkpoint) is the volume-level AUC, with the same aggregation as the report
    km = train["validate#key_metric"]
    assert list(km) == ["val_volume_auc"]
    assert km["val_volume_auc"]["_target_"].endswith("volume_aggregation.VolumeAggregator")
    assert km["val_volume_auc"]["method"] == "@aggregation"
    assert train["validate#report_writer#method"] == "@aggregation"
    # inference and validation slice the same way by default
    assert inf["slice_offsets"] == train["slice_offsets"] == [-2, 0, 2]
    assert (inf["slice_strategy"], inf["num_slices"]) == (train["val_slice_strategy"], train["val_slices"])
    merged = ConfigParser(ConfigParser.load_config_files([str(TRAIN), str(EVALUATE)]))
    assert merged["ckpt_path"] == "$@ckpt_dir + '/model.pt'"
    assert merged["validate#report_writer#select_threshold_on"] is None  # evaluation never re-selects the threshold
    assert merged["validate#report_writer#threshold"] == "@threshold_path"
    assert not any("trainer.run" in step for step in merged["run"])  # evaluation never trains
    assert merged["train#trainer#max_epochs"] == "@epochs"  # train.json ids are kept


def test_metadata_required_keys_and_channel_def():
    meta = json.loads(META.read_text())
    missing = [k for k in REQUIRED_BUNDLE_META if k not in meta]
    assert not missing, f"metadata.json lacks {missing}"
    nd = meta["network_data_format"]
    assert list(nd["outputs"]["pred"]["channel_def"].values()) == CLASS_NAMES
    assert nd["outputs"]["pred"]["num_channels"] == len(CLASS_NAMES)
    assert nd["inputs"]["image"]["num_channels"] == 3 == len(_parser(TRAIN)["slice_offsets"])
    assert nd["inputs"]["image"]["spatial_shape"] == [64, 64] == [_parser(TRAIN)["image_size"]] * 2
    assert meta["version"] in meta["changelog"]
    assert "monai_transfer" in meta["required_packages_version"] and "timm" in meta["required_packages_version"]
    assert_no_deprecated_meta_names(META)


def test_inference_volume_to_network_ready_slices():
    parser = _parser(INFERENCE)
    vol_pre, slicing, pre = (parser.get_parsed_content(k) for k in ("volume_preprocessing", "slicing", "preprocessing"))
    path = str(VOLUMES / "adrenal_val_0000.nii.gz")
    vol = vol_pre({"image": path})
    assert tuple(vol["image"].shape) == (1, 64, 64, 64)
    assert float(vol["image"].min()) == 0.0 and float(vol["image"].max()) == 1.0
    slices = slicing(vol)
    n = parser["num_slices"]
    assert isinstance(slices, list) and len(slices) == n
    assert [s["slice_index"] for s in slices] == list(range(32 - n // 2, 32 + n - n // 2))
    for s in slices:
        assert s["source_id"] == path
        assert tuple(s["image"].shape) == (3, 64, 64) and s["image"].dtype == torch.float32
        assert torch.isfinite(s["image"]).all()
    # preprocessing = volume_preprocessing + slicing
    full = pre({"image": path})
    assert len(full) == n
    for a, b in zip(full, slices):
        torch.testing.assert_close(a["image"].as_tensor(), b["image"].as_tensor())
    # the network maps the slices to class logits
    net = parser.get_parsed_content("network_def")
    with torch.no_grad():
        out = net.eval()(torch.stack([s["image"].as_tensor() for s in slices]))
    assert tuple(out.shape) == (n, 2)
    data = parser.get_parsed_content("datalist")
    assert len(data) == len(list(VOLUMES.glob("*.nii.gz"))) and all(d["image"].endswith(".nii.gz") for d in data)


def test_small_training_split_caps_the_volume_batch_with_a_warning(caplog):
    """5 training volumes at the defaults (batch_size 32 = 8 volumes of 4 slices, incomplete batches dropped): the
    training loader batches the 5 volumes, with a warning naming --batch_size and the split size."""
    import logging

    parser = _parser(TRAIN)
    parser.update({"max_items": 5, "duplicates": "off", "cache": "none"})
    assert (parser["batch_size"], parser["train_slices"]) == (32, 4)  # the defaults
    with caplog.at_level(logging.WARNING, logger="monai_transfer.engines.utils"):
        loader = parser.get_parsed_content("train#dataloader")
    assert loader.batch_size == 5 and loader.drop_last and len(loader) == 1
    msgs = [r.getMessage() for r in caplog.records]
    want = "--batch_size 32 (8 volumes of 4 slices) is larger than the training split (5 volumes)"
    assert any(want in m for m in msgs), msgs


def test_bundle_slices_never_cross_splits(tmp_path):
    """The bundle's own train and validation chains give slices of disjoint volume sets (source_id)."""
    from monai_transfer.data.volumes import check_disjoint_sources, slice_datalist

    parser = _parser(TRAIN)
    parser["max_items"] = 4
    datalists = parser.get_parsed_content("datalists")
    train_pre, val_pre = (
        parser.get_parsed_content("train#preprocessing"),
        parser.get_parsed_content("validate#preprocessing"),
    )
    slices = {
        "train": slice_datalist(datalists["train"], None, train_pre),
        "val": slice_datalist(datalists["val"], None, val_pre),
    }
    assert len(slices["train"]) == 4 * parser["train_slices"]
    assert len(slices["val"]) == 4 * parser["val_slices"]
    src = check_disjoint_sources(slices)
    assert src["train"] == {x["image"] for x in datalists["train"]}
    assert src["val"] == {x["image"] for x in datalists["val"]}
    for s in slices["train"]:
        assert tuple(s["image"].shape) == (3, 64, 64)
        # random_n from the foreground pool: the centre channel of every training slice holds foreground
        assert s["slice_axis"] == "axial" and 0 <= s["slice_index"] < 64


def test_check_properties_train_and_inference(tmp_path):
    train = bundle_workflow(
        CONFIGS,
        TRAIN,
        "train",
        output_dir=str(tmp_path / "run"),
        max_items=4,
        image_size=32,
        device="cpu",
        cache="none",
    )
    train.initialize()
    assert train.check_properties() == []
    assert len(train.train_dataset_data) == 4
    assert train.max_epochs == 6
    train.finalize()
    folder = tmp_path / "vols"
    folder.mkdir()
    for p in sorted(VOLUMES.glob("adrenal_val_000*.nii.gz"))[:2]:
        shutil.copy(p, folder / p.name)
    out = str(tmp_path / "infer")
    infer = bundle_workflow(CONFIGS, INFERENCE, "infer", input_dir=str(folder), output_dir=out, device="cpu")
    infer.initialize()
    assert infer.check_properties() == []
    assert len(infer.dataset) == 2
    infer.finalize()


# ---------------------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_train_evaluate_infer_end_to_end(tmp_path):
    from monai_transfer.networks.nets import Pretrained2DNet
    from monai_transfer.utils.io import safe_torch_load

    run = tmp_path / "run"
    train_cfg = str(TRAIN.relative_to(REPO_ROOT))
    # 1. train: best checkpoint by volume AUC, threshold chosen on volume probabilities, volume-level val report
    proc = bundle_cli("run", "--config_file", train_cfg, *TINY, "--output_dir", str(run))
    assert "val_volume_auc" in proc.stdout + proc.stderr
    model_pt, thr_file = run / "models" / "model.pt", run / "models" / "threshold.json"
    state = safe_torch_load(model_pt)
    assert isinstance(state, dict) and "head.1.weight" in state  # a plain state dict
    net = Pretrained2DNet(weights="none", num_classes=2, in_channels=3)
    net.load_state_dict(state)
    thr = json.loads(thr_file.read_text())
    assert 0.0 <= thr["threshold"] <= 1.0 and thr["method"] == "youden"
    assert thr["n_samples"] == 6  # selected on the 6 val VOLUMES, not on slices
    assert (run / "models" / "last" / "checkpoint_epoch=1.pt").is_file()
    assert list((run / "logs").glob("events.out.tfevents.*"))
    val_metrics = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert val_metrics["n_samples"] == 6 and val_metrics["meta"]["aggregation"]["n_slices"] == 6 * 3

    # 2. evaluate: no training, stored threshold, one row per volume
    mtime = model_pt.stat().st_mtime_ns
    configs = f"['{train_cfg}','{EVALUATE.relative_to(REPO_ROOT)}']"
    bundle_cli("run", "--config_file", configs, *TINY, "--output_dir", str(run), "--gradcam_cases", "2")
    assert model_pt.stat().st_mtime_ns == mtime, "evaluate.json must not train or overwrite model.pt"
    report = run / "eval" / "val"
    metrics = json.loads((report / "metrics.json").read_text())
    for key in ("metrics", "metrics_at_0.5", "confidence_intervals", "threshold", "meta", "class_names", "counts"):
        assert key in metrics, f"metrics.json lacks {key}"
    assert metrics["threshold"]["value"] == pytest.approx(thr["threshold"])
    assert metrics["threshold"]["source"] == f"file {thr_file}"
    assert metrics["class_names"] == CLASS_NAMES and metrics["meta"]["split"] == "val"
    assert metrics["n_samples"] == 6
    assert metrics["meta"]["aggregation"] == {
        "level": "volume", "method": "mean", "k": None, "n_volumes": 6, "n_slices": 18,
        "volume_platt": None,  # a train.json run fits no calibration: no Platt step
    }  # fmt: skip
    assert set(metrics["confidence_intervals"]) == {"auc", "sensitivity", "specificity"}
    assert 0.0 <= metrics["metrics"]["auc"] <= 1.0
    rows = read_csv(report / "predictions.csv")
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6
    assert all(r["id"].endswith(".nii.gz") for r in rows)
    for png in ("roc.png", "confusion_matrix.png", "reliability.png"):
        assert_png(report / png)
    cams = sorted((report / "gradcam").glob("gradcam_*_slice*.png"))  # central slice of the first 2 volumes
    assert len(cams) == 2
    for c in cams:
        assert_png(c)

    # 3. inference on a folder of NIfTI volumes (a stray CSV is ignored): one prediction per volume
    images = tmp_path / "volumes"
    images.mkdir()
    names = [p.name for p in sorted(VOLUMES.glob("adrenal_val_00*.nii.gz"))[:3]]
    for n in names:
        shutil.copy(VOLUMES / n, images / n)
    (images / "labels.csv").write_text("image,label\n")
    out = tmp_path / "infer"
    bundle_cli(
        "run", "--config_file", str(INFERENCE.relative_to(REPO_ROOT)), "--input_dir", str(images),
        "--ckpt_path", str(model_pt), "--output_dir", str(out), "--image_size", "32", "--num_slices", "3",
        "--device", "cpu",
    )  # fmt: skip
    preds = read_csv(out / "predictions.csv")
    assert [r["file_name"] for r in preds] == names
    for r in preds:
        p0, p1 = float(r["prob_normal"]), float(r["prob_adrenal_mass"])
        assert p0 + p1 == pytest.approx(1.0, abs=1e-5)
        assert float(r["threshold"]) == pytest.approx(thr["threshold"], abs=1e-6)
        assert r["prediction_name"] == CLASS_NAMES[int(p1 >= thr["threshold"])]
    # the volume probability is the mean of its slice probabilities (recomputed here with the same chain)
    parser = _parser(INFERENCE)
    parser["image_size"], parser["num_slices"] = 32, 3
    slices = parser.get_parsed_content("preprocessing")({"image": str(images / names[0])})
    net.eval()
    with torch.no_grad():
        probs = torch.softmax(net(torch.stack([s["image"].as_tensor() for s in slices])), 1)
    assert float(probs[:, 1].mean()) == pytest.approx(float(preds[0]["prob_adrenal_mass"]), abs=1e-4)

    # 4. verify_net_in_out with the metadata's 2D slice input
    meta, inf = str(META.relative_to(REPO_ROOT)), str(INFERENCE.relative_to(REPO_ROOT))
    bundle_cli("verify_net_in_out", "--net_id", "network_def", "--meta_file", meta, "--config_file", inf)
    assert np.isfinite(p1)


@pytest.mark.slow
def test_run_folder_carries_slicing_and_aggregation(tmp_path):
    """A run with other class names, image size, slice count and aggregation: the run folder alone infers and
    evaluates with them, matching in-process inference with the training config's validation chain."""
    from monai_transfer.data.volumes import aggregate_volume_probs
    from monai_transfer.evaluate import evaluate_bundle
    from monai_transfer.utils.io import load_state_dict_file

    run, classes = tmp_path / "run", ["healthy", "mass"]
    settings = {"class_names": classes, "image_size": 40, "val_slices": 4, "aggregation": "max", "max_items": 6}
    bundle_cli(
        "run", "--config_file", str(TRAIN.relative_to(REPO_ROOT)), "--class_names", json.dumps(classes),
        "--image_size", "40", "--val_slices", "4", "--aggregation", "max", "--max_items", "6", "--epochs", "1",
        "--train_slices", "2", "--batch_size", "6", "--n_bootstrap", "10", "--device", "cpu", "--output_dir", str(run),
    )  # fmt: skip
    inf = json.loads((run / "configs" / "inference.json").read_text())
    assert (inf["class_names"], inf["image_size"], inf["num_slices"], inf["aggregation"]) == (classes, 40, 4, "max")
    assert inf["slice_strategy"] == "central_n" and inf["slice_offsets"] == [-2, 0, 2]
    record = json.loads((run / "models" / "model.json").read_text())
    assert record["slicing"] == {"axis": "axial", "offsets": [-2, 0, 2]} and record["run"]["aggregation"] == "max"

    bundle_cli("run", "--config_file", str(run / "configs" / "inference.json"), cwd=tmp_path)
    preds = {r["file_name"]: r for r in read_csv(run / "eval" / "inference" / "predictions.csv")}
    samples = sorted((run / "data" / "samples").glob("*.nii.gz"))
    assert len(samples) == len(preds) == 4

    # reference: the training config's validation chain (volume -> 4 central slices -> network) and max pooling
    parser = _parser(TRAIN)
    for k, v in {**settings, "weights": "none", "device": "cpu"}.items():
        parser[k] = v
    pre, net = parser.get_parsed_content("validate#preprocessing"), parser.get_parsed_content("network_def")
    net.load_state_dict(load_state_dict_file(run / "models" / "model.pt"))
    net.eval()
    expected = []
    for s in samples:
        slices = pre({"image": str(s)})
        assert len(slices) == 4
        with torch.no_grad():
            probs = torch.softmax(net(torch.stack([torch.as_tensor(x["image"]) for x in slices])), 1)
        expected.append(np.asarray(aggregate_volume_probs(probs, method="max"), dtype=np.float64))
    got = [[float(preds[s.name]["prob_healthy"]), float(preds[s.name]["prob_mass"])] for s in samples]
    np.testing.assert_allclose(got, expected, atol=1e-5)

    res = evaluate_bundle(
        run, run / "data" / "samples", tmp_path / "eval", labels=run / "data" / "samples" / "labels.csv",
        device="cpu", n_bootstrap=10, progress=False,
    )  # fmt: skip
    assert res.exit_code == 0 and not res.failures
    assert all(p.n_slices == 4 for p in res.predictions)
    np.testing.assert_allclose(np.stack([p.probs for p in res.predictions]), expected, atol=1e-5)


# ------------------------------------------------------------------------------- multi-GPU, early stopping, Grad-CAM


def test_early_stopping_and_multi_gpu_config_ids():
    """Early stopping on the volume AUC (off by default, resumable); DDP config mirrors xray's, by ids only."""
    from monai.bundle import ConfigParser

    train = _parser(TRAIN)
    assert train["early_stop_patience"] == 0  # off by default, as xray
    assert train["validate#early_stop#score_function"] == "$monai.handlers.stopping_fn_from_metric('val_volume_auc')"
    assert train["train#handler_states#early_stop"] == "@validate#early_stop"  # its counter is resumed
    assert train["train#run#early_stop"] == "@validate#early_stop"  # wired when early_stop_patience > 0
    assert train["train#run#early_stop_patience"] == "@early_stop_patience"
    multi = json.loads(MULTI_GPU.read_text())
    assert not [k for k in multi if "_disabled_" in k]
    parser = ConfigParser(ConfigParser.load_config_files([str(TRAIN), str(MULTI_GPU)]))
    assert parser["network#_target_"] == "torch.nn.parallel.DistributedDataParallel"
    rank0 = [h["_target_"] for h in parser["train#handlers"] if h.get("_disabled_") == "$not @is_main_rank"]
    assert rank0 == ["monai_transfer.handlers.loggers.TrainingLoggers"]  # progress bar, loss, TensorBoard
    assert parser["validate#handlers#0#_disabled_"] == "$not @is_main_rank"
    assert parser["train#run#report_evaluator"] == "@report#evaluator"
    assert parser["validate#best_model_saver#_disabled_"] == "$not @is_main_rank"
    assert "rank_zero_score" in parser["validate#early_stop#score_function"]
    assert "val_volume_auc" in parser["validate#early_stop#score_function"]
    # validation is sharded by VOLUME without padding (a repeated volume would count its slices twice)
    assert parser["validate#sampler#even_divisible"] is False
    assert parser["validate#dataloader#sampler"] == "@validate#sampler"
    assert any("destroy_process_group" in step for step in parser["finalize"])
    assert any("check_disjoint_sources" in step for step in parser["initialize"])


@pytest.mark.slow
def test_early_stopping_ends_training_when_val_volume_auc_stalls(tmp_path):
    """Frozen backbone and a negligible learning rate: the volume AUC cannot improve; patience 1 stops at epoch 2."""
    from monai.bundle import ConfigWorkflow

    from monai_transfer.utils.io import safe_torch_load

    settings = dict(
        config_file=str(TRAIN), workflow_type="train", output_dir=str(tmp_path), epochs=4, max_items=6, batch_size=6,
        image_size=32, train_slices=2, val_slices=3, n_bootstrap=20, early_stop_patience=1, learning_rate=1e-12,
        weight_decay=0.0, warmup_epochs=0, fine_tune="linear_probe", device="cpu",
    )  # fmt: skip
    wf = ConfigWorkflow(**settings)
    wf.initialize()
    wf.run()
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 2
    wf.finalize()
    ckpt = safe_torch_load(tmp_path / "models" / "last" / "checkpoint_epoch=2.pt")
    assert ckpt["handler_states"]["early_stop"]["counter"] == 1  # resumable: the patience counter is saved
    assert ckpt["handler_states"]["evaluator"]["best_metric_epoch"] == 1
    assert (tmp_path / "eval" / "val" / "metrics.json").is_file()  # the report of the best model is still written
    # resuming the run that had stopped early restores the counter and trains no further epoch (no checkpoint written)
    last = tmp_path / "models" / "last" / "checkpoint_epoch=2.pt"
    mtime = last.stat().st_mtime_ns
    wf = ConfigWorkflow(**settings, resume=True)
    wf.initialize()
    wf.run()
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 2
    wf.finalize()
    assert sorted(p.name for p in (tmp_path / "models" / "last").iterdir()) == ["checkpoint_epoch=2.pt"]
    assert last.stat().st_mtime_ns == mtime


def _torchrun(run: Path, *args: str, extra_config: str | None = None, timeout: int = 500) -> tuple[str, str]:
    """The ct_slices multi-GPU config (plus ``extra_config``) under torchrun with 2 CPU ranks."""
    return torchrun_bundle([TRAIN, MULTI_GPU, *([extra_config] if extra_config else [])], run, *args, timeout=timeout)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_multi_gpu_volume_auc_gathered_and_early_stop_torchrun_gloo(tmp_path):
    """2 gloo ranks, each validating 3 of the 6 volumes: both ranks log the same val_volume_auc every epoch, equal to
    the single-process volume AUC of the same model on the whole split (the rank-0 report); early stopping (volume
    AUC stalls: frozen backbone, negligible learning rate; patience 1) stops both ranks after epoch 2 of 4."""
    from monai_transfer.utils.io import safe_torch_load

    run = tmp_path / "ddp"
    # per rank and epoch: the evaluator's metrics and how many volumes this rank validated itself
    record = (
        "$@validate#evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: "
        "monai_transfer.utils.io.atomic_write_json(@output_dir + '/rank%d_epoch%d.json' % "
        "(torch.distributed.get_rank(), @train#trainer.state.epoch), "
        "{'metrics': dict(e.state.metrics), 'n_volumes': len(@validate#sampler)}))"
    )
    hooks = tmp_path / "hooks.json"
    imports = [*json.loads(TRAIN.read_text())["imports"], "$from ignite.engine import Events"]
    init = json.loads(MULTI_GPU.read_text())["initialize"]
    hooks.write_text(json.dumps({"imports": imports, "initialize": [*init, record]}))
    _torchrun(
        run, "--epochs", "4", "--max_items", "6", "--batch_size", "4", "--image_size", "32", "--train_slices", "2",
        "--val_slices", "3", "--n_bootstrap", "20", "--early_stop_patience", "1", "--learning_rate", "1e-12",
        "--weight_decay", "0.0", "--warmup_epochs", "0", "--fine_tune", "linear_probe", extra_config=str(hooks),
    )  # fmt: skip
    logs = {p.stem: json.loads(p.read_text()) for p in run.glob("rank*_epoch*.json")}
    assert sorted(logs) == ["rank0_epoch1", "rank0_epoch2", "rank1_epoch1", "rank1_epoch2"]  # both stopped at 2
    for epoch in (1, 2):
        r0, r1 = logs[f"rank0_epoch{epoch}"], logs[f"rank1_epoch{epoch}"]
        assert r0["n_volumes"] == r1["n_volumes"] == 3  # each rank validated its own half of the volumes
        assert r0["metrics"]["val_volume_auc"] == r1["metrics"]["val_volume_auc"]
    assert sorted(p.name for p in (run / "models" / "last").iterdir()) == ["checkpoint_epoch=2.pt"]
    ckpt = safe_torch_load(run / "models" / "last" / "checkpoint_epoch=2.pt")
    assert ckpt["trainer"]["max_epochs"] == 4 and ckpt["handler_states"]["early_stop"]["counter"] == 1
    best = ckpt["handler_states"]["evaluator"]
    assert best["best_metric_epoch"] == 1
    assert best["best_metric"] == pytest.approx(logs["rank0_epoch1"]["metrics"]["val_volume_auc"])
    # the single-process value: rank 0's report runs the best model over the whole split without a sampler
    state = safe_torch_load(run / "models" / "model.pt")
    assert not any(k.startswith("module.") for k in state), "model.pt must hold the unwrapped network"
    metrics = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert metrics["n_samples"] == 6 and metrics["meta"]["aggregation"]["n_slices"] == 6 * 3
    assert metrics["metrics"]["auc"] == pytest.approx(logs["rank1_epoch1"]["metrics"]["val_volume_auc"], abs=1e-6)
    auc = logs["rank0_epoch1"]["metrics"]["val_volume_auc"]
    print(f"volume AUC: both ranks {auc:.4f}, single process {metrics['metrics']['auc']:.4f}")


def test_evaluate_gradcam_overlays_of_validation_slices(tmp_path, monkeypatch):
    """evaluate.json's Grad-CAM step explains the central validation slice of the first volumes (PNG per slice),
    titled with the class and its probability."""
    from monai.bundle import ConfigParser
    from PIL import Image

    import monai_transfer.reports.gradcam as gradcam

    drawn = []
    save = gradcam._save_overlay
    monkeypatch.setattr(
        gradcam, "_save_overlay", lambda path, bg, heat, title, *a: drawn.append((bg, heat, title)) or save(
            path, bg, heat, title, *a)
    )  # fmt: skip

    parser = ConfigParser(ConfigParser.load_config_files([str(TRAIN), str(EVALUATE)]))
    parser.update(
        {"bundle_root": str(BUNDLE), "output_dir": str(tmp_path), "device": "cpu", "max_items": 4, "image_size": 32,
         "val_slices": 3, "weights": "none", "cache": "none", "gradcam_cases": 2}
    )  # fmt: skip
    assert parser["gradcam_cases"] == 2
    step = next(i for i, s in enumerate(parser["run"]) if "save_slice_gradcam_overlays" in str(s))
    assert parser[f"run#{step}#_disabled_"] == "$@gradcam_cases <= 0"  # --gradcam_cases 0 disables it
    torch.manual_seed(0)
    # an untrained head can give a flat (all-zero) Grad-CAM; equal positive head weights make the explained score the
    # mean of the pooled features, so the map follows the target layer's activations and is not flat
    head = [m for m in parser.get_parsed_content("network").modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.fill_(0.1)
        head.bias.zero_()
    paths = parser.get_parsed_content(f"run#{step}")
    data = parser.get_parsed_content("validate#dataset#data")
    names = [Path(d["image"]).name.replace(".nii.gz", "") for d in data[:2]]
    # the central slice of 3 around the volume centre (64 slices): index 32
    assert [p.name for p in paths] == [f"gradcam_{n}_slice032.png" for n in names]
    report = Path(parser.get_parsed_content("report_dir")) / "gradcam"
    assert sorted(report.iterdir()) == sorted(paths)
    assert len(drawn) == len(paths) == 2
    for p, n, (bg, heat, title) in zip(paths, names, drawn):
        assert_png(p)
        assert bg.shape == heat.shape == (32, 32)  # drawn in the slice's network-input geometry
        assert len(np.unique(heat)) > 2  # an overlay, not a flat or missing map
        assert title.startswith(f"{n}_slice032\nGrad-CAM for '") and "(highest score)\np(" in title
        assert any(f"'{c}'" in title for c in CLASS_NAMES)
        with Image.open(p) as im:
            assert im.text["Title"] == title.replace("\n", " | ")
