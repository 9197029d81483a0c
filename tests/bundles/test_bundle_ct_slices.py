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

import numpy as np
import pytest
import torch

from tests.utils import REPO_ROOT, REQUIRED_BUNDLE_META, assert_png, bundle_cli, bundle_workflow, read_csv

__all__: list[str] = []

BUNDLE = REPO_ROOT / "bundles" / "ct_slices"
CONFIGS = BUNDLE / "configs"
META = CONFIGS / "metadata.json"
TRAIN = CONFIGS / "train.json"
EVALUATE = CONFIGS / "evaluate.json"
INFERENCE = CONFIGS / "inference.json"
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
    assert inf["slice_offsets"] == train["slice_offsets"] == [-1, 0, 1]
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
    assert "monai_transfer" in meta["optional_packages_version"]


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
        cache_rate=0.0,
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
    bundle_cli("run", "--config_file", configs, *TINY, "--output_dir", str(run))
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
    }  # fmt: skip
    assert set(metrics["confidence_intervals"]) == {"auc", "sensitivity", "specificity"}
    assert 0.0 <= metrics["metrics"]["auc"] <= 1.0
    rows = read_csv(report / "predictions.csv")
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6
    assert all(r["id"].endswith(".nii.gz") for r in rows)
    for png in ("roc.png", "confusion_matrix.png", "reliability.png"):
        assert_png(report / png)

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
    assert inf["slice_strategy"] == "central_n" and inf["slice_offsets"] == [-1, 0, 1]
    record = json.loads((run / "models" / "model.json").read_text())
    assert record["slicing"] == {"axis": "axial", "offsets": [-1, 0, 1]} and record["run"]["aggregation"] == "max"

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
