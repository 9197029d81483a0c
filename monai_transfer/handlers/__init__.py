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
"""Ignite handlers for MONAI engines: metrics usable as bundle key metrics, report writing, gradual unfreezing,
per-epoch seeding, an exponential moving average of the weights, atomic checkpoints, MixUp/CutMix of the training
batches, gradient clipping, the out-of-fold collector of cross-validation and the bundles' logging groups. Bundles use
the full module paths (``monai_transfer.handlers.metric_handlers.AUCHandler``)."""

from __future__ import annotations

from .checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    HandlerStates,
    LastCheckpointResume,
    checkpoint_progress,
    find_last_checkpoint,
)
from .ema import WeightEMA, ema_decay_at
from .grad_clip import GradNormClipper
from .loggers import TrainingLoggers, ValidationLoggers
from .metric_handlers import AUCHandler, ClassificationMetricsHandler, OperatingPointHandler
from .mixing import MixBatchHandler
from .model_loader import VerifiedCheckpointLoader, load_verified_model
from .oof_collector import OOFCollector
from .prediction_writer import ClassificationPredictionWriter
from .report_writer import ClassificationReportWriter, ids_from_output
from .seeding import EpochSeed, epoch_seed
from .tensorboard import TensorBoardTrainingExtras
from .unfreeze import GradualUnfreeze
from .volume_aggregation import VolumeAggregator, VolumePredictionWriter, VolumeReportWriter, volume_ids_from_engine

__all__ = [
    "AUCHandler",
    "OperatingPointHandler",
    "ClassificationMetricsHandler",
    "ClassificationReportWriter",
    "ClassificationPredictionWriter",
    "ids_from_output",
    "EpochSeed",
    "epoch_seed",
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "HandlerStates",
    "LastCheckpointResume",
    "checkpoint_progress",
    "find_last_checkpoint",
    "VerifiedCheckpointLoader",
    "load_verified_model",
    "GradualUnfreeze",
    "WeightEMA",
    "ema_decay_at",
    "TensorBoardTrainingExtras",
    "TrainingLoggers",
    "ValidationLoggers",
    "VolumeAggregator",
    "VolumeReportWriter",
    "VolumePredictionWriter",
    "volume_ids_from_engine",
    "MixBatchHandler",
    "GradNormClipper",
    "OOFCollector",
]
