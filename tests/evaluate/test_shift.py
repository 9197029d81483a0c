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
"""``python -m monai_transfer.evaluate --shift_suite``: the labelled cases re-scored under the acquisition-shift suite
through the evaluation's own inference path (a copy of the xray bundle with random weights, PNGs made here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_transfer.evaluate import EXIT_OK, EXIT_USAGE, main
from monai_transfer.evaluate.cases import CasePrediction, EvaluationUsageError
from monai_transfer.evaluate.shift import bundle_shift_predictions, parse_families, select_cases
from monai_transfer.metrics.shift import PREVALENCE_FAMILY
from tests.utils import REPO_ROOT

XRAY = REPO_ROOT / "bundles" / "xray"
FAST = ["--n_bootstrap", "0", "--device", "cpu", "--no_progress", "--batch_size", "8", "--image_size", "32"]


def _parser(bundle: Path, **ids):
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config(str(bundle / "configs" / "inference.json"))
    p["bundle_root"] = str(bundle)
    for k, v in ids.items():
        p[k] = v
    p.get_parsed_content("imports")
    return p


@pytest.fixture
def xray(tmp_path) -> tuple[Path, Path, Path]:
    """A copy of the xray bundle's configs with random weights (32 px), 10 PNGs and their labels CSV."""
    from PIL import Image

    from monai_transfer.utils.io import atomic_torch_save

    bundle = tmp_path / "xray"
    shutil.copytree(XRAY / "configs", bundle / "configs")
    torch.manual_seed(0)
    net = _parser(bundle, image_size=32).get_parsed_content("member_def")
    atomic_torch_save(net.state_dict(), bundle / "models" / "model.pt")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:36]
    rows = ["image,label"]
    for i in range(10):
        img = (xx * (i + 1) * 2 + yy * (9 - i) + rng.integers(0, 60, (40, 36))) % 256
        Image.fromarray(img.astype(np.uint8)).save(images / f"img_{i}.png")
        rows.append(f"img_{i}.png,{['normal', 'pneumonia'][i % 2]}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return bundle, images, labels


def test_shift_suite_writes_json_table_and_plot(xray, tmp_path):
    bundle, images, labels = xray
    out = tmp_path / "out"
    args = ["--bundle", str(bundle), "--images", str(images), "--labels", str(labels), "--output", str(out)]
    fams = "gaussian_noise,brightness_up,jpeg"
    assert main(args + FAST + ["--threshold", "0.5", "--shift_suite", "--shift_families", fams]) == EXIT_OK
    scores = json.loads((out / "shift.json").read_text())
    assert list(scores["families"]) == ["gaussian_noise", "brightness_up", "jpeg", PREVALENCE_FAMILY]
    for fam in ("gaussian_noise", "brightness_up", "jpeg"):
        assert sorted(scores["families"][fam]["severities"]) == ["1", "2", "3", "4", "5"]
    assert scores["threshold"] == 0.5 and scores["meta"]["n_cases"] == 10 and "Di Salvo" in scores["source"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert scores["clean"]["auc"] == pytest.approx(metrics["metrics"]["auc"])  # the evaluation's own predictions
    assert "| gaussian_noise |" in (out / "shift.md").read_text()
    assert (out / "shift.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shift_suite"] == str(out / "shift.json")


def test_shifted_predictions_equal_corrupting_by_hand(xray, tmp_path):
    """The suite's probabilities are the bundle's: load -> AcquisitionShift -> normalise -> network -> softmax."""
    from monai.transforms import Compose

    from monai_transfer.evaluate import evaluate_bundle
    from monai_transfer.transforms.shift import AcquisitionShift

    bundle, images, labels = xray
    res = evaluate_bundle(
        bundle, images, tmp_path / "o", labels=labels, device="cpu", n_bootstrap=0, progress=False, threshold=0.5,
        overrides={"image_size": 32}, shift_suite=True, shift_families="contrast_down",
    )  # fmt: skip
    assert res.exit_code == EXIT_OK and "shift_json" in res.files
    got = json.loads(Path(res.files["shift_json"]).read_text())["families"]["contrast_down"]["severities"]["5"]
    p = _parser(bundle, image_size=32)
    load, final = Compose(p.get_parsed_content("load_transforms")), Compose(p.get_parsed_content("final_transforms"))
    net = p.get_parsed_content("member_def").eval()
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    shift = AcquisitionShift("contrast_down", 5)
    files = sorted(images.glob("*.png"), key=lambda f: f.name)
    x = torch.stack([final({"image": shift(load({"image": str(f)})["image"])})["image"] for f in files])
    with torch.no_grad():
        probs = torch.softmax(net(x.as_subclass(torch.Tensor).float()), 1)[:, 1].numpy()
    y = np.array([int(f.stem.split("_")[1]) % 2 for f in files])
    from monai_transfer.metrics.shift import score_condition

    clean, shifted = bundle_shift_predictions(
        bundle, bundle / "models" / "model.pt", files, "contrast_down", {"image_size": 32}, device="cpu"
    )
    np.testing.assert_allclose(shifted["contrast_down"][5], probs, atol=1e-5)
    by_case = {Path(p.path).name: p.probs[1] for p in res.predictions}
    np.testing.assert_allclose(clean, [by_case[f.name] for f in files], atol=1e-5)
    assert got["auc"] == pytest.approx(score_condition(probs, y, 0.5)["auc"])
    assert got["specificity"] == pytest.approx(score_condition(probs, y, 0.5)["specificity"])


def test_metrics_json_says_how_the_threshold_was_chosen(xray, tmp_path):
    """A shift-robust threshold file (as ``accuracy_xray.py`` writes it) is applied as given and ``metrics.json``
    records its method and rule; a plain number records none."""
    from monai_transfer.metrics.threshold import save_threshold

    bundle, images, labels = xray
    t = save_threshold(tmp_path / "t.json", 0.42, method="shift_robust", rule="worst family", chosen_on="OOF",
                       applies_to="uncalibrated probabilities", calibration_sha256=None)  # fmt: skip
    base = ["--bundle", str(bundle), "--images", str(images), "--labels", str(labels)] + FAST
    assert main(base + ["--output", str(tmp_path / "a"), "--threshold", str(t), "--calibration", "none"]) == EXIT_OK
    thr = json.loads((tmp_path / "a" / "metrics.json").read_text())["threshold"]
    assert thr["value"] == 0.42 and thr["how_chosen"]["method"] == "shift_robust" and thr["how_chosen"]["rule"]
    assert main(base + ["--output", str(tmp_path / "b"), "--threshold", "0.5"]) == EXIT_OK
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["threshold"]["how_chosen"] is None


def test_shift_suite_usage_errors_exit_1(xray, tmp_path, caplog):
    bundle, images, labels = xray
    base = ["--bundle", str(bundle), "--images", str(images), "--output", str(tmp_path / "o")] + FAST
    assert main(base + ["--shift_suite"]) == EXIT_USAGE
    assert "--shift_suite scores predictions against labels: pass --labels" in caplog.text
    assert main(base + ["--labels", str(labels), "--shift_suite", "--shift_families", "fog"]) == EXIT_USAGE
    assert "--shift_families: unknown ['fog']" in caplog.text
    assert main(base + ["--labels", str(labels), "--shift_suite", "--shift_max_cases", "1"]) == EXIT_USAGE


def test_parse_families_and_stratified_subsample():
    assert parse_families(None) == parse_families("all") and "exposure" in parse_families(None)
    assert parse_families("jpeg, pixelate") == ["jpeg", "pixelate"]
    with pytest.raises(EvaluationUsageError, match="unknown"):
        parse_families([])
    preds = [CasePrediction(f"c{i}", f"c{i}", np.array([0.5, 0.5]), int(i < 30)) for i in range(100)]
    preds.append(CasePrediction("nolabel", "nolabel", np.array([0.5, 0.5]), None))
    sub = select_cases(preds, 20, seed=1)
    assert len(sub) == 20 and sum(p.label for p in sub) == 6  # 30 % positives kept
    assert [p.case_id for p in sub] == [p.case_id for p in preds if p in sub]  # case order kept
    assert select_cases(preds, 20, seed=1) == sub and len(select_cases(preds, None)) == 100
