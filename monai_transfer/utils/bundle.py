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

import os
from pathlib import Path

__all__ = ["resolve_bundle_root"]


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
