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
"""Old dotted paths of moved modules and names, importable for one release with a ``DeprecationWarning``.

:data:`MOVED` is the one machine-readable map of the package layout's moves (round 2 of the structure, issue 27):
``{old module: new module}``, or ``{old module: {name: new module, "*": new module of every other name}}`` where a
module was split. Bundle configs and run folders exported by earlier releases name the old paths
(``"_target_": "monai_transfer.engines.mixing.MixBatchHandler"``,
``$monai_transfer.utils.run_bundle.resolve_run_root``):

- the packages that lost a module or a package-level name (``engines``, ``utils``, ``data``, ``reports``) install a
  meta-path finder when they are imported (:func:`install`), so ``import monai_transfer.engines.mixing`` (and MONAI's
  ``_target_`` lookup, which imports the module) gives a stand-in module whose attributes are the new objects, and
  forward attribute access (``monai_transfer.utils.run_bundle`` in a ``$`` expression) through
  :func:`moved_attribute`.

Each old path warns once per process (``DeprecationWarning``, naming the new path). :func:`new_name` maps an old dotted
name to the new one, and ``python -m monai_transfer.deprecated FILE ...`` rewrites old paths in files (configs, code)
in place; without files it prints :data:`MOVED` as JSON.

This module imports nothing of the package (it sits on the ground floor; the layering test checks it).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import json
import re
import sys
import types
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["MOVED", "PACKAGE_NAMES", "REMOVED_IN", "new_name", "moved_attribute", "install", "rewrite", "main"]

#: the release that drops the old paths.
REMOVED_IN = "0.3"

_SAMPLERS = "monai_transfer.data.samplers"
#: ``{old module: new module}`` or, for a split module, ``{old module: {name: new module, "*": default new module}}``.
MOVED: dict[str, str | dict[str, str]] = {
    "monai_transfer.engines.bundle_inference": "monai_transfer.evaluate.bundle_inference",
    "monai_transfer.engines.streaming": "monai_transfer.evaluate.streaming",
    "monai_transfer.data.cases": "monai_transfer.evaluate.cases",
    "monai_transfer.reports.evaluation": "monai_transfer.evaluate.outputs",
    "monai_transfer.engines.cv": {
        "*": "monai_transfer.cv.run",
        "main": "monai_transfer.cv.cli",
        "OOFCollector": "monai_transfer.handlers.oof_collector",
    },
    "monai_transfer.engines.losses": {
        "*": "monai_transfer.losses.classification",
        "IMBALANCE_MODES": _SAMPLERS,
        "labels_from_datalist": _SAMPLERS,
        "class_weights_from_labels": _SAMPLERS,
        "pos_weight_from_labels": _SAMPLERS,
        "make_weighted_sampler": _SAMPLERS,
        "build_sampler": _SAMPLERS,
        "DistributedWeightedSampler": _SAMPLERS,
        "build_distributed_sampler": _SAMPLERS,
    },
    "monai_transfer.engines.optim": {
        "*": "monai_transfer.optimizers.builders",
        "GradNormClipper": "monai_transfer.handlers.grad_clip",
    },
    "monai_transfer.engines.mixing": {
        "*": "monai_transfer.transforms.regularization.array",
        "MixBatchHandler": "monai_transfer.handlers.mixing",
    },
    "monai_transfer.utils.run_bundle": {
        "*": "monai_transfer.networks.checkpoint_record",
        "resolve_run_root": "monai_transfer.run_bundle",
        "export_run_bundle": "monai_transfer.run_bundle",
    },
}

#: names a package re-exported before its module moved: ``{package: {name: new module}}``.
PACKAGE_NAMES: dict[str, dict[str, str]] = {
    "monai_transfer.engines": {
        "ClassificationCrossEntropyLoss": "monai_transfer.losses.classification",
        "ClassificationBCEWithLogitsLoss": "monai_transfer.losses.classification",
        "ClassificationFocalLoss": "monai_transfer.losses.classification",
        "build_loss": "monai_transfer.losses.classification",
        "labels_from_datalist": _SAMPLERS,
        "class_weights_from_labels": _SAMPLERS,
        "pos_weight_from_labels": _SAMPLERS,
        "make_weighted_sampler": _SAMPLERS,
        "build_sampler": _SAMPLERS,
        "DistributedWeightedSampler": _SAMPLERS,
        "build_distributed_sampler": _SAMPLERS,
        "BatchMixUpCutMix": "monai_transfer.transforms.regularization.array",
        "MixBatchHandler": "monai_transfer.handlers.mixing",
        "param_groups_for": "monai_transfer.optimizers.builders",
        "build_optimizer": "monai_transfer.optimizers.builders",
        "build_scheduler": "monai_transfer.optimizers.builders",
        "GradNormClipper": "monai_transfer.handlers.grad_clip",
    },
}

_warned: set[str] = set()


def _warn(old: str, new: str, stacklevel: int) -> None:
    if old in _warned:
        return
    _warned.add(old)
    msg = f"{old} moved to {new}; the old path will be removed in monai-transfer {REMOVED_IN}"
    warnings.warn(msg, DeprecationWarning, stacklevel=stacklevel + 1)


def _target(old_module: str, name: str) -> str:
    """The new module of ``old_module.name``."""
    new = MOVED[old_module]
    return new if isinstance(new, str) else new.get(name, new["*"])


def new_name(dotted: str) -> str:
    """The current dotted path of an old one (``monai_transfer.engines.mixing.MixBatchHandler`` ->
    ``monai_transfer.handlers.mixing.MixBatchHandler``); a path that did not move is returned as it is."""
    parts = dotted.split(".")
    for i in range(len(parts), 1, -1):
        head, rest = ".".join(parts[:i]), parts[i:]
        if head in MOVED:
            new = MOVED[head]
            if not rest:
                return new if isinstance(new, str) else new["*"]
            return ".".join([_target(head, rest[0]), *rest])
        if rest and rest[0] in PACKAGE_NAMES.get(head, {}):
            return ".".join([PACKAGE_NAMES[head][rest[0]], *rest])
    return dotted


class _MovedModule(types.ModuleType):
    """Stand-in for an old module path: its attributes are the objects of the new module(s)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        module = importlib.import_module(_target(self.__name__, name))
        try:
            return getattr(module, name)
        except AttributeError:
            raise AttributeError(
                f"module {self.__name__!r} (moved to {module.__name__}) has no attribute {name!r}"
            ) from None

    def __dir__(self) -> list[str]:
        return sorted(self.__all__)


class _MovedLoader(importlib.abc.Loader):
    def create_module(self, spec: Any) -> types.ModuleType:
        return _MovedModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        old = module.__name__
        new = MOVED[old]
        names: list[str] = []
        for target in [new] if isinstance(new, str) else [new["*"], *sorted(set(new.values()) - {new["*"]})]:
            for n in getattr(importlib.import_module(target), "__all__", []):
                if _target(old, n) == target and n not in names:
                    names.append(n)
        if not isinstance(new, str):
            names += [n for n in new if n != "*" and n not in names]
        module.__all__ = names
        _warn(old, new if isinstance(new, str) else ", ".join(sorted(set(new.values()))), stacklevel=2)


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the old module paths of :data:`MOVED`."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedLoader())


def install() -> None:
    """Put the finder of the old module paths first on ``sys.meta_path`` (once; the packages of :data:`MOVED`'s old
    modules call it when they are imported)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())


def moved_attribute(package: str, name: str) -> Any:
    """Module ``__getattr__`` of a package: a moved submodule (``monai_transfer.utils.run_bundle``) or a moved
    package-level name (``monai_transfer.engines.build_loss``), with a ``DeprecationWarning``.

    Raises:
        AttributeError: ``name`` was never an attribute of ``package``.
    """
    full = f"{package}.{name}"
    if full in MOVED:
        install()
        return importlib.import_module(full)
    new = PACKAGE_NAMES.get(package, {}).get(name)
    if new is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    _warn(full, f"{new}.{name}", stacklevel=3)
    return getattr(importlib.import_module(new), name)


_DOTTED = re.compile(r"monai_transfer(?:\.\w+)+")
_FROM_IMPORT = re.compile(
    r"^(?P<indent>[ \t]*)from (?P<module>monai_transfer(?:\.\w+)+) import "
    r"(?:\((?P<paren>[^)]*)\)|(?P<line>[^\n#]*))",
    re.M,
)


def _split_import(m: re.Match) -> str:
    """``from OLD import a, b`` -> one ``from NEW import ...`` per new module of the names."""
    module, indent = m.group("module"), m.group("indent")
    names = [n.strip() for n in (m.group("paren") or m.group("line") or "").replace("\n", " ").split(",") if n.strip()]
    if module not in MOVED and not set(PACKAGE_NAMES.get(module, {})) & {n.split(" as ")[0] for n in names}:
        return m.group(0)
    groups: dict[str, list[str]] = {}
    for n in names:
        old = f"{module}.{n.split(' as ')[0]}"
        new = old if old in MOVED else new_name(old)  # a moved module imported by name is left to the alias
        groups.setdefault(new.rsplit(".", 1)[0], []).append(n)
    return "\n".join(f"{indent}from {target} import {', '.join(ns)}" for target, ns in groups.items())


def rewrite(text: str) -> str:
    """``text`` with every old dotted path (:func:`new_name`) replaced by the new one; a Python
    ``from OLD import a, b`` whose names moved to different modules becomes one import per new module."""
    return _DOTTED.sub(lambda m: new_name(m.group(0)), _FROM_IMPORT.sub(_split_import, text))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monai_transfer.deprecated [FILE ...]``: rewrite old paths in the files, or print :data:`MOVED`."""
    files = list(sys.argv[1:] if argv is None else argv)
    if not files:
        print(json.dumps({"moved": MOVED, "package_names": PACKAGE_NAMES}, indent=2))
        return 0
    for f in files:
        path = Path(f)
        text = path.read_text(encoding="utf-8")
        new = rewrite(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"{path}: rewrote old monai_transfer paths")
    return 0


if __name__ == "__main__":
    sys.exit(main())
