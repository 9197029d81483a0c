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
"""``docs/ARCHITECTURE.md`` is drawn from the code: every repository path it names exists, every dotted
``monai_transfer.`` name resolves, and every module of the package is listed.

Rules for the page (what the checks read):

- a backticked span that looks like a path (no spaces or quotes; holds ``/`` or ends in ``.py``, ``.json``, ``.md``)
  names a repository path: relative to the repository root, or, in a row of the module table, to that row's package
  folder (its first cell); ``<placeholder>`` segments match any name (``bundles/<name>``);
- a path starting with a placeholder (``<output_dir>/metrics.json``, ``<bundle>/models/model.pt``) is a location
  outside the repository and is not checked;
- a bare file name outside the table (``inference.json``) must be the name of some repository file;
- every ``monai_transfer.<...>`` name in a backticked span must import (module) or resolve (attribute); a trailing
  ``*`` matches attribute names (``monai_transfer.utils.io.atomic_write_*``).
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from pathlib import Path

import pytest

from tests.utils import REPO_ROOT

DOC = REPO_ROOT / "docs" / "ARCHITECTURE.md"
PACKAGE = REPO_ROOT / "monai_transfer"
_SPAN = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(r"[\w.<>*-]+(?:/[\w.<>*-]*)*")
_DOTTED = re.compile(r"(?<![\w./-])monai_transfer(?:\.\w+)+\*?")
_SEARCHED = ("monai_transfer", "bundles", "apps", "scripts", "docs", "tests", "benchmarks")


def _spans() -> list[tuple[int, str, Path | None]]:
    """``(line number, span, row package folder or None)`` of every backticked span of the page."""
    out = []
    for n, line in enumerate(DOC.read_text(encoding="utf-8").splitlines(), 1):
        base = None
        if line.startswith("|"):
            first = _SPAN.findall(line.split("|")[1])
            if first and first[0].endswith("/") and (REPO_ROOT / first[0]).is_dir():
                base = REPO_ROOT / first[0]
        out.extend((n, s.strip(), base) for s in _SPAN.findall(line))
    return out


def _is_path(span: str) -> bool:
    return bool(_PATH.fullmatch(span)) and ("/" in span or span.endswith((".py", ".json", ".md")))


def _candidates(span: str, base: Path | None) -> list[Path]:
    """Where a path span may be: a path with ``/`` under the repository root (or the row's package folder), a bare
    module name in its row's package folder, any other bare name anywhere in the searched folders."""
    pattern = re.sub(r"<[^>]*>", "*", span).rstrip("/")
    if "/" in span:
        roots = [REPO_ROOT] + ([base] if base is not None else [])
        return [p for root in roots for p in root.glob(pattern)]
    if base is not None and span.endswith(".py"):
        return list(base.glob(pattern))
    return [p for d in _SEARCHED for p in (REPO_ROOT / d).rglob(pattern)]


def _exists(span: str, base: Path | None) -> bool:
    return bool(_candidates(span, base))


def _resolves(name: str) -> bool:
    parts = name.rstrip("*").split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for j, attr in enumerate(parts[i:]):
            last = i + j == len(parts) - 1
            if last and name.endswith("*"):
                return any(fnmatch.fnmatch(a, attr + "*") for a in dir(obj))
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_path_named_exists():
    spans = [(n, s, b) for n, s, b in _spans() if _is_path(s) and not s.startswith("<")]
    assert len(spans) > 30, "the page names fewer paths than expected: has the rule stopped matching?"
    missing = [f"line {n}: {s}" for n, s, b in spans if not _exists(s, b)]
    assert not missing, f"{DOC.name} names paths that do not exist: {missing}"


def test_every_dotted_name_resolves():
    names = sorted({(n, m) for n, s, _ in _spans() for m in _DOTTED.findall(s)})
    assert len(names) > 20, "the page names fewer monai_transfer names than expected: has the rule stopped matching?"
    bad = [f"line {n}: {m}" for n, m in names if not _resolves(m)]
    assert not bad, f"{DOC.name} names what does not import or resolve: {bad}"


def test_every_module_is_listed():
    """Each module of the package is named on the page: as a path, or by file name in its package's row."""
    listed = {p.resolve() for _, s, b in _spans() if _is_path(s) and not s.startswith("<") for p in _candidates(s, b)}
    modules = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
    unlisted = [str(p.relative_to(REPO_ROOT)) for p in modules if p.resolve() not in listed]
    unlisted = [m for m in unlisted if not m.endswith("/__init__.py") or m == "monai_transfer/__init__.py"]
    assert not unlisted, f"{DOC.name} does not list these modules: {unlisted}"


@pytest.mark.parametrize(
    "span,expected",
    [("monai_transfer/utils/io.py", True), ("bundles/<name>", True), ("bundles/none/x.json", False), ("io.py", True)],
)
def test_path_rule(span, expected):
    assert _is_path(span) and _exists(span, None) is expected
    assert not _is_path('"zeros"/"ones"') and not _is_path("python -m monai_transfer.evaluate")


def test_name_rule():
    assert _resolves("monai_transfer.utils.io.atomic_write_*") and _resolves("monai_transfer.evaluate.evaluate_bundle")
    assert not _resolves("monai_transfer.utils.io.nope") and not _resolves("monai_transfer.nope")
    assert _DOTTED.findall("$monai_transfer.utils.bundle.resolve_bundle_root('<name>')") == [
        "monai_transfer.utils.bundle.resolve_bundle_root"
    ]
