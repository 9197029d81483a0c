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
"""``monai_transfer.utils.deps``: the one place for heavy optional packages that must load lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest
from monai.utils import OptionalImportError

from monai_transfer.utils import deps
from tests.utils import REPO_ROOT


def test_handles_resolve_lazily_through_optional_import():
    code = (
        "import sys\n"
        "from monai_transfer.utils import deps\n"
        "before = 'timm' in sys.modules\n"
        "create = deps.timm.create_model\n"
        "print(before, 'timm' in sys.modules, deps.has_timm, deps.timm_models.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True", "timm.models"]


def test_missing_and_unknown_handles(monkeypatch):
    monkeypatch.setattr(deps, "_cache", {})
    monkeypatch.setitem(deps.OPTIONAL_MODULES, "no_such_pkg", ("monai_transfer_no_such_pkg_xyz", ""))
    module, available = deps.optional("no_such_pkg")
    assert available is False and deps.has_no_such_pkg is False
    with pytest.raises(OptionalImportError, match="monai_transfer_no_such_pkg_xyz"):
        module.anything  # noqa: B018  (using the handle raises, naming the package)
    with pytest.raises(KeyError, match="unknown optional dependency 'nope'"):
        deps.optional("nope")
    with pytest.raises(AttributeError):
        deps.nope  # noqa: B018
