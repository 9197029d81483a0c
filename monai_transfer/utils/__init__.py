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
"""Small shared utilities: safe and atomic file I/O, bundle helpers, the command-line style (optional dependencies live
in ``deps``)."""

from __future__ import annotations

from typing import Any

from monai_transfer.deprecated import install, moved_attribute

from . import bundle, cli, io
from .bundle import resolve_bundle_root
from .io import (
    DiskFullError,
    UnsafeCheckpointError,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    load_state_dict_file,
    safe_torch_load,
    sha256_file,
)

__all__ = [
    "bundle",
    "io",
    "cli",
    "resolve_bundle_root",
    "UnsafeCheckpointError",
    "DiskFullError",
    "atomic_torch_save",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_dir",
    "load_state_dict_file",
    "safe_torch_load",
    "sha256_file",
]


install()  # the old module paths of monai_transfer.deprecated.MOVED, for one release


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name)
