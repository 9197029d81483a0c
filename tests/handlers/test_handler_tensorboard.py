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

import pytest
import torch
from ignite.engine import Engine
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from monai_transfer.handlers.tensorboard import TensorBoardTrainingExtras


def test_logs_each_group_lr_and_one_image_grid_per_epoch(tmp_path):
    net = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD([{"params": [net.weight], "lr": 0.1}, {"params": [net.bias], "lr": 0.01}])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    images = torch.rand(6, 1, 16, 12)

    def step(engine, batch):
        sched.step()
        return 0.0

    engine = Engine(step)
    TensorBoardTrainingExtras(log_dir=tmp_path, optimizer=opt, n_images=4).attach(engine)
    engine.run([{"image": images, "label": torch.zeros(6)}] * 3, max_epochs=2)

    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    lr0 = [(e.step, e.value) for e in acc.Scalars("lr/group_0")]
    lr1 = [e.value for e in acc.Scalars("lr/group_1")]
    assert [s for s, _ in lr0] == list(range(1, 7))
    # logged after each scheduler step; TensorBoard stores float32
    assert lr0[0][1] == pytest.approx(0.05, rel=1e-6) and lr0[-1][1] == pytest.approx(0.1 * 0.5**6, rel=1e-6)
    assert lr1[0] == pytest.approx(0.005, rel=1e-6)
    grids = acc.Images("train/inputs")
    assert [g.step for g in grids] == [1, 2]  # once per epoch
    assert grids[0].width == 4 * 12 + 5 * 2 and grids[0].height == 16 + 2 * 2  # 4 images side by side, padded


def test_image_grid_from_a_monai_trainer(tmp_path):
    """MONAI's ``SupervisedTrainer`` leaves a decollated batch (a list of per-image dicts) in ``engine.state.batch``
    after each iteration: the grid of the network's inputs is still written once per epoch (before: never)."""
    from monai.engines import SupervisedTrainer

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 10 * 12, 2))
    batch = {"image": torch.rand(5, 3, 10, 12), "label": torch.tensor([0, 1, 0, 1, 1])}
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=2, train_data_loader=[batch, batch], network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=[TensorBoardTrainingExtras(log_dir=tmp_path, n_images=4)],
    )  # fmt: skip
    trainer.run()
    assert isinstance(trainer.state.batch, list) and isinstance(trainer.state.batch[0], dict)  # decollated
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    grids = acc.Images("train/inputs")
    assert [g.step for g in grids] == [1, 2]
    assert grids[0].width == 4 * 12 + 5 * 2 and grids[0].height == 10 + 2 * 2  # 4 RGB inputs side by side
    assert [e.step for e in acc.Scalars("lr/group_0")] == [1, 2, 3, 4]
