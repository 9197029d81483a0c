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
"""``scripts/setup_label_env.sh`` agrees with the README; the label environment named for the tests exists.

Building the environment takes minutes and a package index: ``.ci/run`` runs the script itself on a fresh venv, and
``tests/label/test_monailabel_app.py`` serves with the environment it built through the README's start command.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.label.test_monailabel_app import readme_start_command
from tests.utils import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "setup_label_env.sh"


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_script_prints_the_readme_start_command():
    lines = [line for line in SCRIPT.read_text().splitlines() if "monailabel.main start_server" in line]
    assert len(lines) == 1, lines
    fmt = lines[0].split("printf '", 1)[1].split("\\n'", 1)[0]
    # the script prints absolute paths (shell-quoted): its venv's python, then this checkout's app
    printed = fmt.replace("%q", ".venv-label/bin/python", 1).replace("%q", "apps/monailabel", 1)
    assert shlex.split(printed) == readme_start_command()


def test_the_label_environment_named_for_the_tests_exists():
    value = os.environ.get("MONAI_TRANSFER_LABEL_PYTHON")
    if not value:
        pytest.skip("MONAI_TRANSFER_LABEL_PYTHON is not set (.ci/run sets it after building the environment)")
    assert Path(value).is_file(), f"MONAI_TRANSFER_LABEL_PYTHON={value} does not exist: the label tests would skip"
