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
"""MONAI Label app serving the monai-transfer bundles as classification models.

Start it with (see ``docs/monailabel.md``; ``scripts/setup_label_env.sh`` builds ``.venv-label``)::

    .venv-label/bin/python -m monailabel.main start_server --app apps/monailabel --studies /path/to/images \\
        --conf models xray --host 127.0.0.1 --port 8000

``--conf`` settings read here:

- ``models``: comma-separated bundle folder names (``xray,ct_slices``) or bundle folder paths, e.g. a training run
  folder (``runs/brain_mri``, served as ``brain_mri``); default/``all``: every classification bundle of ``bundles_dir``.
- ``bundles_dir``: where the bundles are; default ``$MONAI_TRANSFER_BUNDLES_DIR`` or the repository's ``bundles/``.
- ``skip_trainers``: ``true`` to serve inference only.

An unknown model or image id is answered with HTTP 404 naming it.

Image-level labels live in the datastore as ``labels/final/<image id>.label.json`` (``{"label": "pneumonia"}``; for a
multi-label bundle, e.g. a 14-finding run folder, the findings present: ``{"label": ["effusion", "edema"]}``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

import monai_transfer
from monai_transfer.label import (
    LABEL_FILE_SUFFIX,
    ClassificationBundleTrainTask,
    find_classification_bundles,
    infer_task_class,
    parse_model_names,
    resolve_bundles_dir,
)

__all__ = ["TransferClassificationApp"]

logger = logging.getLogger(__name__)

#: image file patterns of the datastore: MONAI Label's defaults plus DICOM files and our label files.
EXTRA_DATASTORE_PATTERNS = ("*.dcm", f"*{LABEL_FILE_SUFFIX}")


class TransferClassificationApp(MONAILabelApp):
    """Serves every classification bundle of ``bundles_dir`` (or those named by ``--conf models``)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundles_dir = resolve_bundles_dir(app_dir, conf)
        self.models = find_classification_bundles(self.bundles_dir, parse_model_names(conf.get("models")))
        logger.info(f"monai-transfer bundles from {self.bundles_dir}: {self.models}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"monai-transfer classification bundles ({monai_transfer.__version__})",
            description="Image-level classification bundles of monai-transfer",
            version=monai_transfer.__version__,
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        extensions = list(settings.MONAI_LABEL_DATASTORE_FILE_EXT)
        extensions += [p for p in EXTRA_DATASTORE_PATTERNS if p not in extensions]
        return LocalDatastore(
            self.studies,
            extensions=extensions,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, path in self.models.items():
            task = infer_task_class(path)(path, self.conf)  # slice bundles answer once per volume
            if not task.is_valid():
                logger.warning(f"bundle '{name}' ({path}) is not served: it needs models/model.pt (or model.ts)")
                continue
            logger.info(f"+++ Adding classification inferer:: {name} => {path}")
            infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        if strtobool(self.conf.get("skip_trainers", "false")):
            return trainers
        for name, path in self.models.items():
            task = ClassificationBundleTrainTask(path, self.conf)
            if task.is_valid():
                logger.info(f"+++ Adding classification trainer:: {name} => {path}")
                trainers[name] = task
        return trainers

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> Any:
        """MONAI Label's inference, after refusing an unknown model or image id with HTTP 404 naming it.

        MONAI Label itself answers 500 for both (an unknown id becomes an empty path that fails in the loader).
        """
        model = request.get("model")
        if model and model not in self._infers:
            served = sorted(self._infers)
            raise HTTPException(status_code=404, detail=f"model {model!r} is not served; served: {served}")
        image = request.get("image")
        if isinstance(image, str) and image and not os.path.exists(image):
            if not (datastore or self.datastore()).get_image_uri(image):
                detail = f"image {image!r} not found in the datastore {self.studies}"
                raise HTTPException(status_code=404, detail=detail)
        return super().infer(request, datastore)

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First()}
