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
"""``python -m monai_transfer.evaluate``: a tiny volume bundle written here, real AdrenalMNIST3D volumes as NIfTI,
real PneumoniaMNIST images as 2D NIfTI on the xray bundle's configs, bad cases, exit codes and streaming memory."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_transfer.evaluate import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, list_cases, main
from monai_transfer.evaluate.bundle_inference import resolve_aggregation
from tests.utils import (
    ADRENAL_NPZ,
    PNEUMONIA_NPZ,
    REPO_ROOT,
    load_adrenal,
    load_pneumonia,
    read_csv,
    requires_shared_data,
)

__all__: list[str] = []

CLASSES = ["normal", "adrenal_mass"]
N_SLICES = 6  # central_n slices per volume in the tiny bundle
FAST = ["--n_bootstrap", "50", "--device", "cpu", "--no_progress", "--batch_size", "4"]


def _tiny_volume_config(aggregation: str = "mean") -> dict:
    """A volume bundle with the contract's ids: random resnet18 at 32x32 on 2.5D central slices."""
    return {
        "imports": ["$import monai_transfer"],
        "bundle_root": ".",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "class_names": CLASSES,
        "num_classes": "$len(@class_names)",
        "image_size": 32,
        "network_def": {
            "_target_": "monai_transfer.networks.nets.Pretrained2DNet",
            "backbone": "resnet18",
            "weights": "none",
            "num_classes": "@num_classes",
            "in_channels": 3,
        },
        "volume_preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "monai_transfer.transforms.LoadMedicalImaged", "keys": "image"},
                {"_target_": "ScaleIntensityd", "keys": "image", "minv": 0.0, "maxv": 1.0},
            ],
        },
        "slicing": {
            "_target_": "Compose",
            "transforms": [
                {
                    "_target_": "monai_transfer.transforms.ExtractSlicesd",
                    "keys": "image",
                    "strategy": "central_n",
                    "n": N_SLICES,
                    "offsets": [-1, 0, 1],
                },
                {"_target_": "monai_transfer.transforms.ResizeKeepAspectd", "keys": "image", "spatial_size": 32},
            ],
        },
        "aggregation": aggregation,
        "aggregation_k": 2,
    }


def _save_random_weights(bundle: Path, seed: int = 0) -> Path:
    """Build the bundle's ``network_def`` and save random weights as ``models/model.pt``."""
    from monai.bundle import ConfigParser

    from monai_transfer.utils.io import atomic_torch_save

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    torch.manual_seed(seed)
    net = parser.get_parsed_content("network_def")
    return atomic_torch_save(net.state_dict(), bundle / "models" / "model.pt")


def _write_volume(path: Path, arr: np.ndarray) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(arr), np.eye(4)), str(path))
    return path


def _write_labels(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def vol_bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_volume_bundle")
    (root / "configs").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(_tiny_volume_config(), indent=1))
    _save_random_weights(root)
    from monai_transfer.metrics.threshold import save_threshold

    save_threshold(root / "models" / "threshold.json", 0.45, method="youden")
    return root


@pytest.fixture(scope="module")
def adrenal(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """24 real AdrenalMNIST3D validation volumes written as NIfTI (uint8, 64^3), with their labels."""
    if not ADRENAL_NPZ.is_file():
        pytest.skip(f"needs {ADRENAL_NPZ}")
    x, y = load_adrenal("val", n=24, seed=1)
    root = tmp_path_factory.mktemp("adrenal_nifti")
    for i, v in enumerate(x):
        _write_volume(root / f"adrenal_{i:02d}.nii.gz", v)
    return root, y


def _subset(adrenal, dest: Path, n: int) -> tuple[Path, list[int]]:
    src, y = adrenal
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted(src.glob("*.nii.gz"))[:n]
    for f in files:
        shutil.copy(f, dest / f.name)
    return dest, [int(v) for v in y[:n]]


# ------------------------------------------------------------------------------------------------ aggregation
def test_resolve_aggregation_on_hand_made_probabilities():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    fn, desc = resolve_aggregation("mean")
    np.testing.assert_allclose(fn(probs), [1.7 / 3, 1.3 / 3], atol=1e-6)
    assert desc == "mean"
    fn, _ = resolve_aggregation("max")
    np.testing.assert_allclose(fn(probs), [0.2, 0.8], atol=1e-6)
    fn, desc = resolve_aggregation("topk_mean", k_default=2)  # the bundle's aggregation_k
    np.testing.assert_allclose(fn(probs), [0.4, 0.6], atol=1e-6)
    assert desc == "topk_mean(k=2)"
    fn, _ = resolve_aggregation({"method": "topk_mean", "k": 3})
    np.testing.assert_allclose(fn(probs), [1.7 / 3, 1.3 / 3], atol=1e-6)
    fn, desc = resolve_aggregation(lambda p: p[0])
    np.testing.assert_allclose(fn(probs), [0.9, 0.1])
    assert desc == "<lambda>"
    with pytest.raises(ValueError, match="median"):
        resolve_aggregation("median")


def test_list_cases_sorted_recursive_skips_hidden(tmp_path):
    for name in ("b.nii.gz", "a.nii", "sub/c.nii.gz", ".hidden.nii.gz", ".cache/d.nii.gz", "notes.txt", "x.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in list_cases(tmp_path)]
    assert found == ["a.nii", "b.nii.gz", "sub/c.nii.gz"]
    assert [p.name for p in list_cases(tmp_path, (".png",))] == ["x.png"]


# -------------------------------------------------------------------------------------------------- end to end
@requires_shared_data(ADRENAL_NPZ)
def test_volume_bundle_end_to_end(vol_bundle, adrenal, tmp_path):
    images, y = _subset(adrenal, tmp_path / "images", 4)
    names = sorted(p.name for p in images.glob("*.nii.gz"))
    # labels as indices and as class names, rows in another order than the files
    rows = [(n, CLASSES[lab] if i % 2 else str(lab)) for i, (n, lab) in enumerate(zip(names, y))][::-1]
    labels = _write_labels(tmp_path / "labels.csv", rows)
    out = tmp_path / "out"
    code = main(
        ["--bundle", str(vol_bundle), "--images", str(images), "--labels", str(labels), "--output", str(out)] + FAST
    )
    assert code == EXIT_OK

    preds = read_csv(out / "predictions.csv")
    assert [r["id"] for r in preds] == names  # path relative to --images, extension kept
    assert [int(r["label"]) for r in preds] == y
    for r in preds:
        p0, p1 = float(r["prob_normal"]), float(r["prob_adrenal_mass"])
        assert abs(p0 + p1 - 1) < 1e-5
        assert int(r["prediction"]) == int(p1 >= 0.45)  # the stored models/threshold.json
        assert r["prediction_name"] == CLASSES[int(r["prediction"])]
        assert int(r["correct"]) == int(int(r["prediction"]) == int(r["label"]))
        assert int(r["n_slices"]) == N_SLICES
        assert Path(r["image"]).is_file()

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == 4
    assert metrics["threshold"]["value"] == pytest.approx(0.45)
    assert "threshold.json" in metrics["threshold"]["source"]
    assert set(metrics["confidence_intervals"]) == {"auc", "sensitivity", "specificity"}
    assert {"auc", "sensitivity", "specificity"} <= set(metrics["metrics"])
    assert metrics["meta"]["aggregation"] == "mean"
    for png in ("roc.png", "confusion_matrix.png", "reliability.png"):
        assert (out / png).stat().st_size > 1000
    assert read_csv(out / "failures.csv") == []
    assert json.loads((out / "failures.json").read_text()) == {"n_failed": 0, "failures": []}
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_evaluated"], summary["n_labelled"], summary["exit_code"]) == (4, 4, 0)
    assert "evaluated 4 of 4" in (out / "evaluate.log").read_text()

    # the first volume by hand: bundle transforms -> network -> softmax -> mean over its slices
    from monai.bundle import ConfigParser

    from monai_transfer.utils.io import load_state_dict_file

    parser = ConfigParser()
    parser.read_config(str(vol_bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(vol_bundle)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(load_state_dict_file(vol_bundle / "models" / "model.pt"))
    vol = parser.get_parsed_content("volume_preprocessing")({"image": str(images / names[0])})
    slices = parser.get_parsed_content("slicing")(vol)
    with torch.no_grad():
        probs = torch.softmax(net.eval()(torch.stack([s["image"].as_tensor() for s in slices])), 1).mean(0)
    assert float(preds[0]["prob_adrenal_mass"]) == pytest.approx(float(probs[1]), abs=2e-5)


@requires_shared_data(ADRENAL_NPZ)
def test_bad_cases_are_named_and_exit_codes(vol_bundle, adrenal, tmp_path, caplog):
    images, y = _subset(adrenal, tmp_path / "images", 4)
    names = sorted(p.name for p in images.glob("*.nii.gz"))
    good = [adrenal[0] / n for n in names]
    (images / "unreadable.nii.gz").write_bytes(b"this is not a NIfTI file")
    _write_volume(images / "flat2d.nii.gz", np.full((64, 64), 7, np.uint8))
    _write_volume(images / "four_d.nii.gz", np.ones((16, 16, 16, 2), np.uint8))
    _write_volume(images / "empty.nii.gz", np.zeros((16, 16, 16), np.uint8))
    _write_volume(images / "zero_size.nii.gz", np.zeros((0, 16, 16), np.uint8))
    shutil.copy(good[0], images / "no_label.nii.gz")
    shutil.copy(good[1], images / "bad_class.nii.gz")
    rows = [(n, str(lab)) for n, lab in zip(names, y)]
    rows += [(n, "1") for n in ("unreadable.nii.gz", "flat2d.nii.gz", "four_d.nii.gz", "empty.nii.gz")]
    rows += [("zero_size.nii.gz", "0"), ("bad_class.nii.gz", "tumour"), ("missing.nii.gz", "0")]
    labels = _write_labels(tmp_path / "labels.csv", rows)
    args = ["--bundle", str(vol_bundle), "--images", str(images), "--labels", str(labels)] + FAST

    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="monai_transfer.evaluate"):
        code = main(args + ["--output", str(out)])
    assert code == EXIT_FAILURES
    failures = {r["case"]: r for r in read_csv(out / "failures.csv")}
    expected = {
        "unreadable.nii.gz": ("read", "unreadable"),
        "flat2d.nii.gz": ("dimensions", "2D image"),
        "four_d.nii.gz": ("dimensions", "4D image"),
        "empty.nii.gz": ("empty", "every voxel is 0"),
        "zero_size.nii.gz": ("empty", "zero-size"),
        "no_label.nii.gz": ("labels", "label missing"),
        "bad_class.nii.gz": ("labels", "unknown class name 'tumour'"),
        "missing.nii.gz": ("labels", "not among the --images cases"),
    }
    assert set(failures) == set(expected)
    for case, (stage, words) in expected.items():
        assert failures[case]["stage"] == stage, failures[case]
        assert words in failures[case]["reason"], failures[case]
        assert case in caplog.text
    assert json.loads((out / "failures.json").read_text())["n_failed"] == len(expected)
    preds = read_csv(out / "predictions.csv")
    assert [r["id"] for r in preds] == names  # the good ones only
    assert json.loads((out / "metrics.json").read_text())["n_samples"] == 4
    log = (out / "evaluate.log").read_text()
    assert all(case in log for case in expected)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monai_transfer.evaluate"):
        code = main(args + ["--output", str(tmp_path / "out_tolerant"), "--tolerate_failures"])
    assert code == EXIT_OK
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "--tolerate_failures" in r.message]
    assert len(warnings) == 1 and "empty.nii.gz" in warnings[0].message
    assert len(read_csv(tmp_path / "out_tolerant" / "predictions.csv")) == 4


@requires_shared_data(ADRENAL_NPZ)
def test_usage_errors_exit_1(vol_bundle, adrenal, tmp_path, capsys):
    images, _ = _subset(adrenal, tmp_path / "images", 1)
    (tmp_path / "empty_dir").mkdir()
    out = str(tmp_path / "out")
    base = ["--output", out] + FAST
    assert main(["--bundle", str(tmp_path / "nope"), "--images", str(images)] + base) == EXIT_USAGE
    assert main(["--bundle", str(vol_bundle), "--images", str(tmp_path / "empty_dir")] + base) == EXIT_USAGE
    assert main(["--bundle", str(vol_bundle), "--images", str(tmp_path / "nope")] + base) == EXIT_USAGE
    ok = ["--bundle", str(vol_bundle), "--images", str(images)] + base
    assert main(ok + ["--labels", str(tmp_path / "nope.csv")]) == EXIT_USAGE
    assert main(ok + ["--threshold", "1.5"]) == EXIT_USAGE
    assert main(ok + ["--ckpt", str(tmp_path / "nope.pt")]) == EXIT_USAGE
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,class\nx.nii.gz,1\n")
    assert main(ok + ["--labels", str(bad_csv)]) == EXIT_USAGE
    assert main(["--images", str(images)]) == EXIT_USAGE  # argparse: --bundle/--output missing
    assert "required" in capsys.readouterr().err
    # no labels, explicit threshold: predictions only, no metrics
    assert main(ok + ["--threshold", "0.0"]) == EXIT_OK
    (row,) = read_csv(Path(out) / "predictions.csv")
    assert (row["label"], row["correct"], row["prediction_name"], row["threshold"]) == (
        "",
        "",
        "adrenal_mass",
        "0.000000",
    )
    assert not (Path(out) / "metrics.json").exists()


@requires_shared_data(ADRENAL_NPZ)
def test_memory_does_not_grow_with_case_count(vol_bundle, adrenal, tmp_path, monkeypatch):
    """RSS sampled after each of 24 volumes stays flat: nothing of a finished case is kept (Linux /proc).

    Keeping each volume (64^3 float32 = 1 MiB) and its slices would add >= 20 MiB over the last 20 cases. The
    200-volume peak-RSS measurement belongs to the benchmark (``summary.json`` reports ``peak_rss_mb``).
    """
    statm = Path("/proc/self/statm")
    if not statm.is_file():
        pytest.skip("needs /proc/self/statm (Linux) to read the resident set size")
    import os

    import monai_transfer.evaluate.run as ev

    page = os.sysconf("SC_PAGE_SIZE")
    rss: list[float] = []
    real = ev.streaming.volume_case

    def spy(*a, **k):
        res = real(*a, **k)
        rss.append(int(statm.read_text().split()[1]) * page / (1 << 20))
        return res

    monkeypatch.setattr(ev.streaming, "volume_case", spy)
    code = main(["--bundle", str(vol_bundle), "--images", str(adrenal[0]), "--output", str(tmp_path / "o")] + FAST)
    assert code == EXIT_OK and len(rss) == 24
    growth = max(rss[4:]) - rss[3]
    print("RSS MiB per case:", [round(r, 1) for r in rss])
    assert growth < 12, f"RSS grew by {growth:.1f} MiB over 20 volumes: {[round(r, 1) for r in rss]}"


# ------------------------------------------------------------------------------------------- the real bundles
def _bundle_copy(name: str, tmp_path: Path) -> Path:
    """The real bundle when it has models/model.pt, else a temp copy of its configs with random weights."""
    bundle = REPO_ROOT / "bundles" / name
    if not (bundle / "configs" / "inference.json").is_file():
        pytest.skip(f"bundles/{name}/configs/inference.json does not exist yet")
    if (bundle / "models" / "model.pt").is_file():
        return bundle
    copy = tmp_path / name
    shutil.copytree(bundle / "configs", copy / "configs")
    _save_random_weights(copy)
    return copy


@requires_shared_data(PNEUMONIA_NPZ)
def test_xray_bundle_on_2d_nifti(tmp_path):
    bundle = _bundle_copy("xray", tmp_path)
    x, y = load_pneumonia("val", n=6, seed=3)
    images = tmp_path / "images"
    names = []
    for i, img in enumerate(x):
        names.append(f"cxr_{i}.nii.gz")
        _write_volume(images / names[-1], img)  # as monai_transfer.data.npz writes 2D NIfTI: axis 0 = rows
    from PIL import Image

    names.append("cxr_png.png")  # 2D bundles also take PNG/JPEG/DICOM
    Image.fromarray(x[0]).save(images / names[-1])
    y = np.concatenate([y, y[:1]])
    _write_volume(images / "ct_volume.nii.gz", np.ones((8, 8, 8), np.uint8))  # 3D on a 2D bundle
    rows = [(n, ["normal", "pneumonia"][v]) for n, v in zip(names, y)] + [("ct_volume.nii.gz", "normal")]
    labels = _write_labels(tmp_path / "labels.csv", rows)
    out = tmp_path / "out"
    args = ["--bundle", str(bundle), "--images", str(images), "--labels", str(labels), "--output", str(out)]
    assert main(args + FAST + ["--tolerate_failures"]) == EXIT_OK
    preds = read_csv(out / "predictions.csv")
    assert [r["id"] for r in preds] == sorted(names)
    assert sorted(int(r["label"]) for r in preds) == sorted(int(v) for v in y)
    assert all(abs(float(r["prob_normal"]) + float(r["prob_pneumonia"]) - 1) < 1e-5 for r in preds)
    assert "n_slices" not in preds[0]
    (fail,) = read_csv(out / "failures.csv")
    assert (fail["case"], fail["stage"]) == ("ct_volume.nii.gz", "dimensions")
    assert json.loads((out / "metrics.json").read_text())["n_samples"] == 7
    by_id = {r["id"]: r for r in preds}  # the same image as PNG and as 2D NIfTI gives the same probability
    png, nifti = by_id["cxr_png.png"], by_id["cxr_0.nii.gz"]
    assert float(png["prob_pneumonia"]) == pytest.approx(float(nifti["prob_pneumonia"]), abs=1e-4)


@requires_shared_data(ADRENAL_NPZ)
def test_ct_slices_bundle(adrenal, tmp_path):
    bundle = _bundle_copy("ct_slices", tmp_path)
    images, y = _subset(adrenal, tmp_path / "images", 3)
    names = sorted(p.name for p in images.glob("*.nii.gz"))
    labels = _write_labels(tmp_path / "labels.csv", [(n, str(v)) for n, v in zip(names, y)])
    out = tmp_path / "out"
    args = ["--bundle", str(bundle), "--images", str(images), "--labels", str(labels), "--output", str(out)]
    assert main(args + FAST) == EXIT_OK
    preds = read_csv(out / "predictions.csv")
    assert [r["id"] for r in preds] == names  # path relative to --images, extension kept
    assert all(int(r["n_slices"]) >= 1 for r in preds)
    assert json.loads((out / "metrics.json").read_text())["n_samples"] == 3
    assert json.loads((out / "metrics.json").read_text())["meta"]["calibration"]["volume_platt"] is None
    # a calibration.json with a Platt step for the bundle's mean pooling: applied after pooling, reported
    from monai_transfer.metrics.volume_calibration import VolumePlatt

    platt = VolumePlatt(0.5, -1.0, "mean")
    cal = {"method": "temperature", "temperature": 1.0, "mode": "binary", "volume_platt": platt.to_dict()}
    (bundle / "models" / "calibration.json").write_text(json.dumps(cal))
    for sub, extra in (("platt", []), ("none", ["--calibration", "none"])):
        args = ["--bundle", str(bundle), "--images", str(images), "--labels", str(labels), "--output", str(out / sub)]
        assert main(args + FAST + extra) == EXIT_OK
    p_raw = np.array([float(r["prob_adrenal_mass"]) for r in preds])
    p_platt = np.array([float(r["prob_adrenal_mass"]) for r in read_csv(out / "platt" / "predictions.csv")])
    p_none = np.array([float(r["prob_adrenal_mass"]) for r in read_csv(out / "none" / "predictions.csv")])
    np.testing.assert_allclose(p_platt, platt(p_raw), atol=1e-5)
    np.testing.assert_allclose(p_none, p_raw, atol=1e-6)  # --calibration none: neither temperature nor Platt
    meta = json.loads((out / "platt" / "metrics.json").read_text())["meta"]["calibration"]
    assert meta["volume_platt"] == platt.to_dict() and meta["applied"]


@pytest.mark.slow
def test_module_runs_as_script(tmp_path):
    """``python -m monai_transfer.evaluate`` works and exits 1 on a folder that is not a bundle (slow: cold imports)."""
    import os
    import subprocess

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai_transfer.evaluate",
            "--bundle",
            str(tmp_path),
            "--images",
            str(tmp_path),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == EXIT_USAGE
    assert "no configs/inference.json" in proc.stderr


# ------------------------------------------------------------------------------ reliability round 2 (issue 19)
def _noise_volumes(dest: Path, n: int, seed: int = 0, prefix: str = "noise") -> list[Path]:
    """``n`` random 16^3 uint8 volumes (not constant, so they pass the empty-image check)."""
    rng = np.random.default_rng(seed)
    return [
        _write_volume(dest / f"{prefix}_{i}.nii.gz", rng.integers(0, 255, (16, 16, 16), dtype=np.uint8))
        for i in range(n)
    ]


def _modified_checkpoint(vol_bundle: Path, dest: Path, edit) -> tuple[Path, str]:
    """A copy of the tiny bundle's weights with ``edit(tensor)`` applied in place to the last 2D weight (the head)."""
    from monai_transfer.utils.io import atomic_torch_save, load_state_dict_file

    sd = load_state_dict_file(vol_bundle / "models" / "model.pt")
    key = [k for k, v in sd.items() if k.endswith("weight") and v.ndim == 2][-1]
    edit(sd[key])
    return atomic_torch_save(sd, dest), key


def test_nan_checkpoint_refused_naming_file_and_tensor(vol_bundle, tmp_path, caplog):
    """Diverged weights (NaN in the head) gave exit 0 and all-negative predictions; now exit 1 naming both."""
    _noise_volumes(tmp_path / "images", 2)
    ckpt, key = _modified_checkpoint(vol_bundle, tmp_path / "diverged.pt", lambda t: t.view(-1)[:3].fill_(float("nan")))
    labels = _write_labels(tmp_path / "labels.csv", [("noise_0.nii.gz", "0"), ("noise_1.nii.gz", "1")])
    base = ["--bundle", str(vol_bundle), "--images", str(tmp_path / "images"), "--ckpt", str(ckpt)] + FAST
    for extra in ([], ["--labels", str(labels)]):
        caplog.clear()
        out = tmp_path / f"out{len(extra)}"
        with caplog.at_level(logging.INFO, logger="monai_transfer.evaluate"):
            code = main(base + extra + ["--output", str(out)])
        assert code == EXIT_USAGE
        errors = " ".join(r.message for r in caplog.records if r.levelno >= logging.ERROR)
        assert str(ckpt) in errors and key in errors and "3 NaN" in errors, errors
        assert not (out / "predictions.csv").exists()  # no all-negative predictions written


def test_non_finite_probabilities_are_failures(vol_bundle, tmp_path, caplog):
    """Finite but overflowing weights (3e38) give inf logits and NaN probabilities: each case is a named failure."""
    _noise_volumes(tmp_path / "images", 2)
    ckpt, _ = _modified_checkpoint(vol_bundle, tmp_path / "overflow.pt", lambda t: t.fill_(3e38))
    labels = _write_labels(tmp_path / "labels.csv", [("noise_0.nii.gz", "0"), ("noise_1.nii.gz", "1")])
    out = tmp_path / "out"
    args = ["--bundle", str(vol_bundle), "--images", str(tmp_path / "images"), "--ckpt", str(ckpt)]
    with caplog.at_level(logging.INFO, logger="monai_transfer.evaluate"):
        code = main(args + ["--labels", str(labels), "--output", str(out)] + FAST)
    assert code == EXIT_FAILURES
    failures = read_csv(out / "failures.csv")
    assert [f["case"] for f in failures] == ["noise_0.nii.gz", "noise_1.nii.gz"]
    assert all(f["stage"] == "inference" and "non-finite" in f["reason"] for f in failures), failures
    assert read_csv(out / "predictions.csv") == []  # no case is reported as a (wrong) negative
    assert not (out / "metrics.json").exists()
    assert "noise_1.nii.gz" in caplog.text


def test_threshold_json_out_of_range_or_nan_refused(vol_bundle, tmp_path, caplog):
    _noise_volumes(tmp_path / "images", 1)
    for i, (text, shown) in enumerate((('{"threshold": 7.0}', "7.0"), ('{"threshold": NaN}', "nan"))):
        caplog.clear()
        bundle = tmp_path / f"bundle_{i}"
        shutil.copytree(vol_bundle, bundle)
        (bundle / "models" / "threshold.json").write_text(text)
        with caplog.at_level(logging.INFO, logger="monai_transfer.evaluate"):
            code = main(
                ["--bundle", str(bundle), "--images", str(tmp_path / "images"), "--output", str(tmp_path / "o")]
            )
        assert code == EXIT_USAGE
        errors = " ".join(r.message for r in caplog.records if r.levelno >= logging.ERROR)
        # the file, then the value and the rule
        assert re.search(re.escape(str(bundle / "models" / "threshold.json")) + rf".*\b{shown}\b.*\[0, 1\]", errors), (
            errors
        )


def test_dangling_symlink_is_a_named_failure(vol_bundle, tmp_path):
    images = tmp_path / "images"
    _noise_volumes(images, 2)
    (images / "ghost.nii.gz").symlink_to(tmp_path / "moved_away.nii.gz")
    (images / "loop.nii.gz").symlink_to(images / "loop.nii.gz")
    rows = [("noise_0.nii.gz", "0"), ("noise_1.nii.gz", "1"), ("ghost.nii.gz", "1"), ("loop.nii.gz", "0")]
    labels = _write_labels(tmp_path / "labels.csv", rows)
    for extra in ([], ["--labels", str(labels)]):
        out = tmp_path / f"out{len(extra)}"
        code = main(["--bundle", str(vol_bundle), "--images", str(images), "--output", str(out)] + extra + FAST)
        assert code == EXIT_FAILURES
        failures = {f["case"]: f for f in read_csv(out / "failures.csv")}
        assert set(failures) == {"ghost.nii.gz", "loop.nii.gz"}
        assert failures["ghost.nii.gz"]["stage"] == failures["loop.nii.gz"]["stage"] == "read"
        assert "dangling symbolic link" in failures["ghost.nii.gz"]["reason"]
        assert str(tmp_path / "moved_away.nii.gz") in failures["ghost.nii.gz"]["reason"]
        assert "symbolic link loop" in failures["loop.nii.gz"]["reason"]
        assert [r["id"] for r in read_csv(out / "predictions.csv")] == ["noise_0.nii.gz", "noise_1.nii.gz"]


def test_truncated_bundle_json_exit_1_naming_file_and_position(vol_bundle, tmp_path, caplog):
    _noise_volumes(tmp_path / "images", 1)
    for name in ("inference.json", "metadata.json"):
        caplog.clear()
        bundle = tmp_path / f"bundle_{name}"
        shutil.copytree(vol_bundle, bundle)
        config = bundle / "configs" / name
        if name == "metadata.json":
            config.write_text(json.dumps({"version": "0.1.0", "network_data_format": {}}))
        text = config.read_text()
        config.write_text(text[: len(text) // 2])
        with caplog.at_level(logging.INFO, logger="monai_transfer.evaluate"):
            code = main(
                ["--bundle", str(bundle), "--images", str(tmp_path / "images"), "--output", str(tmp_path / "o")]
            )
        assert code == EXIT_USAGE
        errors = " ".join(r.message for r in caplog.records if r.levelno >= logging.ERROR)
        assert re.search(re.escape(str(config)) + r".*not valid JSON.*line \d+ column \d+", errors), errors


def test_non_utf8_file_names_are_written_escaped(vol_bundle, tmp_path):
    images = tmp_path / "images"
    _noise_volumes(images, 2)
    odd = images / os.fsdecode(b"caso_\xff\xfe.nii.gz")  # bytes that are not UTF-8 (surrogate-escaped by Python)
    shutil.copy(images / "noise_0.nii.gz", odd)
    labels = _write_labels(tmp_path / "labels.csv", [("noise_0.nii.gz", "0"), ("noise_1.nii.gz", "1")])
    out = tmp_path / "out"
    args = ["--bundle", str(vol_bundle), "--images", str(images)] + FAST
    assert main(args + ["--labels", str(labels), "--output", str(out)]) == EXIT_FAILURES  # no label for caso_
    (fail,) = read_csv(out / "failures.csv")  # read_csv decodes UTF-8: the files are valid UTF-8
    assert fail["case"] == "caso_\\xff\\xfe.nii.gz" and fail["stage"] == "labels"
    assert json.loads((out / "failures.json").read_text(encoding="utf-8"))["failures"][0]["case"] == fail["case"]
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["failed_cases"] == [fail["case"]]
    assert "caso_\\xff\\xfe" in (out / "evaluate.log").read_text(encoding="utf-8")

    out2 = tmp_path / "out_unlabelled"
    assert main(args + ["--output", str(out2)]) == EXIT_OK
    preds = read_csv(out2 / "predictions.csv")
    assert [r["id"] for r in preds] == ["caso_\\xff\\xfe.nii.gz", "noise_0.nii.gz", "noise_1.nii.gz"]  # row kept
    assert preds[0]["prob_normal"] == preds[1]["prob_normal"]  # same volume, same probability


def test_disk_full_while_writing_reports_exit_1_naming_file(vol_bundle, tmp_path, monkeypatch, caplog):
    import errno

    import monai_transfer.utils.io as io_mod

    _noise_volumes(tmp_path / "images", 1)
    out = tmp_path / "out"

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_mod.os, "fsync", disk_full)  # every report file "fills the disk" when it is flushed
    with caplog.at_level(logging.INFO, logger="monai_transfer.evaluate"):
        code = main(["--bundle", str(vol_bundle), "--images", str(tmp_path / "images"), "--output", str(out)] + FAST)
    monkeypatch.undo()
    assert code == EXIT_USAGE
    errors = " ".join(r.message for r in caplog.records if r.levelno >= logging.ERROR)
    assert str(out / "predictions.csv") in errors and "No space left on device" in errors, errors
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_2d_bundle_non_finite_probabilities_and_dangling_link(vol_bundle, tmp_path):
    """The 2D path (images batched through ``flush``): NaN probabilities and a broken link are named failures."""
    from PIL import Image

    config = _tiny_volume_config()
    for key in ("volume_preprocessing", "slicing", "aggregation", "aggregation_k"):
        config.pop(key)
    config["preprocessing"] = {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "monai_transfer.transforms.LoadMedicalImaged", "keys": "image", "expected_ndim": 2},
            {"_target_": "ScaleIntensityd", "keys": "image", "minv": 0.0, "maxv": 1.0},
            {"_target_": "monai_transfer.transforms.ResizeKeepAspectd", "keys": "image", "spatial_size": 32},
            {"_target_": "RepeatChanneld", "keys": "image", "repeats": 3},
        ],
    }
    bundle = tmp_path / "bundle2d"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    _save_random_weights(bundle)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(images / f"img_{i}.png")
    (images / "gone.png").symlink_to(tmp_path / "nowhere.png")
    args = ["--bundle", str(bundle), "--images", str(images)] + FAST
    out = tmp_path / "out"
    assert main(args + ["--output", str(out)]) == EXIT_FAILURES  # finite weights: only the link fails
    assert [(f["case"], f["stage"]) for f in read_csv(out / "failures.csv")] == [("gone.png", "read")]
    assert [r["id"] for r in read_csv(out / "predictions.csv")] == ["img_0.png", "img_1.png", "img_2.png"]

    ckpt, _ = _modified_checkpoint(bundle, tmp_path / "overflow.pt", lambda t: t.fill_(3e38))
    out = tmp_path / "out_overflow"
    assert main(args + ["--ckpt", str(ckpt), "--output", str(out)]) == EXIT_FAILURES
    failures = {f["case"]: f for f in read_csv(out / "failures.csv")}
    assert set(failures) == {"gone.png", "img_0.png", "img_1.png", "img_2.png"}
    assert all("non-finite" in failures[f"img_{i}.png"]["reason"] for i in range(3))
    assert read_csv(out / "predictions.csv") == []
