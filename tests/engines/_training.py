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
"""A tiny, real training run (PneumoniaMNIST at 16x16) wired like the bundles: MONAI ``SupervisedTrainer`` with a
shuffled loader, random augmentation, dropout, warm-up + cosine LR, gradient clipping, per-epoch reseeding, atomic
checkpoints and resume. Used in-process by the tests and as a subprocess script (``python -m
tests.engines._training OUT_DIR --kill-at-iteration N`` / ``--resume``) by the SIGKILL test."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.handlers import LrScheduleHandler
from monai.transforms import Compose, RandFlipd, RandGaussianNoised
from torch import nn

from monai_transfer.engines.utils import ChannelsLastPrepareBatch, auto_device, set_run_determinism
from monai_transfer.handlers.checkpoint import AtomicCheckpointSaver, LastCheckpointResume
from monai_transfer.handlers.grad_clip import GradNormClipper
from monai_transfer.handlers.seeding import EpochSeed
from monai_transfer.losses.classification import build_loss
from monai_transfer.optimizers.builders import build_optimizer, build_scheduler
from monai_transfer.utils.io import atomic_torch_save, check_output_dir
from tests.utils import load_pneumonia

__all__ = ["tiny_pneumonia", "TinyNet", "build_run", "evaluate_loss"]


def tiny_pneumonia(n: int = 48, size: int = 16) -> list[dict]:
    """``n`` real, class-balanced PneumoniaMNIST images resized to ``size``x``size``, in [0, 1]; labels ``(1,)``."""
    x, y = load_pneumonia("val", n=n, seed=0)
    img = torch.as_tensor(x, dtype=torch.float32)[:, None] / 255.0
    img = torch.nn.functional.interpolate(img, size=(size, size), mode="area").numpy()
    return [{"image": img[i], "label": np.array([y[i]], dtype=np.int64)} for i in range(len(y))]


class TinyNet(nn.Module):
    """Two layers (conv, linear) with dropout, for 16x16 grey images."""

    def __init__(self, num_classes: int = 2, size: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(8 * (size // 2) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.conv(x))).flatten(1))


def build_run(
    out_dir: str | Path,
    epochs: int = 3,
    seed: int = 0,
    resume: bool = False,
    data: list[dict] | None = None,
    lr: float = 1e-2,
    save_checkpoints: bool = True,
) -> SupervisedTrainer:
    """Build the trainer; ``trainer.network`` holds the weights after ``trainer.run()``."""
    out_dir = check_output_dir(out_dir)
    set_run_determinism(seed)
    device = auto_device("cpu")
    data = tiny_pneumonia() if data is None else data
    transform = Compose([RandFlipd("image", prob=0.5, spatial_axis=1), RandGaussianNoised("image", prob=0.5, std=0.05)])
    loader = DataLoader(Dataset(data, transform), batch_size=8, shuffle=True, num_workers=0)
    network = TinyNet().to(device)
    optimizer = build_optimizer(network, "adamw", lr=lr, weight_decay=1e-4)
    scheduler = build_scheduler(optimizer, "cosine", epochs=epochs, steps_per_epoch=len(loader), warmup_epochs=1)
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=epochs,
        train_data_loader=loader,
        network=network,
        optimizer=optimizer,
        loss_function=build_loss("ce", num_classes=2, labels=data, imbalance="weights"),
        prepare_batch=ChannelsLastPrepareBatch(),
    )
    save_dict = {"network": network, "optimizer": optimizer, "lr_scheduler": scheduler, "trainer": trainer}
    ckpt_dir = Path(out_dir) / "checkpoints"
    handlers = [
        LastCheckpointResume(ckpt_dir, save_dict, enabled=resume),
        EpochSeed(seed, data_loader=loader),
        LrScheduleHandler(scheduler, epoch_level=False, print_lr=False),
        GradNormClipper(max_norm=1.0),
    ]
    if save_checkpoints:
        handlers.append(AtomicCheckpointSaver(str(ckpt_dir), save_dict, save_interval=1, n_saved=2))
    for h in handlers:
        h.attach(trainer)
    return trainer


def evaluate_loss(network: nn.Module, data: list[dict]) -> float:
    """Mean cross-entropy of ``network`` (eval mode) over ``data``."""
    network.eval()
    with torch.no_grad():
        x = torch.as_tensor(np.stack([d["image"] for d in data]))
        y = torch.as_tensor(np.concatenate([d["label"] for d in data]))
        return float(nn.functional.cross_entropy(network(x), y))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-at-iteration", type=int, default=0, help="SIGKILL itself after this iteration")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads; match the comparison run's")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trainer = build_run(args.out_dir, epochs=args.epochs, resume=args.resume)
    if args.kill_at_iteration:

        @trainer.on(Events.ITERATION_COMPLETED(once=args.kill_at_iteration))
        def _kill(_):
            os.kill(os.getpid(), signal.SIGKILL)

    trainer.run()
    atomic_torch_save(trainer.network.state_dict(), Path(args.out_dir) / "final.pt")


if __name__ == "__main__":
    main()
