"""Plain functions behind FitNets and FSP: reading a network's intermediate maps (its stages,
a forward pass stopped early), the hint regressor's geometry, the hint loss, FSP matrices.

A network's *stages* are found from one forward pass of a blank image, not from its names:
the 4-d maps it computes (1 x 1 maps left out, they are pooled features) fall into runs of
equal spatial size; each run's last map is a stage output, named after the outermost module
that returns it while taking its input from the same run or the one before (``stages.1`` of
a ResNet rather than its last block, and not the whole ``stages`` sequence, whose input comes
from further back). LeNet-5 has four stages (each conv and each pool changes the size),
ResNet-20 and the thin student three.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import hooked


def _forward_records(model: nn.Module, input_shape) -> list[tuple[str, object, object]]:
    """(name, input, output) of every submodule, in the order they finish, on a blank batch
    (eval mode). Containers finish after their children."""
    records = []

    def record(module, args, out, name):
        first = args[0] if args and torch.is_tensor(args[0]) else None
        records.append((name, first, out))

    names = [n for n, _ in model.named_modules() if n]
    image = torch.zeros(2, *input_shape)
    with torch.no_grad(), hooked(model, {n: record for n in names}):
        model(image)
    return [("", None, image)] + records


def _is_map(t) -> bool:
    return torch.is_tensor(t) and t.dim() == 4 and tuple(t.shape[-2:]) != (1, 1)


def feature_map_layers(model: nn.Module, input_shape) -> list[str]:
    """Names of the modules whose output is a feature map (N x C x H x W, H x W > 1 x 1)."""
    return [n for n, _, out in _forward_records(model, input_shape)[1:] if _is_map(out)]


def stage_layers(model: nn.Module, input_shape) -> list[str]:
    """The module names of the network's stages, in order (see the module docstring)."""
    records = _forward_records(model, input_shape)
    run_of = {id(records[0][2]): 0}            # the image is run 0
    runs: list[list] = []                      # [size, last output]
    for _, _, out in records[1:]:
        if not _is_map(out):
            continue
        if not runs or runs[-1][0] != out.shape[-2:]:
            runs.append([out.shape[-2:], out])
        runs[-1][1] = out
        run_of.setdefault(id(out), len(runs))
    names = []
    for i, (_, last) in enumerate(runs, start=1):
        fits = [n for n, inp, out in records[1:] if out is last
                and run_of.get(id(inp), i) >= i - 1]
        names.append(fits[-1])
    return names


def middle_stage(model: nn.Module, input_shape) -> str:
    """The stage in the middle (the earlier one of two middles): FitNets' default hint."""
    stages = stage_layers(model, input_shape)
    if not stages:
        raise ValueError(f"{type(model).__name__} computes no feature map")
    return stages[(len(stages) - 1) // 2]


class _Reached(Exception):
    def __init__(self, output):
        self.output = output


def run_until(model: nn.Module, name: str, x: torch.Tensor,
              record: tuple[str, ...] = ()) -> tuple[torch.Tensor, dict]:
    """Run ``model`` on ``x`` up to the module ``name`` and stop there: nothing after it is
    computed (so layers after it neither run nor update their BatchNorm statistics).

    Returns the output of ``name`` and ``{n: (input, output)}`` for the modules in ``record``
    that ran before it. The model keeps its train / eval mode.
    """
    seen = {}

    def keep(module, args, out, n):
        seen[n] = (args[0], out)
        if n == name:
            raise _Reached(out)

    try:
        with hooked(model, {n: keep for n in {*record, name}}, eval_mode=False):
            model(x)
    except _Reached as stop:
        return stop.output, seen
    raise ValueError(f"the forward pass of {type(model).__name__} never ran {name!r}")


# ---------------------------------------------------------------- FitNets


def regressor_geometry(student_size, teacher_size) -> tuple[tuple, tuple, tuple]:
    """(kernel, stride, target size) of the convolutional regressor, per spatial dimension.

    Where the student's map is at least as large as the teacher's, the regressor is a valid
    (unpadded) convolution that maps it onto the teacher's size: stride s = floor(n_s / n_t)
    and kernel n_s - s (n_t - 1), so every student position is read (the kernel is at least
    the stride). At stride 1 this is FitNets' kernel n_s - n_t + 1. Where the student's map is
    smaller, the teacher's hint is average-pooled down to the student's size and the
    regressor does not shrink that dimension (kernel 1).
    """
    kernel, stride, target = [], [], []
    for n_s, n_t in zip(student_size, teacher_size):
        t = min(n_s, n_t)
        s = n_s // t
        kernel.append(n_s - s * (t - 1))
        stride.append(s)
        target.append(t)
    return tuple(kernel), tuple(stride), tuple(target)


def make_regressor(student_map_shape, teacher_map_shape) -> nn.Conv2d:
    """FitNets' regressor: one convolution (with a bias) from the student's guided channels
    to the teacher's hint channels, shaped by ``regressor_geometry``."""
    kernel, stride, _ = regressor_geometry(student_map_shape[-2:], teacher_map_shape[-2:])
    return nn.Conv2d(student_map_shape[1], teacher_map_shape[1], kernel, stride)


def hint_target(teacher_hint: torch.Tensor, size) -> torch.Tensor:
    """The teacher's hint at the regressor's output size (pooled if the student is smaller)."""
    if tuple(teacher_hint.shape[-2:]) == tuple(size):
        return teacher_hint
    return F.adaptive_avg_pool2d(teacher_hint, size)


def hint_loss(regressed: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
    """1/2 of the mean squared difference over every element (FitNets' 1/2 ||u_h - r||^2,
    divided by the number of elements so the step size does not depend on the map's size);
    the hint is detached."""
    return 0.5 * (regressed - hint.detach()).pow(2).mean()


# ---------------------------------------------------------------- FSP


def fsp_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """G[b, i, j] = 1/(h w) sum over positions of first[b, i, pos] * second[b, j, pos]
    (Yim et al.'s eq. 2), for maps of equal spatial size."""
    if first.shape[-2:] != second.shape[-2:]:
        raise ValueError(f"FSP needs maps of equal spatial size, got {tuple(first.shape)} and "
                         f"{tuple(second.shape)}")
    h, w = first.shape[-2:]
    return torch.einsum("bihw,bjhw->bij", first, second) / (h * w)


def stage_fsp(stage_input: torch.Tensor, stage_output: torch.Tensor) -> torch.Tensor:
    """The FSP matrix of a stage: its input, average-pooled to its output's size when the
    stage downsamples, against its output."""
    size = stage_output.shape[-2:]
    if stage_input.shape[-2:] != size:
        stage_input = F.adaptive_avg_pool2d(stage_input, size)
    return fsp_matrix(stage_input, stage_output)


def fsp_loss(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> torch.Tensor:
    """Mean over the pairs (equal weights) of the batch mean of ||G_t - G_s||_F^2; the
    teacher's matrices are detached."""
    terms = [(s - t.detach()).pow(2).sum((1, 2)).mean() for t, s in zip(teacher, student)]
    return torch.stack(terms).mean()
