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
"""The ``bundles/xray`` MONAI bundle: configs, metadata, and train -> evaluate -> inference -> export end to end.

Every run writes to a temporary ``output_dir``; nothing is written inside the bundle folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
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

BUNDLE = REPO_ROOT / "bundles" / "xray"
CONFIGS = BUNDLE / "configs"
META = CONFIGS / "metadata.json"
TRAIN = CONFIGS / "train.json"
EVALUATE = CONFIGS / "evaluate.json"
INFERENCE = CONFIGS / "inference.json"
#: the bundle's default backbone (train.json and inference.json agree: test_bundle_configs)
BACKBONE = json.loads(INFERENCE.read_text())["backbone"]
MULTI_GPU = CONFIGS / "multi_gpu_train.json"
META_SCHEMA = REPO_ROOT / "bundles" / "metadata_schema.json"
CLASS_NAMES = ["normal", "pneumonia"]
# tiny settings for the end-to-end runs (2 shared CPU cores)
TINY = ["--epochs", "1", "--max_items", "32", "--image_size", "32", "--n_bootstrap", "50", "--device", "cpu"]


# ---------------------------------------------------------------------------------------------------------- fast


def test_configs_parse_and_keep_contract_ids():
    from monai.bundle import ConfigParser

    for cfg in (TRAIN, INFERENCE):
        parser = ConfigParser()
        parser.read_config(str(cfg))
        for key in ("bundle_root", "device", "class_names", "num_classes", "network_def", "network"):
            assert key in parser, f"{cfg.name} has no '{key}'"
        assert parser["class_names"] == CLASS_NAMES
    merged = ConfigParser(ConfigParser.load_config_files([str(TRAIN), str(EVALUATE)]))
    assert merged["ckpt_path"] == "$@ckpt_dir + '/model.pt'"
    assert merged["validate#report_writer#select_threshold_on"] is None  # evaluation never re-selects the threshold
    assert not any("trainer.run" in step for step in merged["run"])  # evaluation never trains
    assert merged["validate#report_writer#threshold"] == "@threshold_path"
    assert merged["train#trainer#max_epochs"] == "@epochs"  # train.json ids are kept
    multi = ConfigParser(ConfigParser.load_config_files([str(TRAIN), str(MULTI_GPU)]))
    assert multi["network#_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert any("destroy_process_group" in step for step in multi["finalize"])
    inf = ConfigParser()
    inf.read_config(str(INFERENCE))
    for key in ("dataset_dir", "dataset", "evaluator", "inferer", "preprocessing", "postprocessing", "ckpt_path"):
        assert key in inf, f"inference.json has no '{key}'"


def test_metadata_required_keys_and_channel_def():
    meta = json.loads(META.read_text())
    missing = [k for k in REQUIRED_BUNDLE_META if k not in meta]
    assert not missing, f"metadata.json lacks {missing}"
    nd = meta["network_data_format"]
    assert list(nd["outputs"]["pred"]["channel_def"].values()) == CLASS_NAMES
    assert nd["outputs"]["pred"]["num_channels"] == len(CLASS_NAMES)
    assert nd["inputs"]["image"]["num_channels"] == 3
    assert nd["inputs"]["image"]["spatial_shape"] == [64, 64]
    assert meta["monai_version"] and meta["pytorch_version"] and meta["numpy_version"]
    assert "monai_transfer" in meta["required_packages_version"] and "timm" in meta["required_packages_version"]
    assert_no_deprecated_meta_names(META)
    assert meta["version"] in meta["changelog"]


def test_verify_metadata_offline_with_local_schema(tmp_path):
    """MONAI's verify_metadata skips the download when ``filepath`` exists: it works offline with the shipped
    ``bundles/metadata_schema.json`` (the specification's required keys and tensor fields), which still fails a
    metadata file that breaks them."""
    from monai.bundle import verify_metadata

    local = META_SCHEMA  # the shipped offline schema (README's publishing command)
    verify_metadata(meta_file=str(META), filepath=str(local))  # raises ValueError when invalid
    bad = json.loads(META.read_text())
    del bad["network_data_format"]["outputs"]["pred"]["dtype"]
    bad_file = tmp_path / "bad_metadata.json"
    bad_file.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="Failed validating"):
        verify_metadata(meta_file=str(bad_file), filepath=str(local))


def test_inference_preprocessing_maps_path_to_network_input():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    parser["bundle_root"] = str(BUNDLE)
    pre = parser.get_parsed_content("preprocessing")
    dcm = sorted((BUNDLE / "data" / "dicom_samples").glob("*.dcm"))[0]
    png = sorted((BUNDLE / "data" / "val" / "normal").glob("*.png"))[0]
    out_dcm, out_png = pre({"image": str(dcm)})["image"], pre({"image": str(png)})["image"]
    for out in (out_dcm, out_png):
        assert tuple(out.shape) == (3, 64, 64) and out.dtype == torch.float32
        assert torch.isfinite(out).all() and float(out.std()) > 0
    # the DICOM samples are MONOCHROME1 copies of val PNGs: after inversion they match their PNG source
    labels = {r["image"]: int(r["label"]) for r in read_csv(BUNDLE / "data" / "dicom_samples" / "labels.csv")}
    src = BUNDLE / "data" / "val" / CLASS_NAMES[labels[dcm.name]] / f"{dcm.stem}.png"
    torch.testing.assert_close(out_dcm, pre({"image": str(src)})["image"], atol=0.05, rtol=0)
    # the datalist of the default input folder holds the 8 DICOMs and skips labels.csv
    data = parser.get_parsed_content("datalist")
    assert len(data) == 8 and all(d["image"].endswith(".dcm") for d in data)


def test_evaluate_uses_test_split_when_present(tmp_path):
    from monai.bundle import ConfigParser

    src = (
        sorted((BUNDLE / "data" / "val" / "normal").glob("*.png"))[:3]
        + sorted((BUNDLE / "data" / "val" / "pneumonia").glob("*.png"))[:3]
    )
    for split in ("train", "val", "test"):
        for name in CLASS_NAMES:
            (tmp_path / "data" / split / name).mkdir(parents=True)
    for i, f in enumerate(src):
        name = CLASS_NAMES[i // 3]
        for split in ("train", "val", "test"):
            shutil.copy(f, tmp_path / "data" / split / name / f"{split}_{f.name}")
    parser = ConfigParser(ConfigParser.load_config_files([str(TRAIN), str(EVALUATE)]))
    parser["bundle_root"] = str(BUNDLE)
    parser["dataset_dir"] = str(tmp_path / "data")
    parser["output_dir"] = str(tmp_path / "run")
    assert parser.get_parsed_content("eval_split") == "test"
    assert parser.get_parsed_content("report_dir") == str(tmp_path / "run" / "eval" / "test")
    data = parser.get_parsed_content("validate#dataset#data")
    assert len(data) == 6 and all(Path(d["image"]).name.startswith("test_") for d in data)
    assert parser.get_parsed_content("validate#report_writer#threshold") == str(tmp_path / "run/models/threshold.json")


def test_check_properties_train_and_inference(tmp_path):
    train = bundle_workflow(
        CONFIGS,
        TRAIN,
        "train",
        output_dir=str(tmp_path / "run"),
        max_items=8,
        batch_size=4,
        image_size=32,
        device="cpu",
    )
    train.initialize()
    assert train.check_properties() == []
    assert train.train_dataset_data is not None and len(train.train_dataset_data) == 8
    assert train.max_epochs == 6  # the default epochs
    train.finalize()
    infer = bundle_workflow(CONFIGS, INFERENCE, "infer", output_dir=str(tmp_path / "infer"), device="cpu")
    infer.initialize()
    assert infer.check_properties() == []
    assert len(infer.dataset) == 8
    infer.finalize()


# ---------------------------------------------------------------------------------------------------------- slow


def _mixed_image_folder(folder: Path) -> list[str]:
    """2 DICOMs, 1 PNG, 1 JPEG and one 2D NIfTI (plus labels.csv and a README that must be ignored)."""
    import nibabel as nib
    from PIL import Image

    folder.mkdir(parents=True)
    dicoms = sorted((BUNDLE / "data" / "dicom_samples").glob("*.dcm"))[:2]
    for d in dicoms:
        shutil.copy(d, folder / d.name)
    shutil.copy(BUNDLE / "data" / "dicom_samples" / "labels.csv", folder / "labels.csv")
    (folder / "README.txt").write_text("not an image")
    png = sorted((BUNDLE / "data" / "val" / "pneumonia").glob("*.png"))[0]
    shutil.copy(png, folder / png.name)
    arr = np.asarray(Image.open(png).convert("L"))
    Image.fromarray(arr).save(folder / "case_jpeg.jpg", quality=95)
    nib.save(nib.Nifti1Image(arr.T.astype(np.float32), np.eye(4)), str(folder / "case_nifti.nii.gz"))
    return sorted([*(d.name for d in dicoms), png.name, "case_jpeg.jpg", "case_nifti.nii.gz"])


@pytest.mark.slow
def test_train_evaluate_infer_export_end_to_end(tmp_path):
    from monai_transfer.networks.nets import Pretrained2DNet
    from monai_transfer.utils.io import safe_torch_load

    run = tmp_path / "run"
    train_cfg = str(TRAIN.relative_to(REPO_ROOT))
    # 1. train
    bundle_cli("run", "--config_file", train_cfg, *TINY, "--output_dir", str(run))
    model_pt, thr_file = run / "models" / "model.pt", run / "models" / "threshold.json"
    state = safe_torch_load(model_pt)
    assert isinstance(state, dict) and "head.1.weight" in state  # a plain state dict (no "model" wrapper)
    net = Pretrained2DNet(backbone=BACKBONE, weights="none", num_classes=2, in_channels=3)
    net.load_state_dict(state)
    thr = json.loads(thr_file.read_text())
    assert 0.0 <= thr["threshold"] <= 1.0 and thr["method"] == "youden"
    assert (run / "eval" / "val" / "metrics.json").is_file()

    # 2. evaluate (no training: model.pt unchanged) on val with the stored threshold and Grad-CAM overlays
    mtime = model_pt.stat().st_mtime_ns
    configs = f"['{train_cfg}','{EVALUATE.relative_to(REPO_ROOT)}']"
    bundle_cli("run", "--config_file", configs, *TINY, "--output_dir", str(run), "--gradcam_cases", "2")
    assert model_pt.stat().st_mtime_ns == mtime, "evaluate.json must not train or overwrite model.pt"
    assert not (run / "models" / "last" / "checkpoint_epoch=2.pt").exists()
    report = run / "eval" / "val"
    metrics = json.loads((report / "metrics.json").read_text())
    for key in ("metrics", "metrics_at_0.5", "confidence_intervals", "threshold", "meta", "class_names", "counts"):
        assert key in metrics, f"metrics.json lacks {key}"
    assert metrics["threshold"]["value"] == pytest.approx(thr["threshold"])
    assert metrics["threshold"]["source"] == f"file {thr_file}"
    assert metrics["n_samples"] == 32 and metrics["meta"]["split"] == "val"
    assert metrics["class_names"] == CLASS_NAMES
    assert set(metrics["confidence_intervals"]) == {"auc", "sensitivity", "specificity"}
    assert 0.0 <= metrics["metrics"]["auc"] <= 1.0
    rows = read_csv(report / "predictions.csv")
    assert len(rows) == 32 and {"prob_normal", "prob_pneumonia", "prediction_name"} <= set(rows[0])
    for png in ("roc.png", "confusion_matrix.png", "reliability.png"):
        assert_png(report / png)
    cams = sorted((report / "gradcam").glob("gradcam_*.png"))
    assert len(cams) == 2
    for c in cams:
        assert_png(c)

    # 3. inference on a folder of mixed formats
    images = _mixed_image_folder(tmp_path / "images")
    out = tmp_path / "infer"
    bundle_cli(
        "run", "--config_file", str(INFERENCE.relative_to(REPO_ROOT)), "--input_dir", str(tmp_path / "images"),
        "--ckpt_path", str(model_pt), "--output_dir", str(out), "--image_size", "32", "--device", "cpu",
    )  # fmt: skip
    preds = read_csv(out / "predictions.csv")
    assert sorted(r["file_name"] for r in preds) == images
    for r in preds:
        p0, p1 = float(r["prob_normal"]), float(r["prob_pneumonia"])
        assert p0 + p1 == pytest.approx(1.0, abs=1e-5)
        assert float(r["threshold"]) == pytest.approx(thr["threshold"], abs=1e-6)
        assert r["prediction_name"] == CLASS_NAMES[int(p1 >= thr["threshold"])]

    # 4. verify_net_in_out and TorchScript export (the functions behind the CLI verbs, in this process)
    from monai.bundle import ckpt_export, verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=str(META), config_file=str(INFERENCE), device="cpu")
    ts = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def", filepath=str(ts), ckpt_file=str(model_pt), meta_file=str(META), config_file=str(INFERENCE)
    )
    scripted = torch.jit.load(str(ts), map_location="cpu")
    net.eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_multi_gpu_train_torchrun_gloo(tmp_path):
    run = tmp_path / "ddp"
    configs = f"['{TRAIN.relative_to(REPO_ROOT)}','{MULTI_GPU.relative_to(REPO_ROOT)}']"
    cmd = [
        shutil.which("torchrun"), "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
        "--config_file", configs, "--epochs", "1", "--max_items", "16", "--batch_size", "4", "--image_size", "32",
        "--n_bootstrap", "20", "--output_dir", str(run), "--mixup_alpha", "0.4",  # batches mixed on each rank
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers: no orphan left on the shared machine
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in 300 s:\n{out[-3000:]}\n{err[-3000:]}")
    assert proc.returncode == 0, f"torchrun failed:\n{out[-3000:]}\n{err[-5000:]}"
    from monai_transfer.utils.io import safe_torch_load

    state = safe_torch_load(run / "models" / "model.pt")
    assert not any(k.startswith("module.") for k in state), "model.pt must hold the unwrapped network"
    assert "head.1.weight" in state
    metrics = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert metrics["n_samples"] == 16  # the final report covers the whole val split, not one rank's shard
    assert len(read_csv(run / "eval" / "val" / "predictions.csv")) == 16
    # rank 0 only: one event file of the training loggers (loss, LR, images: one writer), one of validation
    events = sorted((run / "logs").glob("events.out.tfevents.*"))
    assert len(events) == 2, [e.name for e in events]
    assert len({e.name.split(".")[-2] for e in events}) == 1, "every event file must come from one process (rank 0)"
    # rank 0 made the run folder a bundle
    assert json.loads((run / "models" / "model.json").read_text())["image_size"] == 32
    assert json.loads((run / "configs" / "inference.json").read_text())["image_size"] == 32


def _torchrun(run: Path, *args: str, timeout: int = 400) -> tuple[str, str]:
    """The xray bundle's multi-GPU config under torchrun with 2 CPU ranks."""
    return torchrun_bundle([TRAIN, MULTI_GPU], run, *args, timeout=timeout)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_multi_gpu_early_stopping_and_weighted_sampler_torchrun_gloo(tmp_path):
    """Under torchrun, early stopping stops both ranks at the same epoch (val AUC cannot improve: frozen backbone,
    negligible learning rate; patience 1 stops at epoch 2 of 4; a rank left running would hang in DDP's all-reduce),
    with ``imbalance="sampler"`` drawing through the DistributedWeightedSampler."""
    from monai_transfer.utils.io import safe_torch_load

    run = tmp_path / "ddp"
    _torchrun(
        run, "--epochs", "4", "--max_items", "16", "--batch_size", "4", "--image_size", "32", "--n_bootstrap", "20",
        "--early_stop_patience", "1", "--learning_rate", "1e-12", "--weight_decay", "0.0", "--warmup_epochs", "0",
        "--fine_tune", "linear_probe", "--imbalance", "sampler",
    )  # fmt: skip
    assert sorted(p.name for p in (run / "models" / "last").iterdir()) == ["checkpoint_epoch=2.pt"]
    ckpt = safe_torch_load(run / "models" / "last" / "checkpoint_epoch=2.pt")
    trainer = ckpt["trainer"]
    assert trainer["iteration"] == 2 * trainer["epoch_length"] and trainer["max_epochs"] == 4
    assert ckpt["handler_states"]["early_stop"]["counter"] == 1
    assert ckpt["handler_states"]["evaluator"]["best_metric_epoch"] == 1
    metrics = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert metrics["n_samples"] == 16  # the report of the best model is still written, over the whole val split


def test_multi_gpu_config_uses_ids_not_list_positions():
    """multi_gpu_train.json disables nothing by list position; the rank-0-only handlers say so themselves."""
    from monai.bundle import ConfigParser

    multi = json.loads(MULTI_GPU.read_text())
    assert not [k for k in multi if "_disabled_" in k]
    for cfg in (TRAIN, MULTI_GPU, *(REPO_ROOT / "bundles").glob("*/configs/*.json")):
        assert not [k for k in json.loads(cfg.read_text()) if "#_disabled_" in k], cfg
    parser = ConfigParser(ConfigParser.load_config_files([str(TRAIN), str(MULTI_GPU)]))
    rank0 = [h["_target_"] for h in parser["train#handlers"] if h.get("_disabled_") == "$not @is_main_rank"]
    assert rank0 == ["monai_transfer.handlers.loggers.TrainingLoggers"]  # progress bar, loss, TensorBoard
    val_rank0 = [h["_target_"] for h in parser["validate#handlers"] if isinstance(h, dict)]
    assert val_rank0 == ["monai_transfer.handlers.loggers.ValidationLoggers"]
    assert parser["validate#handlers#0#_disabled_"] == "$not @is_main_rank"
    assert parser["validate#best_model_saver#_disabled_"] == "$not @is_main_rank"
    assert "rank_zero_score" in parser["validate#early_stop#score_function"]
    # the shared training run wires early stopping; the report runs on rank 0's unsharded evaluator
    assert parser["train#run#early_stop"] == "@validate#early_stop"
    assert parser["train#run#early_stop_patience"] == "@early_stop_patience"
    assert parser["train#run#report_evaluator"] == "@report#evaluator"
    assert parser["run"][0] == "@train#run" and parser["run"][1]["_disabled_"] == "$not @is_main_rank"
    assert parser["train#optimizer#model"] == "@network_def"  # the optimiser of the unwrapped network
    assert parser["train#sampler#_target_"] == "monai_transfer.data.samplers.build_distributed_sampler"


def _small_split_folders(root: Path, n_train: int = 8, n_val: int = 2) -> Path:
    """``root/{train,val}/{normal,pneumonia}``: ``n_train`` + ``n_val`` shipped PneumoniaMNIST PNGs per class."""
    for split, n in (("train", n_train), ("val", n_val)):
        for c in CLASS_NAMES:
            (root / split / c).mkdir(parents=True)
            for f in sorted((BUNDLE / "data" / split / c).glob("*.png"))[:n]:
                shutil.copy(f, root / split / c / f.name)
    return root


@pytest.mark.slow
def test_sixteen_training_images_train_at_the_default_batch_size(tmp_path):
    """16 training images and the default batch size 32 (the loader drops an incomplete batch): training completes in
    batches of 16, and the log says so, naming --batch_size and the split size (before: no training step, and
    "epochs and steps_per_epoch must be >= 1, got 2 and 0" from build_scheduler)."""
    data, run = _small_split_folders(tmp_path / "data"), tmp_path / "run"
    proc = bundle_cli(
        "run", "--config_file", str(TRAIN.relative_to(REPO_ROOT)), "--dataset_dir", str(data), "--epochs", "2",
        "--image_size", "32", "--n_bootstrap", "20", "--device", "cpu", "--output_dir", str(run),
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert "--batch_size 32 is larger than the training split (16 images): training with batches of 16" in log
    assert (run / "models" / "model.pt").is_file()
    report = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert report["n_samples"] == 4 and report["meta"]["data"]["train"]["n"] == 16
    last = torch.load(next((run / "models" / "last").glob("*.pt")), weights_only=True)
    assert last["trainer"]["iteration"] == 2  # one batch of 16 per epoch
    # TensorBoard: an input grid per epoch; val curves at epochs 1, 2 and the best model's re-evaluation apart
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "logs"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert [g.step for g in acc.Images("train/inputs")] == [1, 2]
    assert [e.step for e in acc.Scalars("val_auc")] == [1, 2]
    (best,) = acc.Scalars("best_model/val_auc")
    assert best.step in (1, 2) and best.value == pytest.approx(report["metrics"]["auc"], abs=1e-6)
    readme = (run / "docs" / "README.md").read_text()
    assert "- train: 16 images (normal: 8, pneumonia: 8)" in readme and "None images" not in readme


@pytest.mark.slow
def test_early_stopping_ends_training_when_val_auc_stalls(tmp_path):
    """Frozen backbone (BN too) and a negligible learning rate: val AUC cannot improve, patience 1 stops at epoch 2."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=str(TRAIN), workflow_type="train", output_dir=str(tmp_path), epochs=4, max_items=16, batch_size=8,
        image_size=32, n_bootstrap=20, early_stop_patience=1, learning_rate=1e-12, weight_decay=0.0, warmup_epochs=0,
        fine_tune="linear_probe",
    )  # fmt: skip
    wf.initialize()
    wf.run()
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 2
    assert (tmp_path / "eval" / "val" / "metrics.json").is_file()  # the report of the best model is still written
    wf.finalize()


def _hooks_config(path: Path, hooks: list[str]) -> str:
    """An extra config file appending ``hooks`` (expressions) to train.json's own ``initialize`` list (with the
    ``os`` and ``Events`` imports the hooks use)."""
    train = json.loads(TRAIN.read_text())
    imports = [*train["imports"], "$import os", "$from ignite.engine import Events"]
    path.write_text(json.dumps({"imports": imports, "initialize": [*train["initialize"], *hooks]}))
    return str(path)


@pytest.mark.slow
def test_sigkill_after_best_epoch_then_resume_matches_uninterrupted(tmp_path):
    """SIGKILL in epoch 3, after the best epoch; epoch 3 is forced worse (the head of the weights validated after it,
    the weight average of the default ``ema_decay``, is zeroed, so its val AUC is 0.5). ``--resume true`` must keep
    the best model and continue the weight average: model.pt, threshold.json and every metric of metrics.json equal
    those of the uninterrupted run, and the recorded best epoch is the same."""
    from monai_transfer.utils.io import safe_torch_load

    # runs after WeightEMA's swap-in at the evaluator's epoch start (attached later); its swap-out restores the live
    # weights
    worse = (
        "$@validate#evaluator.add_event_handler(Events.EPOCH_STARTED, lambda e: [p.data.zero_() for p in "
        "@network.head.parameters()] if @train#trainer.state.epoch >= 3 else None)"
    )
    kill = "$@train#trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=lambda e, it: e.state.epoch == 3), lambda e: os.kill(os.getpid(), 9))"  # noqa: E501
    base = [sys.executable, "-m", "monai.bundle", "run", *TINY, "--epochs", "3", "--batch_size", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}

    def run(out: Path, hooks: list[str], *extra: str) -> subprocess.CompletedProcess:
        configs = f"['{TRAIN.relative_to(REPO_ROOT)}','{_hooks_config(out.parent / (out.name + '.json'), hooks)}']"
        cmd = [*base, "--config_file", configs, "--output_dir", str(out), *extra]
        return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)

    full = run(tmp_path / "full", [worse])
    assert full.returncode == 0, full.stderr[-5000:]
    killed = run(tmp_path / "part", [worse, kill])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-5000:]
    assert not (tmp_path / "part" / "eval" / "val" / "metrics.json").exists()
    assert sorted(p.name for p in (tmp_path / "part" / "models" / "last").iterdir()) == ["checkpoint_epoch=2.pt"]
    resumed = run(tmp_path / "part", [worse], "--resume", "true")
    assert resumed.returncode == 0, resumed.stderr[-5000:]

    a, b = (safe_torch_load(tmp_path / name / "models" / "model.pt") for name in ("full", "part"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"model.pt: {k} differs"
    assert json.loads((tmp_path / "part/models/threshold.json").read_text()) == json.loads(
        (tmp_path / "full/models/threshold.json").read_text()
    )
    ma, mb = (json.loads((tmp_path / name / "eval/val/metrics.json").read_text()) for name in ("full", "part"))
    assert set(ma) == set(mb)
    for key in ma:
        if key not in ("meta", "created"):  # when and on which machine the report was written
            assert ma[key] == mb[key], f"metrics.json '{key}' differs: {ma[key]} vs {mb[key]}"

    # the precondition, from the recorded best epoch: the best epoch came before the kill and epoch 3 was worse
    last = {
        name: safe_torch_load(tmp_path / name / "models" / "last" / "checkpoint_epoch=3.pt")
        for name in ("full", "part")
    }
    best = last["full"]["handler_states"]["evaluator"]
    assert best["best_metric_epoch"] in (1, 2) and best["best_metric"] > 0.5, best
    print(f"best epoch {best['best_metric_epoch']}, val AUC {best['best_metric']:.4f}; epoch 3: 0.5")
    part, full = (dict(last[name]["handler_states"]) for name in ("part", "full"))
    ema_part, ema_full = part.pop("ema")["averaged"], full.pop("ema")["averaged"]  # the continued weight average
    assert part == full and ema_part.keys() == ema_full.keys()
    assert all(torch.equal(ema_part[k], ema_full[k]) for k in ema_full)


# ------------------------------------------------------------------------------------------- run folder = bundle
RUN_CLASSES = ["no", "yes"]  # not the template's names
RUN_SIZE = 40  # not the template's 64


def _class_folder_set(root: Path, per_class: int = 10) -> Path:
    """A tiny class-folder data set with the classes ``no``/``yes`` (real PneumoniaMNIST PNGs of the bundle)."""
    for src, name in zip(CLASS_NAMES, RUN_CLASSES):
        (root / name).mkdir(parents=True)
        for f in sorted((BUNDLE / "data" / "val" / src).glob("*.png"))[:per_class]:
            shutil.copy(f, root / name / f.name)
    return root


def _reference_probs(train_overrides: dict, ckpt: Path, images: list[Path]) -> np.ndarray:
    """In-process inference with the *training* config: its validation preprocessing, its network, the weights."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(TRAIN))
    parser["bundle_root"] = str(BUNDLE)
    for k, v in {**train_overrides, "weights": "none", "device": "cpu"}.items():
        parser[k] = v
    pre = parser.get_parsed_content("validate#preprocessing")
    net = parser.get_parsed_content("network_def")
    from monai_transfer.utils.io import load_state_dict_file

    net.load_state_dict(load_state_dict_file(ckpt))
    net.eval()
    with torch.no_grad():
        x = torch.stack([torch.as_tensor(pre({"image": str(p)})["image"]) for p in images])
        return torch.softmax(net(x), dim=1).double().numpy()


def test_template_bundle_refuses_a_run_checkpoint_and_overrides_fix_it(tmp_path):
    """The issue's trap: a checkpoint trained at 40 px on no/yes, evaluated with the template's 64 px normal/pneumonia.

    The run folder is exported from a random network (no training needed); evaluating its model.pt with the template
    bundle fails naming both values; the same bundle with overrides, and the run folder alone, both evaluate and agree.
    """
    from monai_transfer.evaluate import EvaluationUsageError, evaluate_bundle, main
    from monai_transfer.networks.checkpoint_record import model_spec
    from monai_transfer.networks.nets import Pretrained2DNet
    from monai_transfer.run_bundle import export_run_bundle
    from monai_transfer.utils.io import atomic_torch_save

    data = _class_folder_set(tmp_path / "data", per_class=2)
    run = tmp_path / "run"
    torch.manual_seed(0)
    net = Pretrained2DNet(backbone=BACKBONE, weights="none", num_classes=2, in_channels=3)
    atomic_torch_save(net.state_dict(), run / "models" / "model.pt")
    datalists = {
        "val": [{"image": str(p), "label": i} for i, c in enumerate(RUN_CLASSES) for p in (data / c).iterdir()]
    }
    export_run_bundle(
        run, BUNDLE, values={"class_names": RUN_CLASSES, "image_size": RUN_SIZE, "dataset_dir": str(data)},
        spec=model_spec(BACKBONE, RUN_CLASSES, RUN_SIZE), datalists=datalists,
    )  # fmt: skip
    images, labels = run / "data" / "samples", run / "data" / "samples" / "labels.csv"
    common = ["--images", str(images), "--labels", str(labels), "--n_bootstrap", "10", "--no_progress"]
    with pytest.raises(EvaluationUsageError) as err:
        evaluate_bundle(BUNDLE, images, tmp_path / "wrong", labels=labels, ckpt=run / "models" / "model.pt")
    msg = str(err.value)
    assert f"checkpoint {run / 'models' / 'model.pt'} was trained at" in msg
    assert f"image_size {RUN_SIZE}, bundle {BUNDLE} says 64" in msg
    assert f'class_names ["no", "yes"], bundle {BUNDLE} says ["normal", "pneumonia"]' in msg
    assert not (tmp_path / "wrong" / "metrics.json").exists()
    ckpt_args = ["--ckpt", str(run / "models" / "model.pt")]
    assert main(["--bundle", str(BUNDLE), *ckpt_args, "--output", str(tmp_path / "wrong2"), *common]) == 1
    # the template bundle with monai.bundle-style overrides, and the run folder alone, evaluate the same way
    overrides = ["--image_size", str(RUN_SIZE), "--class_names", "['no','yes']"]
    assert main(["--bundle", str(BUNDLE), *ckpt_args, "--output", str(tmp_path / "ovr"), *common, *overrides]) == 0
    assert main(["--bundle", str(run), "--output", str(tmp_path / "own"), *common]) == 0
    a, b = read_csv(tmp_path / "ovr" / "predictions.csv"), read_csv(tmp_path / "own" / "predictions.csv")
    assert len(a) == 4 and [r["prob_yes"] for r in a] == [r["prob_yes"] for r in b]
    assert {r["label_name"] for r in b} == set(RUN_CLASSES)
    assert main(["--bundle", str(BUNDLE), "--output", str(tmp_path / "bad"), *common, "--no_such_id", "1"]) == 1


@pytest.mark.slow
def test_run_folder_is_a_complete_bundle(tmp_path):
    """Train on a class-folder set with other class names and image size; the run folder alone then infers,
    evaluates, exports and verifies, with the probabilities of in-process inference with the training config."""
    from monai.bundle import ckpt_export, verify_metadata, verify_net_in_out

    from monai_transfer.evaluate import evaluate_bundle

    data = _class_folder_set(tmp_path / "data")
    run = tmp_path / "run"
    overrides = {"dataset_dir": str(data), "class_names": RUN_CLASSES, "image_size": RUN_SIZE, "batch_size": 4}
    bundle_cli(
        "run", "--config_file", str(TRAIN.relative_to(REPO_ROOT)), "--dataset_dir", str(data),
        "--class_names", "['no','yes']", "--image_size", str(RUN_SIZE), "--batch_size", "4", "--epochs", "1",
        "--n_bootstrap", "20", "--device", "cpu", "--output_dir", str(run),
    )  # fmt: skip
    for f in ("inference.json", "evaluate.json", "train.json", "metadata.json", "logging.conf"):
        assert (run / "configs" / f).is_file(), f
    record = json.loads((run / "models" / "model.json").read_text())
    assert (record["class_names"], record["image_size"], record["backbone"]) == (
        RUN_CLASSES,
        RUN_SIZE,
        BACKBONE,
    )
    readme = (run / "docs" / "README.md").read_text()
    assert "--class_names \"['no','yes']\"" in readme and "train: 16 images (no: 8, yes: 8)" in readme
    meta = json.loads((run / "configs" / "metadata.json").read_text())
    assert (
        meta["eval_metrics"]["val_auc"]
        == json.loads((run / "eval" / "val" / "metrics.json").read_text())["metrics"]["auc"]
    )

    # a moved copy of the run folder, run from elsewhere with no argument but the config file
    moved = tmp_path / "elsewhere" / "brain_mri"
    shutil.copytree(run, moved)
    bundle_cli("run", "--config_file", str(moved / "configs" / "inference.json"), cwd=tmp_path)
    preds = read_csv(moved / "eval" / "inference" / "predictions.csv")
    samples = sorted((moved / "data" / "samples").glob("*.png"))
    assert len(preds) == len(samples) == 4 and {"prob_no", "prob_yes"} <= set(preds[0])
    expected = _reference_probs(overrides, run / "models" / "model.pt", samples)
    got = np.array([[float(r["prob_no"]), float(r["prob_yes"])] for r in sorted(preds, key=lambda r: r["file_name"])])
    np.testing.assert_allclose(got, expected, atol=1e-5)

    # python -m monai_transfer.evaluate --bundle RUN (in process), labelled by class name
    res = evaluate_bundle(
        moved, moved / "data" / "samples", tmp_path / "eval", labels=moved / "data" / "samples" / "labels.csv",
        device="cpu", n_bootstrap=10, progress=False,
    )  # fmt: skip
    assert res.exit_code == 0 and not res.failures
    np.testing.assert_allclose(np.stack([p.probs for p in res.predictions]), expected, atol=1e-5)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["class_names"] == RUN_CLASSES

    # the run's train.json + evaluate.json overlay (in process: bundle_root is the folder the run was exported to)
    wf = bundle_workflow(
        run / "configs", [run / "configs" / "train.json", run / "configs" / "evaluate.json"], "train",
        gradcam_cases=0, device="cpu",
    )  # fmt: skip
    wf.initialize()
    wf.run()
    wf.finalize()
    report = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert report["class_names"] == RUN_CLASSES and report["meta"]["config"]["image_size"] == RUN_SIZE
    assert report["meta"]["config"]["checkpoint"] == str(run / "models" / "model.pt")
    assert report["n_samples"] == 4  # the run's own validation split of data/

    # publishing: verify_metadata (local schema), verify_net_in_out, ckpt_export on the run folder
    verify_metadata(meta_file=str(moved / "configs" / "metadata.json"), filepath=str(META_SCHEMA))
    verify_net_in_out(
        net_id="network_def", meta_file=str(moved / "configs" / "metadata.json"),
        config_file=str(moved / "configs" / "inference.json"), device="cpu",
    )  # fmt: skip
    ckpt_export(net_id="network_def", bundle_root=str(moved), config_file=str(moved / "configs" / "inference.json"))
    scripted = torch.jit.load(str(moved / "models" / "model.ts"), map_location="cpu")
    assert scripted(torch.zeros(1, 3, RUN_SIZE, RUN_SIZE)).shape == (1, 2)


def _readme_publishing_commands() -> list[str]:
    """The ``python -m monai.bundle`` lines of the README's publishing block, as written (run folder runs/brain_mri)."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("Publishing a run works with MONAI's own tools", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("python -m monai.bundle ")]


@pytest.mark.slow
def test_readme_publishing_commands_run_offline_as_written(tmp_path):
    """The README's verify_metadata, verify_net_in_out and ckpt_export lines, run verbatim from the repository root on
    a run folder (its path in place of ``runs/brain_mri``) with every download blocked: all succeed, MONAI prints no
    deprecation warning for metadata.json, and the export is a working TorchScript model."""
    import shlex

    from monai_transfer.networks.checkpoint_record import model_spec
    from monai_transfer.networks.nets import Pretrained2DNet
    from monai_transfer.run_bundle import export_run_bundle
    from monai_transfer.utils.io import atomic_torch_save

    commands = _readme_publishing_commands()
    verbs = [shlex.split(c)[3] for c in commands]
    assert verbs == ["verify_metadata", "verify_net_in_out", "ckpt_export"], commands
    data, run = _class_folder_set(tmp_path / "data", per_class=2), tmp_path / "runs" / "brain_mri"
    torch.manual_seed(0)
    net = Pretrained2DNet(backbone=BACKBONE, weights="none", num_classes=2, in_channels=3)
    atomic_torch_save(net.state_dict(), run / "models" / "model.pt")
    val = [{"image": str(p), "label": i} for i, c in enumerate(RUN_CLASSES) for p in (data / c).iterdir()]
    export_run_bundle(
        run, BUNDLE, values={"class_names": RUN_CLASSES, "image_size": RUN_SIZE, "dataset_dir": str(data)},
        spec=model_spec(BACKBONE, RUN_CLASSES, RUN_SIZE), datalists={"val": val},
    )  # fmt: skip
    assert_no_deprecated_meta_names(run / "configs" / "metadata.json")
    blocked = "http://127.0.0.1:9"  # nothing listens there: any download fails at once
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HTTP_PROXY": blocked, "HTTPS_PROXY": blocked, "http_proxy": blocked,
           "https_proxy": blocked, "NO_PROXY": "", "no_proxy": "", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    for command in commands:
        args = shlex.split(command.replace("runs/brain_mri", str(run)))
        proc = subprocess.run(
            [sys.executable, *args[1:]], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{command}\n{out[-4000:]}"
        assert "optional_packages_version" not in out, out[-2000:]
    scripted = torch.jit.load(str(run / "models" / "model.ts"), map_location="cpu")
    assert scripted(torch.zeros(1, 3, RUN_SIZE, RUN_SIZE)).shape == (1, 2)


@pytest.mark.slow
def test_one_id_format_across_the_three_prediction_writers(tmp_path):
    """``predictions.csv`` of the report (evaluate.json overlay, data root ``dataset_dir``), of inference.json
    (``--input_dir``) and of ``python -m monai_transfer.evaluate`` (``--images``) name a case the same way: its path
    relative to the folder given, extension kept, with the full path in ``image``; the same case gets the same
    probabilities from all three."""
    from monai_transfer.evaluate import main
    from monai_transfer.metrics.threshold import save_threshold
    from tests.evaluate.test_evaluate import _save_random_weights

    bundle = tmp_path / "xray"
    shutil.copytree(CONFIGS, bundle / "configs")
    _save_random_weights(bundle)
    save_threshold(bundle / "models" / "threshold.json", 0.5, method="youden")
    images = tmp_path / "images"
    for c in CLASS_NAMES:
        (images / c).mkdir(parents=True)
        for f in sorted((BUNDLE / "data" / "val" / c).glob("*.png"))[:5]:
            shutil.copy(f, images / c / f.name)
    expected = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png"))
    fast = ["--n-bootstrap", "10", "--device", "cpu", "--no-progress"]
    assert main(["--bundle", str(bundle), "--images", str(images), "--output", str(tmp_path / "evaluate"), *fast]) == 0
    wf = bundle_workflow(
        bundle / "configs", bundle / "configs" / "inference.json", "infer", bundle_root=str(bundle),
        input_dir=str(images), output_dir=str(tmp_path / "inference"), device="cpu",
    )  # fmt: skip
    wf.initialize()
    wf.run()
    wf.finalize()
    cfg = bundle / "configs"
    wf = bundle_workflow(
        cfg, [cfg / "train.json", cfg / "evaluate.json"], "train", bundle_root=str(bundle), output_dir=str(bundle),
        dataset_dir=str(images), device="cpu", gradcam_cases=0, n_bootstrap=10, duplicates="off",
    )  # fmt: skip
    wf.initialize()
    wf.run()
    wf.finalize()
    tables = {
        "evaluate": read_csv(tmp_path / "evaluate" / "predictions.csv"),
        "inference": read_csv(tmp_path / "inference" / "predictions.csv"),
        "report": read_csv(bundle / "eval" / "val" / "predictions.csv"),  # the validation split of images/
    }
    assert [r["id"] for r in tables["evaluate"]] == [r["id"] for r in tables["inference"]] == expected
    assert 0 < len(tables["report"]) < len(expected) and {r["id"] for r in tables["report"]} <= set(expected)
    prob = {}
    for name, rows in tables.items():
        for r in rows:
            assert r["image"] == str(images / r["id"]), (name, r)
            prob.setdefault(r["id"], []).append(float(r["prob_pneumonia"]))
    for case, values in prob.items():
        assert max(values) - min(values) < 1e-5, (case, values)
