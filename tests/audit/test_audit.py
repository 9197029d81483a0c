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
"""``python -m monai_transfer.audit`` and the bundle's ``audit`` entry on a data set the test builds."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_transfer.audit import audit_report, main, write_audit
from monai_transfer.data import bundle_datalists
from monai_transfer.engines.workflow import run_description
from tests.utils import REPO_ROOT, assert_png, read_csv


def _image(rng: np.random.Generator, size: int = 96) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size] / size
    a = np.zeros((size, size))
    for _ in range(5):
        cy, cx, s = rng.uniform(0.1, 0.9, 3) * [1, 1, 0.25]
        a += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (s + 0.05) ** 2))
    a = (a - a.min()) / (a.max() - a.min()) * 220 + 10
    return Image.fromarray(a.astype(np.uint8))


def _leaky_csv(root: Path) -> Path:
    """12 images per class split train/val by a CSV, plus: a resized copy of a train image placed in val (leak),
    a JPEG copy of another train image under the other label (label conflict), and a broken PNG."""
    rng = np.random.default_rng(11)
    rows = []
    for c in ("normal", "pneumonia"):
        (root / c).mkdir(parents=True)
        for i in range(12):
            _image(rng).save(root / c / f"{i}.png")
            rows.append([f"{c}/{i}.png", c, "val" if i >= 9 else "train"])
    Image.open(root / "normal" / "0.png").resize((60, 60), Image.BILINEAR).save(root / "pneumonia" / "copy_of_n0.png")
    rows.append(["pneumonia/copy_of_n0.png", "pneumonia", "val"])  # leak + label conflict
    Image.open(root / "normal" / "1.png").convert("L").save(root / "normal" / "n1_again.jpg", quality=80)
    rows.append(["normal/n1_again.jpg", "normal", "val"])  # leak, same label
    (root / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rows.append(["normal/broken.png", "normal", "train"])
    path = root / "list.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "split"])
        w.writerows(rows)
    return path


def test_audit_cli_reports_leaks_conflicts_balance_and_unreadable(tmp_path, capsys):
    data = _leaky_csv(tmp_path / "data")
    out = tmp_path / "audit"
    rc = main(
        [str(data), "--output", str(out), "--cache_dir", str(tmp_path / "cache"), "--no_progress", "--fail_on_leak"]
    )
    assert rc == 1
    assert "2 across splits" in capsys.readouterr().out
    report = json.loads((out / "audit.json").read_text())
    s = report["summary"]
    assert (s["n_files"], s["n_clusters"], s["n_clusters_across_splits"], s["n_label_conflicts"]) == (27, 2, 2, 1)
    assert s["n_unreadable"] == 1 and report["unreadable"][0]["image"].endswith("broken.png")
    assert report["class_balance"] == {"train": {"normal": 10, "pneumonia": 9}, "val": {"normal": 4, "pneumonia": 4}}
    conflict = report["label_conflicts"][0]
    assert conflict["labels"] == ["normal", "pneumonia"] and conflict["splits"] == ["train", "val"]
    assert {Path(x["image"]).name for x in conflict["images"]} == {"0.png", "copy_of_n0.png"}
    closest = report["closest_pairs_across_splits"]
    assert len(closest) == 2 and all((p["a_split"], p["b_split"]) == ("train", "val") for p in closest)
    assert [p["stage"] for p in closest] == ["hash", "hash"] and all(p["similarity"] >= 0.97 for p in closest)
    for cluster in report["clusters_across_splits"]:  # which stage joined each cluster, and how similar
        assert cluster["stages"] == ["hash"] and len(cluster["links"]) == 1, cluster
        assert cluster["links"][0]["stage"] == "hash" and cluster["links"][0]["similarity"] >= 0.97
    rows = read_csv(out / "clusters.csv")
    assert len(rows) == 4 and {r["split"] for r in rows} == {"train", "val"} and all(len(r["hash"]) == 16 for r in rows)
    assert_png(out / "cross_split_pairs.png")
    assert Image.open(out / "cross_split_pairs.png").size[1] >= 2 * 128  # one row per cross-split pair
    # the second run reads the cache: nothing is decoded again
    main([str(data), "--output", str(out), "--cache_dir", str(tmp_path / "cache"), "--no_progress"])
    assert json.loads((out / "audit.json").read_text())["summary"]["n_cached"] == 26  # all but the broken file


def test_contact_sheet_captions_name_files_and_labels_and_warnings_point_at_the_report(tmp_path, monkeypatch, caplog):
    """Each thumbnail of ``cross_split_pairs.png`` is captioned with its split, label and short file name; the
    warnings about the leak point at the report files instead of telling the user to run the audit."""
    import logging

    import monai_transfer.audit.report as audit_mod

    data = _leaky_csv(tmp_path / "data")
    out = tmp_path / "audit"
    drawn = []
    sheet = audit_mod.contact_sheet
    monkeypatch.setattr(audit_mod, "contact_sheet", lambda rows, path, **kw: drawn.append(rows) or sheet(rows, path))
    with caplog.at_level(logging.WARNING):
        main([str(data), "--output", str(out), "--cache_dir", "none", "--no_progress"])
    (rows,) = drawn
    captions = {(r[3], r[4]) for r in rows}
    assert captions == {
        ("train, label normal\nnormal/0.png", "val, label pneumonia\npneumonia/copy_of_n0.png"),
        ("train, label normal\nnormal/1.png", "val, label normal\nnormal/n1_again.jpg"),
    }
    assert all(r[2].startswith(f"#{k}  hash: similarity ") for k, r in enumerate(rows, 1))
    assert all("Hamming distance" in r[2] for r in rows)
    with Image.open(out / "cross_split_pairs.png") as im:
        assert im.size[1] >= 2 * (128 + 3 * 14)  # a header and two caption lines per row
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert not any("python -m monai_transfer.audit" in w for w in warnings), warnings
    (pointer,) = [w for w in warnings if w.startswith("data audit:")]
    assert str(out / "audit.json") in pointer and str(out / "cross_split_pairs.png") in pointer


def test_audit_entry_point_runs_as_a_module(tmp_path):
    data = _leaky_csv(tmp_path / "data")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai_transfer.audit",
            str(data),
            "--output",
            str(tmp_path / "a"),
            "--cache_dir",
            "none",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "27 images, 2 near-duplicate clusters (2 across splits)" in proc.stdout
    assert (tmp_path / "a" / "audit.json").is_file()


def test_write_audit_summary_reaches_the_run_description(tmp_path):
    data = _leaky_csv(tmp_path / "data")
    dl = bundle_datalists(data, hash_cache_dir=None)
    summary = write_audit(dl, tmp_path / "audit")
    assert summary["n_clusters_across_splits"] == 2
    meta = run_description(None, dataset_dir=data, datalists=dl, split="val")
    assert meta["data"]["audit"]["duplicates"]["n_clusters_across_splits"] == 2
    assert meta["data"]["audit"]["report"] == str(tmp_path / "audit" / "audit.json")
    assert meta["data"]["train"]["n"] == 19
    assert json.loads(json.dumps(audit_report(dl)))["summary"]["n_label_conflicts"] == 1  # JSON-friendly
    assert write_audit(dl, tmp_path / "none", duplicates="off") is None and not (tmp_path / "none").exists()
    # a plain dict (e.g. MONAI Label's data lists) is hashed by the audit itself
    plain = {s: list(v) for s, v in dl.items()}
    assert write_audit(plain, tmp_path / "plain", cache_dir=None)["n_clusters_across_splits"] == 2


def test_bundle_audit_id_writes_the_report(tmp_path):
    from monai.bundle import ConfigParser

    data = _leaky_csv(tmp_path / "data")
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / "xray" / "configs" / "train.json"))
    parser["dataset_dir"] = str(data)
    parser["output_dir"] = str(tmp_path / "run")
    parser["class_names"] = ["normal", "pneumonia"]
    assert parser["duplicates"] == "group" and "@audit" in parser["initialize"]
    summary = parser.get_parsed_content("audit")
    assert summary["n_clusters_across_splits"] == 2
    assert (tmp_path / "run" / "audit" / "audit.json").is_file()


def test_processed_copies_across_splits_are_reported_with_their_stage(tmp_path):
    """A copy with another window and a mirrored copy in val: the hash stage misses them, the audit still lists both
    clusters across splits, each with the stage that linked it and the similarity, in the JSON, the CSV and the sheet
    headers."""
    rng = np.random.default_rng(3)
    root = tmp_path / "data"
    rows = []
    for c in ("normal", "pneumonia"):
        (root / c).mkdir(parents=True)
        for i in range(8):
            _image(rng, size=128).save(root / c / f"{i}.png")
            rows.append([f"{c}/{i}.png", c, "val" if i >= 6 else "train"])
    a = np.asarray(Image.open(root / "normal" / "0.png"), dtype=np.float64)
    windowed = np.clip((a - 60.0) / 120.0, 0, 1) * 255  # another window: clipped both ends
    Image.fromarray(windowed.astype(np.uint8)).save(root / "normal" / "n0_window.png")
    Image.open(root / "pneumonia" / "1.png").transpose(Image.FLIP_LEFT_RIGHT).save(root / "pneumonia" / "p1_flip.png")
    rows += [["normal/n0_window.png", "normal", "val"], ["pneumonia/p1_flip.png", "pneumonia", "val"]]
    with open(root / "list.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "label", "split"], *rows])
    summary = write_audit(bundle_datalists(root / "list.csv", hash_cache_dir=None), tmp_path / "audit", cache_dir=None)
    assert summary["n_clusters_across_splits"] == 2 and summary["pairs_per_stage"] == {"rank": 1, "rank-flipped": 1}
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())
    by_stage = {c["stages"][0]: c for c in report["clusters_across_splits"]}
    assert set(by_stage) == {"rank", "rank-flipped"}
    for stage, cluster in by_stage.items():
        (link,) = cluster["links"]
        assert link["stage"] == stage and link["similarity"] >= 0.995 and link["hamming"] >= 0, link
    assert {p["stage"] for p in report["closest_pairs_across_splits"]} == {"rank", "rank-flipped"}
    assert {r["stages"] for r in read_csv(tmp_path / "audit" / "clusters.csv")} == {"rank", "rank-flipped"}


def test_audit_cli_passes_the_second_stage_and_verification_thresholds(tmp_path, capsys):
    """``--rank_similarity``, ``--aligned_similarity`` and ``--max_residual`` reach the finder (the audit's summary
    records them); a value out of range is a usage error naming the option, an unknown threshold key of the data
    lists names the option."""
    data = _leaky_csv(tmp_path / "data")
    out = tmp_path / "audit"
    args = ["--rank_similarity", "0.99", "--aligned_similarity", "0.98", "--max_residual", "0.5", "--no_progress"]
    main([str(data), "--output", str(out), "--cache_dir", "none", *args])
    s = json.loads((out / "audit.json").read_text())["summary"]
    assert (s["rank_similarity"], s["aligned_similarity"], s["max_residual"]) == (0.99, 0.98, 0.5), s
    assert s["n_clusters_across_splits"] == 2  # the two copies of _leaky_csv pass a loose verification too
    with pytest.raises(SystemExit):
        main([str(data), "--output", str(out), "--max_residual", "2"])
    assert "--max_residual" in capsys.readouterr().err
    with pytest.raises(ValueError, match="duplicate_thresholds: unknown key 'max_residue'"):
        bundle_datalists(data, hash_cache_dir=None, duplicate_thresholds={"max_residue": 0.1})
