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
"""Connected components (union-find) of linked items: the one implementation behind the near-duplicate clusters of
:func:`monai_transfer.data.duplicates.cluster_pairs` and the merged split groups of :mod:`monai_transfer.data.splits`.
Dependency-free, so that the splits need not import the image-hashing module."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["connected_components"]


def connected_components(n: int, links: Iterable[Sequence[int]]) -> list[list[int]]:
    """The connected components of the items ``0 .. n-1`` where every entry of ``links`` (a pair, or any number of
    indices) joins its members.

    Args:
        n: the number of items.
        links: index sequences; an empty one joins nothing.

    Returns:
        every item in exactly one component (singletons included): sorted index lists, ordered by their smallest index.

    Raises:
        IndexError: an index outside ``0 .. n-1``.
    """
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]  # path halving
            a = parent[a]
        return a

    for members in links:
        roots = sorted({find(_index(i, n)) for i in members})
        for r in roots[1:]:
            parent[r] = roots[0]
    components: dict[int, list[int]] = {}
    for i in range(n):  # in index order: each component is sorted and first met at its smallest index
        components.setdefault(find(i), []).append(i)
    return list(components.values())


def _index(i: int, n: int) -> int:
    i = int(i)
    if not 0 <= i < n:
        raise IndexError(f"index {i} is outside the {n} items")
    return i
