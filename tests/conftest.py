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
from __future__ import annotations

import os
import tempfile

import pytest

# Tests use tiny tensors on 2-core CPUs: one intra-op thread avoids oversubscription (subprocesses keep their own).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The near-duplicate hash cache (monai_transfer.data.duplicates) goes to a throw-away folder, not the user's home.
os.environ.setdefault("MONAI_TRANSFER_CACHE", tempfile.mkdtemp(prefix="monai_transfer_cache_"))


@pytest.fixture(autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(1)
    yield
