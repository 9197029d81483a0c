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
"""An ensemble network that averages the class probabilities of several networks (k-fold models, several seeds)."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from monai_transfer.networks.utils import PROBABILITY_OUTPUTS
from monai_transfer.utils.io import atomic_torch_save, load_state_dict_file

__all__ = ["ProbabilityEnsemble", "member_or_ensemble", "save_ensemble_checkpoint"]


class ProbabilityEnsemble(nn.Module):
    """Average the PROBABILITIES (not the logits) of several classifiers; one bundle ``network_def`` for all of them.

    Averaging probabilities is the safer choice: members trained separately may have logits on different scales
    (one confident member would dominate a logit average), while probabilities are on one scale. The forward pass
    returns ``log(mean p)`` (softmax) / ``logit(mean p)`` (sigmoid) by default, so the bundle's usual
    ``Activationsd(softmax=True)`` post-processing yields ``mean p`` exactly and a temperature
    (:class:`monai_transfer.transforms.ApplyTemperatured`, fitted on ensemble outputs) can be applied before it.

    Members come either from ``networks`` (ready modules, e.g. different architectures) or from one template
    ``network`` copied once per entry of ``checkpoints`` and loaded with that state dict (``weights_only`` loading, see
    :func:`monai_transfer.utils.io.load_state_dict_file`). Bundle example (``inference.json``), the k fold models of
    :mod:`monai_transfer.cv.run`::

        "network_def": {
            "_target_": "monai_transfer.networks.nets.ProbabilityEnsemble",
            "network": {"_target_": "monai_transfer.networks.nets.Pretrained2DNet", "weights": "none", ...},
            "checkpoints": "$sorted(glob.glob(@bundle_root + '/cv/fold_*/models/model.pt'))"
        }

    The members' weights are loaded here, so a ``CheckpointLoader`` of a single ``model.pt`` must not be used with it.
    For tools that always load ONE checkpoint into ``network_def`` (``CheckpointLoader`` in ``inference.json``,
    ``monai_transfer.evaluate``, MONAI Label), combine the members once with :func:`save_ensemble_checkpoint` and use
    ``{"_target_": "...ProbabilityEnsemble", "network": {...}, "num_members": K}`` as ``network_def``: it holds ``K``
    copies of the template whose weights come from that combined ``model.pt``.

    Args:
        networks: member modules.
        network: template module, deep-copied per checkpoint (used with ``checkpoints``).
        checkpoints: state-dict files, one member each.
        num_members: with ``network`` and no ``checkpoints``: that many copies of the template, to be filled by
            ``load_state_dict`` of a combined ensemble checkpoint (:func:`save_ensemble_checkpoint`).
        activation: ``"softmax"`` (default) or ``"sigmoid"``.
        output: ``"logits"`` (default, ``log mean p``) or ``"probs"``.
        strict: strict state-dict loading.

    Raises:
        ValueError: no member, or both/neither of ``networks`` and ``network`` + ``checkpoints``.
        FileNotFoundError / RuntimeError: a missing or unreadable checkpoint (the message names it).
    """

    def __init__(
        self,
        networks: Sequence[nn.Module] | None = None,
        network: nn.Module | None = None,
        checkpoints: Sequence[str | os.PathLike] | None = None,
        num_members: int | None = None,
        activation: str = "softmax",
        output: str = "logits",
        strict: bool = True,
    ) -> None:
        super().__init__()
        if output not in PROBABILITY_OUTPUTS:
            raise ValueError(f"output must be one of {PROBABILITY_OUTPUTS}, got {output!r}")
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
        self.checkpoints = [str(c) for c in (checkpoints or [])]
        if networks is not None and (network is not None or self.checkpoints):
            raise ValueError("give either networks, or network + checkpoints, not both")
        if networks is not None:
            members = list(networks)
        elif network is not None and self.checkpoints:
            members = []
            for ckpt in self.checkpoints:
                if not Path(ckpt).is_file():
                    raise FileNotFoundError(f"ensemble member checkpoint not found: {ckpt}")
                m = copy.deepcopy(network)
                try:
                    m.load_state_dict(load_state_dict_file(ckpt), strict=strict)
                except RuntimeError as e:
                    raise RuntimeError(f"ensemble member checkpoint {ckpt} does not fit the network: {e}") from e
                members.append(m)
        elif network is not None and num_members is not None:
            if int(num_members) < 1:
                raise ValueError(f"num_members must be at least 1, got {num_members}")
            members = [copy.deepcopy(network) for _ in range(int(num_members))]
        else:
            raise ValueError(
                "ProbabilityEnsemble needs networks, or network + a non-empty list of checkpoints, or network + "
                "num_members"
            )
        if not members:
            raise ValueError("ProbabilityEnsemble needs at least one member network")
        self.members = nn.ModuleList(members)
        self.activation = activation
        self.output = output

    def __len__(self) -> int:
        return len(self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` log of the mean member probability (or the mean probability with ``output="probs"``).

        Same result as :func:`monai_transfer.inferers.average_probabilities`, written so that ``torch.jit.script``
        (``monai.bundle ckpt_export``) can compile it.
        """
        probs = []
        for m in self.members:
            o = m(x).float()
            probs.append(torch.softmax(o, dim=1) if self.activation == "softmax" else torch.sigmoid(o))
        p = torch.stack(probs).mean(0)
        if self.output == "probs":
            return p
        eps = 1e-12
        if self.activation == "softmax":
            return torch.log(p.clamp_min(eps))
        p = p.clamp(eps, 1.0 - eps)
        return torch.log(p) - torch.log1p(-p)


def member_or_ensemble(network: nn.Module, num_members: int = 1, activation: str = "softmax") -> nn.Module:
    """``network`` itself for one member, else a :class:`ProbabilityEnsemble` of ``num_members`` copies of it (to be
    filled from one combined checkpoint, see :func:`save_ensemble_checkpoint`): the ``network_def`` of a bundle's
    ``inference.json`` with its ``num_members`` id.

    Raises:
        ValueError: ``num_members`` < 1.
    """
    if int(num_members) < 1:
        raise ValueError(f"num_members must be at least 1, got {num_members}")
    if int(num_members) == 1:
        return network
    return ProbabilityEnsemble(network=network, num_members=int(num_members), activation=activation)


def save_ensemble_checkpoint(
    network: nn.Module, checkpoints: Sequence[str | os.PathLike], path: str | os.PathLike, strict: bool = True
) -> Path:
    """Combine member state dicts into ONE ensemble checkpoint (atomically), loadable into
    ``ProbabilityEnsemble(network=<same template>, num_members=len(checkpoints))``.

    Args:
        network: the member template (e.g. the bundle's ``Pretrained2DNet`` with ``weights="none"``).
        checkpoints: member state-dict files (e.g. ``cv/fold_*/models/model.pt``).
        path: output file (e.g. ``models/model_ensemble.pt``).
        strict: strict loading of each member.
    """
    ens = ProbabilityEnsemble(network=network, checkpoints=checkpoints, strict=strict)
    return atomic_torch_save(ens.state_dict(), path)
