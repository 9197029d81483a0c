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
"""Packaging contracts: cheap import, the README's two commands, and .ci/run running the second verbatim."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.utils import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
CI_RUN = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")


def _quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [c.strip() for c in re.findall(r"```bash\n(.*?)\n\s*```", section, flags=re.S)]


def test_readme_has_exactly_two_quick_start_commands():
    cmds = _quick_start_commands()
    assert len(cmds) == 2, cmds
    assert "python -m monai.bundle run --config_file bundles/xray/configs/train.json" in cmds[0]
    assert "pip install" in cmds[0] and "pip install" in cmds[1]
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command_verbatim():
    test_cmd = _quick_start_commands()[1]
    ci_lines = [line.strip() for line in CI_RUN.splitlines()]
    assert test_cmd in ci_lines, f"{test_cmd!r} not a line of .ci/run"
    assert "set -euo pipefail" in CI_RUN  # a failing or empty test run fails CI (pytest exits 5 on no tests)


def test_import_is_cheap_and_versioned():
    code = (
        "import sys, monai_transfer; "
        "print(monai_transfer.__version__); "
        "print(sorted(m for m in ('torchvision', 'timm', 'monai', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    version, heavy = out.stdout.strip().splitlines()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert heavy == "[]", f"import monai_transfer imported {heavy}"


def test_tests_are_not_installed():
    from setuptools import find_packages

    cfg = (REPO_ROOT / "setup.cfg").read_text()
    assert "monai_transfer.*" in cfg
    pkgs = find_packages(str(REPO_ROOT), include=["monai_transfer", "monai_transfer.*"])
    assert "monai_transfer" in pkgs and not any(p.startswith(("tests", "scripts")) for p in pkgs)
