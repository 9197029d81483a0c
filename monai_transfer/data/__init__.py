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
"""Data lists (folder, CSV, JSON, MedMNIST npz), validation of image files, and group-disjoint splits.

Import-light: MONAI, numpy and torch only; pydicom/nibabel/PIL are imported when a file is written or read.
"""

from __future__ import annotations

from typing import Any

from monai_transfer.data.datalist import (
    DEFAULT_EXTENSIONS,
    DatalistError,
    datalist_from_csv,
    datalist_from_folder,
    datalist_from_json,
    load_datalist,
    validate_datalist,
)
from monai_transfer.data.npz import (
    SOP_CLASS_UIDS,
    datalist_from_npz,
    write_dicom,
    write_dicom_series,
    write_nifti,
    write_png,
)
from monai_transfer.data.splits import assign_folds, group_of, kfold_datalist, split_datalist
from monai_transfer.deprecated import install, moved_attribute

__all__ = [
    "DEFAULT_EXTENSIONS",
    "DatalistError",
    "datalist_from_csv",
    "datalist_from_folder",
    "datalist_from_json",
    "load_datalist",
    "validate_datalist",
    "SOP_CLASS_UIDS",
    "datalist_from_npz",
    "write_dicom",
    "write_dicom_series",
    "write_nifti",
    "write_png",
    "group_of",
    "split_datalist",
    "assign_folds",
    "kfold_datalist",
]

from . import bundle_data  # noqa: E402, F401
from .bundle_data import SPLIT_NAMES, bundle_datalists  # noqa: E402

__all__ += ["bundle_datalists", "SPLIT_NAMES"]

from . import volumes  # noqa: E402, F401
from .volumes import (  # noqa: E402
    AGGREGATION_METHODS,
    aggregate_by_volume,
    aggregate_volume_probs,
    check_disjoint_sources,
    slice_datalist,
    volume_slices,
)

__all__ += [
    "AGGREGATION_METHODS",
    "aggregate_by_volume",
    "aggregate_volume_probs",
    "check_disjoint_sources",
    "slice_datalist",
    "volume_slices",
]

from . import dicom_meta, duplicates  # noqa: E402, F401
from .bundle_data import SplitDatalists  # noqa: E402
from .dicom_meta import add_dicom_ids, read_dicom_ids  # noqa: E402
from .duplicates import DUPLICATE_MODES, find_duplicates  # noqa: E402

__all__ += ["SplitDatalists", "add_dicom_ids", "read_dicom_ids", "DUPLICATE_MODES", "find_duplicates"]

from . import samplers  # noqa: E402, F401
from .samplers import DistributedWeightedSampler, build_distributed_sampler, build_sampler, labels_from_datalist  # noqa: E402

__all__ += ["DistributedWeightedSampler", "build_distributed_sampler", "build_sampler", "labels_from_datalist"]


install()  # the old module paths of monai_transfer.deprecated.MOVED, for one release


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name)
