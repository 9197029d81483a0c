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
"""The package is layered by kind, applications on top: a module imports only packages of a LOWER layer (never one
above it, never another package of its own layer), no private name crosses a package boundary, and every Ignite
handler lives in ``handlers/``. Inside a package the layering of ``networks/backbones`` is checked by
``tests/networks/backbones/test_layers.py``.

The import graph is read from the source (every ``import``, also inside functions), so a lazy import cannot hide an
upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.utils import REPO_ROOT

PKG = REPO_ROOT / "monai_transfer"
#: package (or root-level module) -> layer, lowest first. The root ``monai_transfer/__init__.py`` sits above all
#: (it loads the others lazily, by name); only ``__version__`` may be read from it below.
LAYERS = {
    "deprecated": 0,  # the table of moved paths; imports nothing of the package
    "utils": 1,
    "metrics": 2,
    "optimizers": 2,
    "networks": 2,
    "transforms": 3,
    "inferers": 3,
    "data": 4,
    "losses": 5,
    "reports": 5,
    "handlers": 6,
    "engines": 7,
    "label": 7,
    # applications and the run-folder export, on top
    "run_bundle": 8,
    "evaluate": 8,
    "cv": 8,
    "audit": 8,
    # what the shipped bundles' configs instantiate (training run, CV, run settings): above the applications
    "bundle_components": 9,
}
#: packages whose modules are applications (command lines): nothing below imports them.
APPLICATIONS = ("evaluate", "cv", "audit")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    """``monai_transfer.data.splits`` -> ``data``; the root package -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(root: Path = REPO_ROOT) -> list[tuple[str, str, str | None, int]]:
    """``(importing module, imported module, imported name or None, line)`` for every import of the package."""
    out = []
    for path in sorted((root / "monai_transfer").rglob("*.py")):
        module = _module_name(path, root)
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_pkg else module.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target == "monai_transfer" or target.startswith("monai_transfer."):
                    out += [(module, target, a.name, node.lineno) for a in node.names]
            elif isinstance(node, ast.Import):
                out += [(module, a.name, None, node.lineno) for a in node.names if a.name.startswith("monai_transfer")]
    return out


def layering_violations(root: Path = REPO_ROOT) -> list[str]:
    """Every import that runs upwards or sideways between packages, or reads the root package for more than its
    version; every package or root-level module missing from :data:`LAYERS`."""
    bad = []
    top = root / "monai_transfer"
    present = {p.name for p in top.iterdir() if (p / "__init__.py").is_file()}
    present |= {p.stem for p in top.glob("*.py") if p.name != "__init__.py"}
    bad += [f"monai_transfer/{m}: no layer in LAYERS" for m in sorted(present - set(LAYERS))]
    for src, target, name, line in imports(root):
        ps, pt = _package(src), _package(target)
        where = f"{src.replace('.', '/')}:{line}"
        if pt == "":
            if name != "__version__":
                bad.append(f"{where} imports the root package ({name or 'import monai_transfer'}); only __version__")
        elif ps != "" and ps != pt and LAYERS.get(ps, -1) <= LAYERS.get(pt, 99):
            what = "sideways" if LAYERS.get(ps) == LAYERS.get(pt) else "upwards"
            bad.append(f"{where}: {ps} (layer {LAYERS.get(ps)}) imports {target} (layer {LAYERS.get(pt)}) {what}")
    return bad


def private_imports(root: Path = REPO_ROOT) -> list[str]:
    """Private names (``_x``) and private modules imported from another package."""
    bad = []
    for src, target, name, line in imports(root):
        if _package(src) == _package(target):
            continue
        private_module = any(p.startswith("_") and not p.startswith("__") for p in target.split(".")[1:])
        private_name = name is not None and name.startswith("_") and not name.startswith("__")
        if private_module or private_name:
            bad.append(f"{src.replace('.', '/')}:{line} imports {target}{'.' + name if name else ''}")
    return bad


def test_every_import_runs_down_a_layer():
    bad = layering_violations()
    assert not bad, "imports that break the layering (see LAYERS):\n" + "\n".join(bad)


def test_no_private_name_crosses_a_package():
    bad = private_imports()
    assert not bad, "private names imported across packages (make them public or move them):\n" + "\n".join(bad)


def test_every_ignite_handler_is_in_handlers():
    """A class with an ``attach`` method (the Ignite handler protocol) lives in ``monai_transfer/handlers/``."""
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        if path.parent.name == "handlers":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(f, ast.FunctionDef) and f.name == "attach" for f in node.body
            ):
                bad.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name}")
    assert not bad, f"Ignite handlers outside monai_transfer/handlers/: {bad}"


def test_the_root_package_lists_every_layer():
    """``monai_transfer.<name>`` resolves lazily for every package of the table (``$`` expressions in configs)."""
    import monai_transfer

    assert set(monai_transfer._SUBPACKAGES) == set(LAYERS)
    layers = [LAYERS[n] for n in monai_transfer._SUBPACKAGES]
    assert layers == sorted(layers), "list monai_transfer._SUBPACKAGES lowest layer first"


def test_no_library_layer_imports_an_application():
    bad = [
        f"{s}:{line} imports {t}"
        for s, t, _, line in imports()
        if _package(t) in APPLICATIONS and LAYERS.get(_package(s), 0) < min(LAYERS[a] for a in APPLICATIONS)
    ]
    assert not bad, bad


def test_the_checks_catch_an_upward_and_a_private_import(tmp_path):
    """The checks see what they should: an upward lazy import and a private name (a copy of the package with one
    of each added)."""
    import shutil

    copy = tmp_path / "monai_transfer"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "metrics" / "functional.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _late():\n    from monai_transfer.handlers.metric_handlers import AUCHandler\n")
    with open(copy / "reports" / "writer.py", "a", encoding="utf-8") as f:
        f.write("\nfrom monai_transfer.metrics.functional import _to_numpy  # noqa\n")
    assert any("metrics (layer 2) imports monai_transfer.handlers" in b for b in layering_violations(tmp_path))
    assert any("_to_numpy" in b for b in private_imports(tmp_path))


#: the modules of the shift suite (issue 31) and the layer of their package: each imports only lower layers
SHIFT_SUITE_MODULES = {
    "monai_transfer.metrics.shift": 2,
    "monai_transfer.transforms.shift.array": 3,
    "monai_transfer.transforms.shift.dictionary": 3,
    "monai_transfer.reports.shift": 5,
    "monai_transfer.evaluate.shift": 8,
}


def test_shift_suite_modules_sit_in_their_layers():
    for module, layer in SHIFT_SUITE_MODULES.items():
        path = REPO_ROOT / (module.replace(".", "/") + ".py")
        assert path.is_file(), f"{module} is listed in SHIFT_SUITE_MODULES but {path} does not exist"
        assert LAYERS[_package(module)] == layer, f"{module}: package layer {LAYERS[_package(module)]}, not {layer}"
    for src, target, _, line in imports():
        if src in SHIFT_SUITE_MODULES and _package(target) != _package(src):
            assert LAYERS[_package(target)] < SHIFT_SUITE_MODULES[src], f"{src}:{line} imports {target}"
