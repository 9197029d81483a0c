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
"""Leakage audit of a data set: near-duplicates across splits, label conflicts, class balance, unreadable files.

Usage::

    python -m monai_transfer.audit DATASET [--output DIR] [--class_names normal pneumonia] [--duplicates group]

``DATASET`` is anything a bundle's ``dataset_dir`` accepts (class folders, ``train/val/test`` folders, a CSV or JSON
data list). The splits are made exactly as in training (:func:`~monai_transfer.data.bundle_datalists`, same seed and
validation fraction), then ``DIR`` (default ``audit/``) receives:

- ``audit.json``: counts (images, patients from DICOM headers, clusters, clusters across splits, label conflicts,
  unreadable files), the class balance per split, every cluster that crosses splits or mixes labels, and every
  unreadable file with its error;
- ``clusters.csv``: one row per image in a near-duplicate cluster (cluster id, split, label, path, hash);
- ``cross_split_pairs.png``: a contact sheet of the closest cross-split pairs (left: the training-side image), row
  ``#k`` being entry ``k`` of ``closest_pairs_across_splits`` in ``audit.json``; each image is captioned with its
  split, label and short file name (last folder and file name).

The exit status is 0, or 1 with ``--fail_on_leak`` when a cluster crosses splits. Bundles run the same report at
initialisation (:func:`write_audit`, ``<output_dir>/audit``) and copy its summary into ``metrics.json``.
"""

from __future__ import annotations

from monai_transfer.audit.cli import build_arg_parser, main
from monai_transfer.audit.report import audit_dataset, audit_report, contact_sheet, short_name, write_audit

__all__ = ["audit_report", "contact_sheet", "short_name", "write_audit", "audit_dataset", "main", "build_arg_parser"]
