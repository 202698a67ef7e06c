"""Distillation through intermediate layers: FitNets' hints and FSP matrices.

``distill.fitnets`` (Romero et al. 2015). The student is thinner and deeper than the teacher
(the ``"thin"`` student: width 8, depth 3 gives about 30K parameters on MNIST, the paper's
MNIST student size). Stage 1: the student's lower layers, up to its *guided* layer, learn to
predict the teacher's *hint* layer through a convolutional regressor (student channels ->
teacher channels; its kernel and stride map the student's spatial size onto the teacher's,
see ``hints_tensors.regressor_geometry``: FitNets' kernel n_s - n_t + 1 at stride 1, a larger
stride when the student's map is over twice as large, the teacher's hint average-pooled when
the student's map is smaller), with the squared error. Stage 2: knowledge distillation of the
whole student (``losses.TeacherLoss``: labels and the teacher's soft targets at temperature
T). By default the hint and the guided layers are the middle stages of the two networks
(``hints_tensors.stage_layers``); ``hint_layer`` / ``guided_layer`` name others.

Stage 1 trains through ``self.fit`` on a ``GuidedPart``: the student run only up to its
guided layer (``hints_tensors.run_until`` stops the forward pass there, so the upper layers
are neither computed nor changed, BatchNorm statistics included) followed by the regressor.
That part has no classifier: it answers constant scores, so ``fit``'s cross entropy is a
constant that the ``HintLoss`` hook replaces with the hint loss (the epoch's "loss" is then
the hint loss). Its optimizer holds the lower layers' and the regressor's parameters; the
regressor is dropped afterwards. Adapted: the paper's regressor has the hint's nonlinearity
and its KD weight is annealed; ours is linear (it can reach any hint) and the weight fixed.

``distill.fsp`` (Yim et al. 2017). The FSP matrix of two maps of equal size is
G = F1^T F2 / (h w) over positions (``hints_tensors.fsp_matrix``). We take one pair per stage,
as the paper does for ResNets: the stage's input, average-pooled to the output's size when the
stage downsamples, and its output. Stage 1 trains the student to match the teacher's matrices
(mean of squared Frobenius distances, equal weights; a smaller learning rate, ``fsp_lr``),
stage 2 trains it on the labels alone. Stage 1 runs the whole student (its head gets no
gradient) with forward hooks reading the stage inputs and outputs.
The default student keeps the teacher's widths with fewer layers, as the paper's does
(``student="auto"``: a ResNet with one block per stage for 3-channel data, the thin CNN
otherwise). When the networks have different numbers of stages the deepest are matched; where
a student map has fewer channels than the teacher's, a learned 1x1 convolution (trained in
stage 1, then dropped) projects it to the teacher's channel count before its matrix is taken.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

from ..hooks import hooked
from ..method import Int, Name, Optional, Real, Seq, knob
from ..train import Hook, seeded
from .base import Distillation, classes_of, student_for
from .hints_tensors import (
    feature_map_layers,
    fsp_loss,
    hint_loss,
    hint_target,
    make_regressor,
    middle_stage,
    regressor_geometry,
    run_until,
    stage_fsp,
    stage_layers,
)
from .losses import TeacherLoss


def _map_shapes(model: nn.Module, names, input_shape) -> dict[str, tuple]:
    """{name: (input shape, output shape)} of the named modules on a blank image (eval)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        _, seen = run_until(model, names[-1], torch.zeros(2, *input_shape), record=tuple(names))
    model.train(was)
    return {n: (tuple(i.shape), tuple(o.shape)) for n, (i, o) in seen.items()}


def _check_maps(method, field: str, model: nn.Module, names, input_shape) -> None:
    """Each name must be a module of ``model`` that outputs a feature map."""
    allowed = feature_map_layers(model, input_shape)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"{type(method).__name__}.{field}={getattr(method, field)!r}: "
                         f"{unknown} are not feature-map layers of {type(model).__name__}; "
                         f"allowed is any of {allowed}")


def _in_forward_order(model: nn.Module, names, input_shape) -> list[str]:
    """``names`` sorted as the forward pass computes them (so a pass can stop at the last)."""
    order = feature_map_layers(model, input_shape)
    return sorted(names, key=order.index)


def _sgd(method, params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9,
                           weight_decay=method.weight_decay, nesterov=True)


# ---------------------------------------------------------------- FitNets and FSP


@dataclass
class MapDistillation(Distillation):
    """What FitNets and FSP share: a convolutional teacher, the teacher's maps named by the
    knob ``teacher_maps`` (checked against the teacher) and the CNN training defaults."""
    teacher_maps = ""        # the name of the knob that names the teacher's maps
    lr: float = 0.05
    weight_decay: float = 5e-4

    def supports(self, model):
        return any(isinstance(m, nn.Conv2d) for m in model.modules())

    student_maps = ""        # the knob that names the student's maps

    def check_model(self, model):
        """The names of both knobs, before any work: the teacher's against ``model``, the
        student's against the (untrained, seeded) student these settings build for it."""
        shape = getattr(model, "input_shape", None)
        if shape is None:
            return
        for knob_name in (self.teacher_maps, self.student_maps):
            names = getattr(self, knob_name) if knob_name else None
            if names is None:
                continue
            names = [names] if isinstance(names, str) else names
            net = model if knob_name == self.teacher_maps else \
                self.make_student(model, SimpleNamespace(shape=tuple(shape)))
            _check_maps(self, knob_name, net, names, tuple(shape))


# ---------------------------------------------------------------- FitNets


class GuidedPart(nn.Module):
    """The student up to its guided layer, then the regressor; keeps the regressed hint in
    ``regressed`` and answers constant class scores (it has no classifier yet)."""

    def __init__(self, student: nn.Module, guided: str, regressor: nn.Module, classes: int):
        super().__init__()
        self.student, self.guided, self.regressor, self.classes = \
            student, guided, regressor, classes
        self.regressed = None

    def forward(self, x):
        features, _ = run_until(self.student, self.guided, x)
        self.regressed = self.regressor(features)
        return x.new_zeros(len(x), self.classes)


class HintLoss(Hook):
    """Replaces the loss by the hint loss of the ``GuidedPart`` being trained."""

    def __init__(self, teacher: nn.Module, hint: str, size: tuple):
        self.teacher, self.hint, self.size = teacher, hint, size

    def loss(self, model, x, y, logits, loss):
        with torch.no_grad():
            target, _ = run_until(self.teacher, self.hint, x)
        return hint_loss(model.regressed, hint_target(target, self.size))


def lower_parameters(student: nn.Module, guided: str, input_shape) -> list[nn.Parameter]:
    """The parameters of the modules that run before the forward pass reaches ``guided``."""
    names = [n for n, _ in student.named_modules() if n]
    was = student.training
    student.eval()
    with torch.no_grad():
        _, seen = run_until(student, guided, torch.zeros(2, *input_shape), record=tuple(names))
    student.train(was)
    return [p for n in names if n in seen
            for p in student.get_submodule(n).parameters(recurse=False)]


@torch.no_grad()
def hint_error(student, teacher, regressor, guided: str, hint: str, data,
               batch_size: int = 500) -> float:
    """Mean hint loss of the student's regressed guided layer on ``data`` (eval mode)."""
    part = GuidedPart(student, guided, regressor, 1).eval()
    _, _, size = regressor_geometry(*_sizes(student, teacher, guided, hint, data.shape))
    total, seen = 0.0, 0
    for x, _ in data.loader(batch_size):
        part(x)
        target, _ = run_until(teacher.eval(), hint, x)
        total += hint_loss(part.regressed, hint_target(target, size)).item() * len(x)
        seen += len(x)
    return total / seen


def _sizes(student, teacher, guided, hint, input_shape):
    return (_map_shapes(student, [guided], input_shape)[guided][1][-2:],
            _map_shapes(teacher, [hint], input_shape)[hint][1][-2:])


@dataclass
class FitNets(MapDistillation):
    """A thin deep student taught by hints (stage 1), then by knowledge distillation."""
    id = "distill.fitnets"
    reference = "Romero et al. 2015, FitNets: Hints for Thin Deep Nets (ICLR 2015)"
    requires = "a convolutional teacher (the hint is one of its feature maps)"
    sliders = {"width": (2, 32, 2), "depth": (1, 6, 1), "hint_epochs": (0, 10, 1),
               "temperature": (1.0, 20.0, 1.0), "kd_weight": (0.0, 1.0, 0.1)}
    smoke = {"epochs": 1, "hint_epochs": 1, "width": 4, "depth": 1}

    student: str = "thin"
    width: int = 8
    depth: int = 3
    # The task epochs of the FitNets bench, whose three students set ours beside Romero et
    # al.'s MNIST figures: the survey row then shows the compared setting.
    epochs: int = 4
    hint_layer: str | None = knob(None, Optional(Name()))     # the teacher's
    guided_layer: str | None = knob(None, Optional(Name()))   # the student's
    hint_epochs: int = knob(2, Int(0, 1000))
    temperature: float = knob(4.0, Real(1.0, 100.0))
    kd_weight: float = knob(0.5, Real(0.0, 1.0))
    teacher_maps = "hint_layer"
    student_maps = "guided_layer"

    def layers(self, student, teacher, input_shape) -> tuple[str, str]:
        """(hint, guided): the named ones, checked, or the two networks' middle stages."""
        if self.hint_layer is not None:
            _check_maps(self, "hint_layer", teacher, [self.hint_layer], input_shape)
        if self.guided_layer is not None:
            _check_maps(self, "guided_layer", student, [self.guided_layer], input_shape)
        elif not feature_map_layers(student, input_shape):
            raise ValueError(f"FitNets.student={self.student!r} has no feature map to guide: "
                             "use student='thin' or 'resnet'")
        return (self.hint_layer or middle_stage(teacher, input_shape),
                self.guided_layer or middle_stage(student, input_shape))

    def regressor(self, student, teacher, input_shape, hint: str, guided: str) -> nn.Conv2d:
        """A fresh regressor (seeded) from the guided layer's map onto the hint's."""
        s_shape = _map_shapes(student, [guided], input_shape)[guided][1]
        t_shape = _map_shapes(teacher, [hint], input_shape)[hint][1]
        with seeded(self.seed + 1):
            return make_regressor(s_shape, t_shape)

    def train_hints(self, student, teacher, data, regressor, hint: str, guided: str):
        """Stage 1: the lower layers and the regressor regress the hint (``self.fit``)."""
        shape = data.shape
        _, _, size = regressor_geometry(*_sizes(student, teacher, guided, hint, shape))
        part = GuidedPart(student, guided, regressor, classes_of(teacher, shape))
        params = lower_parameters(student, guided, shape) + list(regressor.parameters())
        return self.fit(part, data, hooks=[HintLoss(teacher, hint, size)],
                        optimizer=_sgd(self, params, self.lr), epochs=self.hint_epochs)

    def teach(self, student, teacher, data):
        if self.hint_epochs > 0:
            hint, guided = self.layers(student, teacher, data.shape)
            regressor = self.regressor(student, teacher, data.shape, hint, guided)
            self.train_hints(student, teacher, data, regressor, hint, guided)
        hooks = [TeacherLoss(teacher, self.temperature, self.kd_weight)] if self.kd_weight else []
        self.fit(student, data, hooks=hooks)


# ---------------------------------------------------------------- FSP


class FSPLoss(Hook):
    """Replaces the loss by the FSP loss between teacher and student stages; the student's
    stage inputs and outputs are read from ``store`` (filled by forward hooks)."""

    def __init__(self, teacher, teacher_stages, student_stages, store, projections):
        self.teacher, self.t_stages, self.s_stages = teacher, teacher_stages, student_stages
        self.store, self.projections = store, projections

    def loss(self, model, x, y, logits, loss):
        with torch.no_grad():
            _, seen = run_until(self.teacher, self.t_stages[-1], x, record=self.t_stages)
            wanted = [stage_fsp(*seen[n]) for n in self.t_stages]
        got = [stage_fsp(p_in(self.store[n][0]), p_out(self.store[n][1]))
               for n, (p_in, p_out) in zip(self.s_stages, self.projections)]
        return fsp_loss(wanted, got)


def fsp_matrices(model: nn.Module, stages, x: torch.Tensor, projections=None):
    """The FSP matrix of each named stage on ``x`` (model in its current mode)."""
    _, seen = run_until(model, stages[-1], x, record=tuple(stages))
    projections = projections or [(nn.Identity(), nn.Identity())] * len(stages)
    return [stage_fsp(p_in(seen[n][0]), p_out(seen[n][1]))
            for n, (p_in, p_out) in zip(stages, projections)]


def _projection(c_student: int, c_teacher: int) -> nn.Module:
    if c_student == c_teacher:
        return nn.Identity()
    return nn.Conv2d(c_student, c_teacher, 1, bias=False)


@dataclass
class FSP(MapDistillation):
    """FSP matrices of the teacher's stages taught to the student (stage 1), then the task."""
    id = "distill.fsp"
    reference = ("Yim et al. 2017, A Gift from Knowledge Distillation: Fast Optimization, "
                 "Network Minimization and Transfer Learning (CVPR 2017)")
    requires = "a convolutional teacher (FSP matrices are taken between its feature maps)"
    sliders = {"width": (4, 32, 4), "depth": (1, 5, 1), "fsp_epochs": (0, 10, 1)}
    smoke = {"epochs": 1, "fsp_epochs": 1, "width": 8}

    width: int = 16
    depth: int = 1
    epochs: int = 5         # the task epochs of the FSP bench (its compared setting)
    teacher_stages: tuple | None = knob(None, Optional(Seq(Name(), 1, 16)))
    student_stages: tuple | None = knob(None, Optional(Seq(Name(), 1, 16)))
    fsp_epochs: int = knob(2, Int(0, 1000))
    # The FSP loss is of fourth order in the activations: the task's step size diverges on it.
    fsp_lr: float = knob(0.001, Real(1e-9, 10.0))
    teacher_maps = "teacher_stages"
    student_maps = "student_stages"

    def make_student(self, teacher, data):
        kind = self.student
        if kind == "auto":      # the paper's students keep the teacher's kind, fewer layers
            kind = "resnet" if data.shape[0] == 3 else "thin"
        with seeded(self.seed):
            student = student_for(self, kind, data.shape, classes_of(teacher, data.shape))
        return student

    def stages(self, student, teacher, input_shape) -> tuple[list[str], list[str]]:
        """The matched stages (teacher's, student's): the named ones, checked and taken in the
        order of the forward pass, or the deepest common number of each network's stages."""
        t = list(self.teacher_stages or stage_layers(teacher, input_shape))
        s = list(self.student_stages or stage_layers(student, input_shape))
        if not s:
            raise ValueError(f"FSP.student={self.student!r} has no feature map to match: "
                             "use student='thin' or 'resnet'")
        _check_maps(self, "teacher_stages", teacher, t, input_shape)
        _check_maps(self, "student_stages", student, s, input_shape)
        t, s = _in_forward_order(teacher, t, input_shape), _in_forward_order(student, s,
                                                                               input_shape)
        if self.teacher_stages and self.student_stages and len(t) != len(s):
            raise ValueError(f"FSP.teacher_stages has {len(t)} names and student_stages "
                             f"{len(s)}: each teacher stage is matched with one student stage")
        k = min(len(t), len(s))
        return t[len(t) - k:], s[len(s) - k:]

    def projections(self, student, teacher, input_shape, t_stages, s_stages) -> nn.ModuleList:
        """For each matched stage, (input, output) projections of the student's maps onto the
        teacher's channel counts (identity where they are equal); seeded."""
        t_shapes = _map_shapes(teacher, t_stages, input_shape)
        s_shapes = _map_shapes(student, s_stages, input_shape)
        with seeded(self.seed + 1):
            return nn.ModuleList(nn.ModuleList(
                [_projection(s_shapes[s][k][1], t_shapes[t][k][1]) for k in (0, 1)])
                for t, s in zip(t_stages, s_stages))

    def train_fsp(self, student, teacher, data, t_stages, s_stages, projections):
        """Stage 1: the student (and any projection) minimizes the FSP loss (``self.fit``)."""
        store = {}

        def keep(module, args, out, name):
            store[name] = (args[0], out)

        hook = FSPLoss(teacher, t_stages, s_stages, store, projections)
        params = [p for p in student.parameters()] + list(projections.parameters())
        with hooked(student, {n: keep for n in s_stages}, eval_mode=False):
            return self.fit(student, data, hooks=[hook], epochs=self.fsp_epochs,
                            optimizer=_sgd(self, params, self.fsp_lr), lr=self.fsp_lr)

    def teach(self, student, teacher, data):
        if self.fsp_epochs > 0:
            t_stages, s_stages = self.stages(student, teacher, data.shape)
            projections = self.projections(student, teacher, data.shape, t_stages, s_stages)
            self.train_fsp(student, teacher, data, t_stages, s_stages, projections)
        self.fit(student, data)


METHODS = (FitNets, FSP)
