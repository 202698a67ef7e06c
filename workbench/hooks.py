"""Forward passes with hooks, then everything put back: the one helper every method uses to
look inside a network (sample a layer's inputs, count operations, observe ranges).

``hooked(model, {name: hook})`` attaches ``hook(module, inputs, output, name)`` to the named
modules (``pre=True``: ``hook(module, inputs, name)`` before the module runs), optionally in
eval mode, and removes the hooks and restores the mode when the block ends, whatever happens
inside. ``layer_io`` and ``probe`` are the two passes most methods need.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn


@contextlib.contextmanager
def hooked(model: nn.Module, hooks: dict, pre: bool = False, eval_mode: bool = True):
    """Within the block, ``hooks`` (module name -> function) run on every forward pass.

    A forward hook may return a replacement output (as torch's hooks may); a pre-hook may
    return replacement inputs.
    """
    handles = []
    was_training = model.training
    try:
        for name, hook in hooks.items():
            module = model.get_submodule(name)
            if pre:
                handles.append(module.register_forward_pre_hook(
                    lambda m, args, name=name, hook=hook: hook(m, args, name)))
            else:
                handles.append(module.register_forward_hook(
                    lambda m, args, out, name=name, hook=hook: hook(m, args, out, name)))
        if eval_mode:
            model.eval()
        yield model
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


@torch.no_grad()
def probe(model: nn.Module, input_shape: tuple[int, ...], hooks: dict) -> None:
    """One forward pass of a zero image in eval mode with ``hooks`` attached."""
    with hooked(model, hooks):
        model(torch.zeros(1, *input_shape))


@torch.no_grad()
def layer_io(model: nn.Module, data, names: list[str], images: int = 1024,
             batch_size: int = 256, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Inputs and outputs of the named layers on ``images`` examples of ``data`` (eval mode).

    Returns ``{name: {"input": tensor, "output": tensor}}``, concatenated over batches. The
    examples are a stratified subset drawn with ``seed``, so methods that sample feature maps
    are deterministic.
    """
    sample = data.subset(min(images, len(data)), seed=seed)
    records = {n: {"input": [], "output": []} for n in names}

    def record(module, inputs, output, name):
        records[name]["input"].append(inputs[0].detach())
        records[name]["output"].append(output.detach())

    with hooked(model, {n: record for n in names}):
        for x, _ in sample.loader(batch_size):
            model(x)
    return {n: {k: torch.cat(v) for k, v in r.items()} for n, r in records.items()}
