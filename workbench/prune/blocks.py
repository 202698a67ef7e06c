"""Layer removal: drop whole residual blocks, greedily, the one whose removal costs least on a
training subset first (ThiNet's remark that whole layers can go; seed 000's notes).

A block can go when its input and output have the same shape (an identity shortcut) and it is
not the first of its stage, so that no stage is ever left empty. The network must describe its
depth in its config (``blocks_per_stage`` and one ``inner`` width per block, as ResNet20 does)
so that the shallower network can be rebuilt with ``type(model)(**config)``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..codec import plain_state_dict
from ..method import Choice, Int, TrainingMethod, clone_model, knob
from ..models.cifar import BasicBlock
from .structured import finetune, finetune_recipe, settings_without_training
from .surgery import rebuild


def removable_blocks(model: nn.Module) -> list[tuple[int, int]]:
    """(stage, block) of the residual blocks that can be removed: those with an identity
    shortcut (equal input and output shapes) that are not the first of their stage. In
    ResNet-20: every block but the first of a stage. None if the network has no such stages."""
    stages = getattr(model, "stages", None)
    config = getattr(model, "config", None)
    if not isinstance(stages, nn.Sequential) or not isinstance(config, dict) \
            or not {"blocks_per_stage", "inner"} <= set(config):
        return []
    found = []
    for s, stage in enumerate(stages):
        if not isinstance(stage, nn.Sequential):
            return []
        found += [(s, b) for b in range(1, len(stage)) if isinstance(stage[b], BasicBlock)
                  and stage[b].stride == 1 and stage[b].pad == 0]
    return found


def without_block(model: nn.Module, stage: int, block: int) -> nn.Module:
    """A new network without block ``(stage, block)``: a shorter ``blocks_per_stage`` list
    and ``inner`` list, the state dict re-keyed so later blocks move up by one."""
    config = {**model.config, "blocks_per_stage": list(model.config["blocks_per_stage"]),
              "inner": list(model.config["inner"])}
    config["blocks_per_stage"][stage] -= 1
    del config["inner"][sum(model.config["blocks_per_stage"][:stage]) + block]
    state = {}
    for key, value in plain_state_dict(model).items():
        parts = key.split(".")
        if parts[0] == "stages" and int(parts[1]) == stage and int(parts[2]) >= block:
            if int(parts[2]) == block:
                continue
            parts[2] = str(int(parts[2]) - 1)
        state[".".join(parts)] = value.clone()
    return rebuild(model, config, state)


@torch.no_grad()
def subset_cost(model: nn.Module, batches: list, criterion: str) -> float:
    """Mean cross-entropy, or error rate, of ``model`` (eval mode) on cached batches."""
    model.eval()
    total, n = 0.0, 0
    for x, y in batches:
        logits = model(x)
        total += (F.cross_entropy(logits, y, reduction="sum").item() if criterion == "loss"
                  else (logits.argmax(1) != y).sum().item())
        n += len(y)
    return total / n


def greedy_block_removal(model: nn.Module, batches: list, blocks: int,
                         criterion: str = "loss") -> tuple[nn.Module, list[dict]]:
    """Remove ``blocks`` blocks one by one, each time the one whose removal raises the cost
    least. Returns the smaller net and the path: which block went (its original name, and
    ``at``: its index in the net of that step, for without_block) and the cost after it."""
    origin = [list(range(len(stage))) for stage in model.stages]
    path = [{"removed": None, "at": None, "depth": depth_of(model),
             "cost": subset_cost(model, batches, criterion)}]
    for _ in range(blocks):
        candidates = removable_blocks(model)
        if not candidates:
            break
        trials = [(subset_cost(without_block(model, s, b), batches, criterion), s, b)
                  for s, b in candidates]
        cost, s, b = min(trials)
        model = without_block(model, s, b)
        path.append({"removed": f"stages.{s}.{origin[s].pop(b)}", "at": (s, b),
                     "depth": depth_of(model), "cost": cost})
    return model, path


def depth_of(model: nn.Module) -> int:
    """Weighted layers of a ResNet: stem + 2 per block + head (ResNet-20: 20)."""
    return 2 + 2 * sum(model.config["blocks_per_stage"])


@dataclass
class LayerRemoval(TrainingMethod):
    """Remove the residual blocks whose removal costs least, greedily (ThiNet's remark), then
    fine-tune for ``epochs``."""
    id = "prune.layer"
    reference = ("Luo, Wu, Lin 2017, ThiNet (remark on removing whole layers); seed 000 "
                 "notes; greedy removal of residual blocks")
    sliders = {"blocks": (0, 6, 1), "epochs": (0, 5, 1)}
    smoke = {"images": 64, "epochs": 1}
    effects = ("smaller_module", "fewer_macs", "fewer_bytes")
    requires = ("residual stages of removable blocks (identity-shortcut BasicBlocks after the "
                "first of a stage, depth in config['blocks_per_stage'])")

    blocks: int = knob(2, Int(0, 1000))     # residual blocks removed (each: 2 conv layers)
    # the cost measured on the subset
    criterion: str = knob("loss", Choice(("loss", "accuracy")))
    images: int = knob(512, Int(1, 10**6))  # training examples the cost is measured on
    epochs: int = 1                         # fine-tuning after the removal (0: none)
    weight_decay: float = 5e-4

    def tags(self):
        return replace(super().tags(), needs_data=True)    # it measures the cost on data

    def supports(self, model):
        return bool(removable_blocks(model))

    def settings(self):
        return settings_without_training(self, self.epochs > 0)

    def path(self, model: nn.Module, data) -> tuple[nn.Module, list[dict]]:
        """The smaller net (not fine-tuned) and the greedy path, for a depth/accuracy plot.
        ``model`` is untouched."""
        if not self.supports(model):
            raise ValueError(f"{self.id} needs {self.requires}; {type(model).__name__} has "
                             "none it can use")
        if data is None:
            raise ValueError(f"{self.id} needs data: pass the training set as path(model, data)")
        return self._path(clone_model(model), data)

    def _path(self, model, data):
        batches = list(data.subset(min(self.images, len(data)), seed=self.seed).loader(256))
        return greedy_block_removal(model, batches, self.blocks, self.criterion)

    def compress(self, model, data=None):
        smaller, _ = self._path(model, data)
        return finetune(self, smaller, data, finetune_recipe(self, data))
