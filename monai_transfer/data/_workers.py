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
"""A function over a list as a ``torch`` map-style data set, so that ``DataLoader`` worker processes run it (the
cache's first pass, the near-duplicate hash pass)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["CallItems", "as_is"]


class CallItems(torch.utils.data.Dataset):
    """``fn(items[k])`` as item ``k`` (worker processes started by ``fork`` inherit ``fn``: nothing is pickled)."""

    def __init__(self, fn: Callable[[Any], Any], items: Sequence[Any]):
        self.fn, self.items = fn, list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> Any:
        return self.fn(self.items[k])


def as_is(x: Any) -> Any:
    """The ``collate_fn`` that hands items (or lists of them) over unchanged."""
    return x
