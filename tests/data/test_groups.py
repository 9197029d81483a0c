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
"""The one union-find: connected components of linked items (near-duplicate clusters, merged split groups)."""

from __future__ import annotations

import ast

import numpy as np
import pytest

from monai_transfer.data._groups import connected_components
from monai_transfer.data.duplicates import cluster_pairs
from monai_transfer.data.splits import _merge_linked
from tests.utils import REPO_ROOT


def test_components_pairs_chains_and_singletons():
    # 0-3-5 by a chain of pairs, 1-4 by a triple with a repeat, 2 and 6 alone; an empty link joins nothing
    got = connected_components(7, [(5, 3), (3, 0), (1, 4, 4), ()])
    assert got == [[0, 3, 5], [1, 4], [2], [6]]
    assert connected_components(0, []) == []
    assert connected_components(3, iter([np.array([2, 0])])) == [[0, 2], [1]]  # numpy indices, a generator
    with pytest.raises(IndexError, match="index 3 is outside the 3 items"):
        connected_components(3, [(0, 3)])


def test_cluster_pairs_and_merged_split_groups_share_it():
    pairs = np.array([[4, 2, 7], [2, 0, 1], [5, 6, 0]])  # (i, j, distance) rows of find_duplicates
    assert cluster_pairs(7, pairs) == [[0, 2, 4], [5, 6]]
    groups = {"p:b": [0, 3], "p:a": [1], "p:c": [2], "p:d": [4]}
    # items 3 and 2 link groups p:b and p:c; items 1 and 4 link p:a and p:d: merged groups take the smallest name
    assert _merge_linked(groups, [[3, 2], [4, 1]], 5) == {"p:b": [0, 2, 3], "p:a": [1, 4]}
    with pytest.raises(ValueError, match=r"linked indices \[9\] are outside the data list of 5 items"):
        _merge_linked(groups, [[0, 9]], 5)


def test_splits_do_not_import_the_hashing_module():
    """``_groups`` imports nothing of the project and ``splits`` nothing of ``duplicates`` (module level or not)."""

    def imported(module: str) -> set[str]:
        tree = ast.parse((REPO_ROOT / "monai_transfer" / "data" / f"{module}.py").read_text(encoding="utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        return names | {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}

    assert not [m for m in imported("_groups") if m.startswith("monai_transfer")]
    assert not [m for m in imported("splits") if "duplicates" in m]
    assert "monai_transfer.data._groups" in imported("splits") & imported("duplicates")
