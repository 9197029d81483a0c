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
"""Helpers that bundle configs call from ``$`` expressions."""

from __future__ import annotations

import ast
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["resolve_bundle_root", "parse_overrides", "root_cause", "parsed_content", "resolving_parser"]


def resolve_bundle_root(name: str) -> str:
    """Find a bundle's root folder so its configs run from the repository root or from inside the bundle.

    MONAI's ``run`` does not pass the config file's location to the config, so ``bundle_root`` is found by looking,
    in order, at the environment variable ``MONAI_TRANSFER_BUNDLE_ROOT``, the current folder (when it is the bundle:
    it holds ``configs/metadata.json``), and ``./bundles/<name>``. Any tool can still override ``bundle_root``
    (MONAI Label does).

    Raises:
        FileNotFoundError: when none of these is a bundle folder; the message says how to pass ``--bundle_root``.
    """
    candidates = []
    env = os.environ.get("MONAI_TRANSFER_BUNDLE_ROOT")
    if env:
        candidates.append(Path(env))
    cwd = Path.cwd()
    candidates += [cwd, cwd / "bundles" / name]
    for c in candidates:
        if (c / "configs" / "metadata.json").is_file() and (c.name == name or c == cwd / "bundles" / name or c == env):
            return str(c.resolve())
    for c in candidates:
        if (c / "configs" / "metadata.json").is_file():
            return str(c.resolve())
    raise FileNotFoundError(
        f"cannot find the '{name}' bundle from {cwd}: run from the repository root or from bundles/{name}, "
        f"or pass --bundle_root /path/to/bundles/{name}"
    )


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """Bundle overrides given as ``--id value`` pairs, the way ``python -m monai.bundle run`` takes them.

    Values are read as JSON, then as Python literals (``"['no','yes']"``), else kept as strings; ``--a#b value``
    sets a nested id. ``--id=value`` works too.

    Raises:
        ValueError: an argument that is not ``--id`` or an id without a value.
    """
    out: dict[str, Any] = {}
    items = list(args)
    i = 0
    while i < len(items):
        key = items[i]
        if not key.startswith("--") or len(key) < 3:
            raise ValueError(f"unexpected argument {key!r}: bundle overrides are --<id> <value> pairs")
        key = key[2:]
        if "=" in key:
            key, text = key.split("=", 1)
            i += 1
        elif i + 1 < len(items):
            text = items[i + 1]
            i += 2
        else:
            raise ValueError(f"bundle override --{key} has no value")
        try:
            value: Any = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
        out[key] = value
    return out


def root_cause(e: BaseException) -> BaseException:
    """The innermost exception of a chain: MONAI wraps a component's own error (``num_members must be at least 1``)
    in ``RuntimeError: Failed to instantiate component ...``, which names neither the value nor the problem."""
    seen = {id(e)}
    while True:
        nxt = e.__cause__ or e.__context__
        if nxt is None or id(nxt) in seen:
            return e
        e = nxt
        seen.add(id(e))


def parsed_content(
    parser: Any, key: str, where: str, error: type[Exception] = ValueError, overrides: dict[str, Any] | None = None
) -> Any:
    """``parser.get_parsed_content(key)``, a failure raised as ``error`` naming ``where`` (the config), the id, the
    root cause and the ``--<id> VALUE`` overrides given, instead of MONAI's instantiation traceback.

    Args:
        parser: the ``monai.bundle.ConfigParser``.
        key: the id to build.
        where: how to name the config, e.g. ``"bundle runs/a: configs/inference.json"``.
        error: the exception type to raise (an ``error`` raised by the component itself passes unchanged).
        overrides: the overrides given on the command line, named in the message.
    """
    try:
        return parser.get_parsed_content(key)
    except error:
        raise
    except Exception as e:
        cause = root_cause(e)
        hint = ""
        if overrides:
            hint = " (bundle overrides given: " + ", ".join(f"--{k} {v!r}" for k, v in overrides.items()) + ")"
        raise error(f"{where}: cannot build {key!r}: {type(cause).__name__}: {cause}{hint}") from e


def resolving_parser() -> Any:
    """The innermost ``monai.bundle.ConfigParser`` resolving a config on this thread's stack (the parser building the
    component that calls this), or ``None`` when the caller was not built from a config."""
    from monai.bundle import ConfigParser

    frame = sys._getframe(1)
    while frame is not None:
        obj = frame.f_locals.get("self")
        if isinstance(obj, ConfigParser):
            return obj
        frame = frame.f_back
    return None
