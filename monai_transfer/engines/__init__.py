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
"""Training helpers for MONAI's ``SupervisedTrainer``/``SupervisedEvaluator``: device, determinism, batch
preparation, losses, optimisers and schedules. Bundles should use the full module paths
(``monai_transfer.engines.losses.build_loss``)."""

from __future__ import annotations

from . import cv, losses, mixing, optim, utils, workflow  # noqa: F401  (modules for full dotted paths in bundle configs)
from .losses import (
    ClassificationBCEWithLogitsLoss,
    ClassificationCrossEntropyLoss,
    ClassificationFocalLoss,
    DistributedWeightedSampler,
    build_distributed_sampler,
    build_loss,
    build_sampler,
    class_weights_from_labels,
    labels_from_datalist,
    make_weighted_sampler,
    pos_weight_from_labels,
)
from .mixing import BatchMixUpCutMix, MixBatchHandler
from .optim import GradNormClipper, build_optimizer, build_scheduler, param_groups_for
from .utils import (
    ChannelsLastPrepareBatch,
    amp_enabled,
    auto_device,
    configure_cuda_speedups,
    rank_zero_score,
    set_run_determinism,
)

__all__ = [
    "auto_device",
    "amp_enabled",
    "set_run_determinism",
    "configure_cuda_speedups",
    "rank_zero_score",
    "ChannelsLastPrepareBatch",
    "labels_from_datalist",
    "class_weights_from_labels",
    "pos_weight_from_labels",
    "make_weighted_sampler",
    "build_sampler",
    "DistributedWeightedSampler",
    "build_distributed_sampler",
    "ClassificationCrossEntropyLoss",
    "ClassificationBCEWithLogitsLoss",
    "ClassificationFocalLoss",
    "build_loss",
    "BatchMixUpCutMix",
    "MixBatchHandler",
    "param_groups_for",
    "build_optimizer",
    "build_scheduler",
    "GradNormClipper",
]
