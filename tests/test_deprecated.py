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
"""Old dotted paths of moved modules keep working for one release (``monai_transfer.deprecated``): bundle configs and
run folders exported by earlier releases, ``import`` statements and ``$`` expressions, each with a
``DeprecationWarning`` naming the new path; nothing shipped names an old path."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

import monai_transfer.deprecated as deprecated
from monai_transfer.deprecated import MOVED, PACKAGE_NAMES, new_name, rewrite
from tests.utils import REPO_ROOT


@pytest.fixture
def fresh(monkeypatch):
    """Forget which old paths were imported and warned about, so each test sees its warning."""
    import monai_transfer.engines  # noqa: F401  (installs the finder)

    monkeypatch.setattr(deprecated, "_warned", set())
    for old in MOVED:
        monkeypatch.delitem(sys.modules, old, raising=False)
        parent, _, leaf = old.rpartition(".")
        if parent in sys.modules and leaf in vars(sys.modules[parent]):
            monkeypatch.delattr(sys.modules[parent], leaf)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_module_imports_with_a_warning_and_gives_the_new_objects(old, fresh):
    with pytest.warns(DeprecationWarning, match=f"{old} moved to .*removed in monai-transfer"):
        module = importlib.import_module(old)
    assert module.__all__, old
    for name in module.__all__:
        new = importlib.import_module(new_name(f"{old}.{name}").rsplit(".", 1)[0])
        assert getattr(module, name) is getattr(new, name), (old, name)
    with pytest.raises(AttributeError, match="moved to"):
        module.no_such_name  # noqa: B018


def test_every_parent_of_an_old_path_installs_the_finder_and_forwards_attributes():
    """``import monai_transfer.data.cases`` in a fresh interpreter imports ``monai_transfer.data`` first: that package
    (each parent of an old module or name) must install the finder and forward its attribute access."""
    parents = {old.rpartition(".")[0] for old in MOVED} | set(PACKAGE_NAMES)
    for parent in sorted(parents):
        init = REPO_ROOT / Path(*parent.split(".")) / "__init__.py"
        text = init.read_text(encoding="utf-8")
        assert "\ninstall()" in text and "return moved_attribute(__name__, name)" in text, init


def test_old_names_of_the_engines_package_warn_and_resolve(fresh):
    import monai_transfer.engines as engines

    for name, new in PACKAGE_NAMES["monai_transfer.engines"].items():
        with pytest.warns(DeprecationWarning, match=f"monai_transfer.engines.{name} moved to {new}.{name}"):
            assert getattr(engines, name) is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError):
        engines.no_such_name  # noqa: B018


def test_configs_of_earlier_releases_still_resolve(fresh, tmp_path):
    """``_target_`` and ``$`` expressions with old paths, as a run folder exported before the move has them."""
    from monai.bundle import ConfigParser

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "metadata.json").write_text("{}")
    parser = ConfigParser(
        {
            "imports": ["$import monai_transfer"],
            "bundle_root": f"$monai_transfer.utils.run_bundle.resolve_run_root({str(tmp_path)!r})",
            "mix": {"_target_": "monai_transfer.engines.mixing.MixBatchHandler", "seed": 1},
            "clip": {"_target_": "monai_transfer.engines.optim.GradNormClipper", "max_norm": 1.0},
            "loss": {"_target_": "monai_transfer.engines.losses.build_loss", "name": "ce"},
            "sampler": "$monai_transfer.engines.losses.build_sampler([0, 1, 1], 'sampler', 0)",
            "spec": {"_target_": "monai_transfer.utils.run_bundle.model_spec", "backbone": "resnet18",
                     "class_names": ["a", "b"], "image_size": 32},
        }
    )  # fmt: skip
    with pytest.warns(DeprecationWarning):
        assert parser.get_parsed_content("bundle_root") == str(tmp_path.resolve())
        assert type(parser.get_parsed_content("mix")).__module__ == "monai_transfer.handlers.mixing"
        assert type(parser.get_parsed_content("clip")).__module__ == "monai_transfer.handlers.grad_clip"
        assert type(parser.get_parsed_content("loss")).__module__ == "monai_transfer.losses.classification"
        assert type(parser.get_parsed_content("sampler")).__name__ == "WeightedRandomSampler"
        assert parser.get_parsed_content("spec")["class_names"] == ["a", "b"]


def test_new_name_and_rewrite():
    assert new_name("monai_transfer.engines.mixing.MixBatchHandler") == "monai_transfer.handlers.mixing.MixBatchHandler"
    assert new_name("monai_transfer.engines.losses.build_sampler") == "monai_transfer.data.samplers.build_sampler"
    assert new_name("monai_transfer.engines.losses.build_loss") == "monai_transfer.losses.classification.build_loss"
    assert new_name("monai_transfer.engines.build_optimizer") == "monai_transfer.optimizers.builders.build_optimizer"
    assert new_name("monai_transfer.data.cases") == "monai_transfer.evaluate.cases"
    assert new_name("monai_transfer.engines.utils.auto_device") == "monai_transfer.engines.utils.auto_device"
    code = (
        "from monai_transfer.engines.optim import (\n    GradNormClipper,\n    build_optimizer,\n)\n"
        "from monai_transfer.engines import auto_device, build_loss\n"
        'x = {"_target_": "monai_transfer.utils.run_bundle.export_run_bundle"}\n'
    )
    assert rewrite(code) == (
        "from monai_transfer.handlers.grad_clip import GradNormClipper\n"
        "from monai_transfer.optimizers.builders import build_optimizer\n"
        "from monai_transfer.engines import auto_device\n"
        "from monai_transfer.losses.classification import build_loss\n"
        'x = {"_target_": "monai_transfer.run_bundle.export_run_bundle"}\n'
    )


def test_every_new_path_exists():
    for old, new in MOVED.items():
        for target in [new] if isinstance(new, str) else new.values():
            importlib.import_module(target)
        if not isinstance(new, str):
            for name, target in new.items():
                assert name == "*" or hasattr(importlib.import_module(target), name), (old, name, target)
    for names in PACKAGE_NAMES.values():
        for name, target in names.items():
            assert hasattr(importlib.import_module(target), name), (name, target)


def test_nothing_shipped_names_an_old_path():
    """Bundles, the MONAI Label app, docs, scripts, tests and the package itself use the new paths only (the table
    and its tests excepted)."""
    own = {REPO_ROOT / "monai_transfer" / "deprecated.py", REPO_ROOT / "tests" / "test_deprecated.py"}
    stale = []
    for folder in ("bundles", "apps", "docs", "scripts", "monai_transfer", "tests"):
        for path in (REPO_ROOT / folder).rglob("*"):
            if path.suffix not in (".py", ".json", ".md") or path in own or "__pycache__" in path.parts:
                continue
            text = path.read_text(encoding="utf-8")
            if rewrite(text) != text:
                stale.append(str(path.relative_to(REPO_ROOT)))
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert rewrite(readme) == readme and not stale, f"old monai_transfer paths in {stale}"


def test_the_table_prints_as_json(capsys):
    assert deprecated.main([]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["moved"] == json.loads(json.dumps(MOVED))
