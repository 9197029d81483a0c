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
"""One inference path: ``inference.json``'s evaluator and ``python -m monai_transfer.evaluate`` run the same bundle
components (preprocessing, network_def + checkpoint, inferer, postprocessing), so calibration, TTA and ensembles are
applied identically; train-time validation preprocessing equals inference preprocessing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_transfer.evaluate import EXIT_OK, EXIT_USAGE, evaluate_bundle, main
from tests.utils import REPO_ROOT, read_csv

__all__: list[str] = []

XRAY = REPO_ROOT / "bundles" / "xray"
CT = REPO_ROOT / "bundles" / "ct_slices"
T = 2.5  # the temperature of the tests' calibration.json


def _parser(config: Path, bundle_root: Path, **ids):
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config(str(config))
    p["bundle_root"] = str(bundle_root)
    for k, v in ids.items():
        p[k] = v
    p.get_parsed_content("imports")
    return p


def _member(bundle: Path, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return _parser(bundle / "configs" / "inference.json", bundle).get_parsed_content("member_def").eval()


@pytest.fixture
def xray(tmp_path) -> tuple[Path, Path]:
    """A copy of the xray bundle's configs with random weights, and a folder of 4 PNGs made here."""
    from PIL import Image

    from monai_transfer.utils.io import atomic_torch_save

    bundle = tmp_path / "xray"
    shutil.copytree(XRAY / "configs", bundle / "configs")
    atomic_torch_save(_member(bundle, 0).state_dict(), bundle / "models" / "model.pt")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:72, 0:60]
    for i in range(4):
        img = (xx * (i + 1) * 2 + yy * (3 - i) + rng.integers(0, 60, (72, 60))) % 256
        Image.fromarray(img.astype(np.uint8)).save(images / f"img_{i}.png")
    return bundle, images


def _inputs(bundle: Path, images: Path) -> torch.Tensor:
    pre = _parser(bundle / "configs" / "inference.json", bundle).get_parsed_content("preprocessing")
    return torch.stack([pre({"image": str(f)})["image"].as_tensor() for f in sorted(images.glob("*.png"))])


def _cli_probs(bundle: Path, images: Path, out: Path, **kw) -> np.ndarray:
    res = evaluate_bundle(bundle, images, out, device="cpu", n_bootstrap=0, progress=False, **kw)
    assert res.exit_code == EXIT_OK and not res.failures
    return np.stack([p.probs for p in sorted(res.predictions, key=lambda p: p.case_id)])


def _inference_json_probs(bundle: Path, images: Path, out: Path, **ids) -> np.ndarray:
    """Run the bundle's own evaluator (``inference.json``), read its ``predictions.csv``."""
    p = _parser(bundle / "configs" / "inference.json", bundle, input_dir=str(images), output_dir=str(out), **ids)
    p["device"] = "$torch.device('cpu')"
    p.get_parsed_content("initialize")
    p.get_parsed_content("run")
    rows = sorted(read_csv(out / "predictions.csv"), key=lambda r: r["file_name"])
    return np.array([[float(r["prob_normal"]), float(r["prob_pneumonia"])] for r in rows])


def test_train_validation_and_inference_preprocessing_identical(xray, tmp_path):
    """xray: ``validate#preprocessing`` of train.json == ``preprocessing`` of inference.json, same file."""
    bundle, images = xray
    f = str(sorted(images.glob("*.png"))[1])
    train = _parser(XRAY / "configs" / "train.json", XRAY).get_parsed_content("validate#preprocessing")
    infer = _parser(XRAY / "configs" / "inference.json", XRAY).get_parsed_content("preprocessing")
    a, b = train({"image": f})["image"], infer({"image": f})["image"]
    assert a.shape == b.shape == (3, 64, 64)
    assert torch.equal(a.as_tensor(), b.as_tensor())


def test_ct_slices_validation_and_inference_preprocessing_identical(tmp_path):
    """ct_slices: slices of train.json's ``validate#preprocessing`` == those of inference.json's ``preprocessing``."""
    import nibabel as nib

    vol = np.random.default_rng(1).integers(0, 255, (40, 36, 30)).astype(np.uint8)
    f = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(f))
    train = _parser(CT / "configs" / "train.json", CT).get_parsed_content("validate#preprocessing")
    infer = _parser(CT / "configs" / "inference.json", CT).get_parsed_content("preprocessing")
    a, b = train({"image": str(f)}), infer({"image": str(f)})
    assert len(a) == len(b) > 1
    for sa, sb in zip(a, b):
        assert torch.equal(torch.as_tensor(sa["image"]), torch.as_tensor(sb["image"]))


def test_calibration_applied_by_cli_and_inference_json_like_by_hand(xray, tmp_path):
    from monai_transfer.metrics.calibration import apply_temperature, save_calibration

    bundle, images = xray
    net = _member(bundle, 0)
    with torch.no_grad():
        logits = net(_inputs(bundle, images)).double().numpy()
    raw = _cli_probs(bundle, images, tmp_path / "raw")  # no calibration.json: T = 1
    np.testing.assert_allclose(raw, apply_temperature(logits, 1.0, mode="multiclass"), atol=1e-5)
    save_calibration(bundle / "models" / "calibration.json", T, fitted_on="test")
    expected = apply_temperature(logits, T, mode="multiclass")
    assert np.abs(expected - raw).max() > 1e-3  # the temperature changes the probabilities
    np.testing.assert_allclose(_cli_probs(bundle, images, tmp_path / "cal"), expected, atol=1e-5)
    np.testing.assert_allclose(_inference_json_probs(bundle, images, tmp_path / "inf"), expected, atol=2e-6)
    summary = json.loads((tmp_path / "cal" / "summary.json").read_text())
    assert summary["calibration"]["temperature"] == T and summary["calibration"]["applied"]
    # --calibration none: the raw probabilities again
    np.testing.assert_allclose(_cli_probs(bundle, images, tmp_path / "none", calibration="none"), raw, atol=1e-7)


def test_tta_off_by_default_and_on_with_option(xray, tmp_path):
    from monai_transfer.inferers import TTAInferer

    bundle, images = xray
    net = _member(bundle, 0)
    x = _inputs(bundle, images)
    with torch.no_grad():
        plain = torch.softmax(net(x), 1).double().numpy()
        tta = torch.softmax(TTAInferer(rotations=[-5, 5], scales=[0.95, 1.05])(x, net), 1).double().numpy()
    assert np.abs(tta - plain).max() > 1e-4
    np.testing.assert_allclose(_cli_probs(bundle, images, tmp_path / "off"), plain, atol=1e-5)
    np.testing.assert_allclose(_cli_probs(bundle, images, tmp_path / "on", tta=True), tta, atol=1e-5)
    np.testing.assert_allclose(_inference_json_probs(bundle, images, tmp_path / "inf", use_tta=True), tta, atol=2e-6)
    assert json.loads((tmp_path / "on" / "summary.json").read_text())["inferer"] == "TTAInferer"


def test_ensemble_bundle_evaluates_as_one_model(xray, tmp_path):
    from monai_transfer.networks.nets import save_ensemble_checkpoint
    from monai_transfer.utils.io import atomic_torch_save

    bundle, images = xray
    members = [_member(bundle, s) for s in (1, 2)]
    files = [atomic_torch_save(m.state_dict(), tmp_path / f"fold_{i}.pt") for i, m in enumerate(members)]
    save_ensemble_checkpoint(_member(bundle, 0), files, bundle / "models" / "model.pt")
    x = _inputs(bundle, images)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0).double().numpy()
    got = _cli_probs(bundle, images, tmp_path / "ens", overrides={"num_members": 2})
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(
        _inference_json_probs(bundle, images, tmp_path / "inf", num_members=2), expected, atol=2e-6
    )
    # the same model.pt as a single network does not fit: the CLI refuses it (exit 1)
    assert (
        main(["--bundle", str(bundle), "--images", str(images), "--output", str(tmp_path / "x"), "--device", "cpu"])
        == 1
    )


def test_threshold_chosen_on_calibrated_probabilities_needs_the_calibration(xray, tmp_path, caplog):
    from monai_transfer.metrics.calibration import save_calibration
    from monai_transfer.metrics.threshold import save_threshold

    bundle, images = xray
    cal = bundle / "models" / "calibration.json"
    save_threshold(
        bundle / "models" / "threshold.json", 0.4, applies_to=f"probabilities after temperature scaling with {cal}"
    )
    args = ["--bundle", str(bundle), "--images", str(images), "--device", "cpu", "--n_bootstrap", "0", "--no_progress"]
    assert main(args + ["--output", str(tmp_path / "a")]) == EXIT_USAGE
    assert "threshold.json applies to probabilities after temperature scaling" in caplog.text
    save_calibration(cal, T)
    assert main(args + ["--output", str(tmp_path / "b")]) == EXIT_OK
    rows = read_csv(tmp_path / "b" / "predictions.csv")
    assert {r["threshold"] for r in rows} == {"0.400000"}
    assert main(args + ["--output", str(tmp_path / "c"), "--calibration", "none"]) == EXIT_USAGE
