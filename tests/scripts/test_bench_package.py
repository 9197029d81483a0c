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
"""The benchmark package ``scripts.bench``: both entry forms, the shared argparse helper, the recorded command."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.bench import common
from tests.utils import REPO_ROOT

__all__: list[str] = []

BENCH = REPO_ROOT / "scripts" / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in ("__init__", "common"))


@pytest.mark.parametrize("form", [["scripts/bench/accuracy_xray.py"], ["-m", "scripts.bench.accuracy_xray"]])
def test_accuracy_xray_help_in_both_forms(form):
    """The maintainers' path form and the module form both start from the repository root."""
    out = subprocess.run([sys.executable, *form, "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--test" in out.stdout and "--output" in out.stdout


# scripts imported by other scripts are already in sys.modules here (not so from a shell): runpy warns on re-running
@pytest.mark.filterwarnings(r"ignore:'scripts\.bench\.\w+' found in sys.modules:RuntimeWarning")
@pytest.mark.parametrize("name", SCRIPTS)
def test_path_form_runs_the_module_with_the_common_args(name, monkeypatch, capsys):
    """``python scripts/bench/<name>.py --help``, in-process: the entry shim re-runs the module; one argparse helper."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT])
    monkeypatch.setattr(sys, "argv", [str(BENCH / f"{name}.py"), "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(BENCH / f"{name}.py"), run_name="__main__")
    assert exc.value.code in (0, None)
    usage = capsys.readouterr().out
    assert "[--quick] [--output OUTPUT]" in usage and ("[--threads THREADS]" in usage) == (name != "make_report")
    source = (BENCH / f"{name}.py").read_text()
    assert sys.path[0] == str(REPO_ROOT)  # the entry shim acted (the imports come from sys.modules here)
    assert "common.add_common_args(parser" in source
    assert not any(f'add_argument("--{a}"' in source for a in ("quick", "output", "threads")), "declare them once"


def test_command_line_records_the_form_used(monkeypatch):
    script = str(BENCH / "accuracy_xray.py")
    # an in-process main(argv) call: the equivalent module command
    assert common.command_line(script, ["--quick", "--output", "a b"]) == (
        "python -m scripts.bench.accuracy_xray --quick --output 'a b'"
    )
    # the maintainers' path form, relative or absolute: the path relative to the repository
    for typed in ("scripts/bench/accuracy_xray.py", script):
        monkeypatch.setattr(sys, "orig_argv", ["/usr/bin/python3", "-u", typed, "--test", "t.npz"])
        monkeypatch.chdir(REPO_ROOT)
        assert common.command_line(script, None) == "python -u scripts/bench/accuracy_xray.py --test t.npz"
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-m", "scripts.bench.accuracy_xray", "--quick"])
    assert common.command_line(script, None) == "python -m scripts.bench.accuracy_xray --quick"


def test_png_csv_is_written_whole_by_concurrent_writers(tmp_path):
    """Two benchmark processes writing the same data list (label efficiency's two halves) never leave it half written
    or leave temporary files behind: each writes a private file and renames it."""
    import csv
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, train_images=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8), train_labels=np.arange(40) % 2)
    out = tmp_path / "cache"
    args = (npz, out, "datalist.csv", {"train": "train"}, ["a", "b"])
    common.npz_to_png_csv(*args)  # the PNGs once, as the cache holds them
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: common.npz_to_png_csv(*args), range(8)))
    assert set(paths) == {out / "datalist.csv"}
    rows = list(csv.DictReader((out / "datalist.csv").open(encoding="utf-8")))
    assert len(rows) == 40 and [r["label"] for r in rows[:2]] == ["a", "b"]
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["datalist.csv"]
