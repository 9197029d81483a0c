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
"""``scripts/bench/dedup_variants.py --quick``: every family and operating point is reported, the second run reads
no image, and the report section is built from the JSON."""

from __future__ import annotations

import pytest

from scripts.bench import dedup_variants, make_report
from tests.utils import ADRENAL_NPZ, PNEUMONIA_NPZ, requires_shared_data

pytestmark = pytest.mark.slow


@requires_shared_data(PNEUMONIA_NPZ)
@requires_shared_data(ADRENAL_NPZ)
def test_dedup_variants_quick(tmp_path):
    res = dedup_variants.main(["--quick", "--output", str(tmp_path / "dedup_variants.json")])
    rep = res["reporting"]
    assert set(rep) == {"stage1_only", "round1", "chosen", "defaults"}
    for point in rep.values():
        assert set(point["recall"]) == set(dedup_variants.FAMILIES) and point["copies_per_family"] == 12
    assert rep["stage1_only"]["recall"]["flip"] == 0.0  # the hash alone never pairs a flipped film
    assert min(rep["defaults"]["recall"].values()) > min(rep["stage1_only"]["recall"].values())
    cost = res["cost"]
    assert cost["second_run_image_reads"] == 0 and cost["second_run_cached"] == cost["files"]
    assert len(res["tuning_grid"]) == len(dedup_variants.RESIDUAL_GRID)
    assert res["operating_points"]["chosen"]["max_residual"] in dedup_variants.RESIDUAL_GRID
    verified, unverified = rep["chosen"], rep["round1"]  # the verification only removes links
    assert verified["links"] <= unverified["links"] and verified["mr_slice_pairs"] >= 10
    assert verified["neighbour_slice_pairs_linked"] <= unverified["neighbour_slice_pairs_linked"]
    assert (tmp_path / "dedup_variants.md").read_text().count("| recall: ") == len(dedup_variants.FAMILIES)
    real = res["real_resolution"]  # quick: pydicom's own CT and MR images, 3 copies per family each
    assert [x["file"] for x in real["sources"]] == ["CT_small.dcm", "MR_small.dcm"] and real["copies_per_family"] == 6
    assert set(real["families"]) == set(dedup_variants.FAMILIES) and real["clusters_merging_two_originals"] == 0
    assert real["families"]["gamma"]["recall"] == 1.0 and real["families"]["flip"]["recall"] == 1.0
    assert all(0.0 <= r["recall"] <= 1.0 for r in real["families"].values())
    text = make_report.build_report(tmp_path, tmp_path / "r")
    assert "## 5b. Data audit: processed copies" in text and "quick mode" in text
