"""Distillation from what the teacher outputs: its logits (mimic learning), its softened
class probabilities (knowledge distillation) and its top hidden neurons (neuron selection).

``distill.mimic`` (Bucilua et al. 2006; Ba & Caruana 2014): the student regresses the
teacher's logits with ``losses.mimic_loss`` (half the squared error, summed over classes).
No label is read by the loss, so ``data`` may hold unlabeled images with any labels (only
the progress line of ``train.fit`` compares them with the student's answers). ``transfer``
says which images the student sees: ``"none"``, the training images; ``"munge"``, those
plus ``copies`` synthetic images per training image made by MUNGE (Bucilua et al.'s
transfer-set generator): each image ``e`` and its nearest neighbour ``e'`` (Euclidean, over
pixels) swap each pixel with probability ``swap``, a swapped pixel being drawn from a normal
centred on the other image's value with standard deviation ``|e - e'| / spread``. Nearest
neighbours are searched within random chunks of ``NEIGHBOUR_CHUNK`` images, not the whole
set (our shortcut: the exact search is quadratic in the set). A transfer image keeps the
label of the image it was made from; the teacher labels it, through its logits.

``distill.kd`` (Hinton et al. 2015): ``losses.TeacherLoss``, i.e. ``(1 - weight)`` times the
hard-label cross entropy plus ``weight`` times the KL divergence between the teacher's and
the student's distributions at temperature T, multiplied by T^2 (so the soft term's gradient
keeps its size whatever T; see ``losses``). ``weight`` = 0 is plain training.

``distill.neurons`` (Luo et al. 2016): the student is taught a selected subset of the
teacher's high-level neurons, added to the task loss: ``CE + weight * mean squared error``
between the selected neurons and a map of the student's own penultimate layer. The teacher's
neurons are the inputs of a ``Linear`` layer (``layer``; by default the classifier, the
``Linear`` whose output is the network's output, found by one probe). The student's are the
inputs of its classifier. When the student has as many as are selected they are regressed
directly; otherwise through a learned linear map, trained with the student (``optimizer=``
of ``fit``) and dropped afterwards. The selection criterion is Fisher's ratio of each
neuron's between-class to within-class variance on ``selection_images`` training images
(``fisher_ratio``): the neurons that separate the classes best, as Luo et al. keep the
neurons that best discriminate face attributes. ``keep`` is the share kept (1.0: all of them,
the comparison); ``select="random"`` draws as many at random, a control. Adapted: Luo et al.
train the student by the regression alone (its features then serve face verification), and
their mean-field selection also discourages correlated neurons; here the students classify,
so the labels' cross entropy is kept beside the regression, and the decorrelation term is not
done.
Images with three channels are trained with random crops and flips, the others plain.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset
from ..hooks import hooked, layer_io
from ..method import Choice, Int, Name, Optional, Real, check_layer_names, knob
from ..train import Hook
from .base import Distillation
from .losses import TeacherLoss, mimic_loss

NEIGHBOUR_CHUNK = 1024

# ------------------------------------------------------------------ functions on tensors


def nearest_neighbours(x: torch.Tensor) -> torch.Tensor:
    """Index of each row's nearest other row of ``x`` (N, D), Euclidean."""
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    return d.argmin(dim=1)


def munge(images: torch.Tensor, swap: float, spread: float, seed: int = 0,
          chunk: int = NEIGHBOUR_CHUNK) -> torch.Tensor:
    """One MUNGE copy of uint8 ``images`` (N, C, H, W): each image's pixels swapped with its
    nearest neighbour's (searched within random chunks of ``chunk``) with probability
    ``swap``, each swapped value drawn from N(other, |e - e'| / spread), rounded and clipped
    to 0..255."""
    g = torch.Generator().manual_seed(seed)
    n = len(images)
    flat = images.reshape(n, -1).float()
    partner = torch.empty(n, dtype=torch.long)
    order = torch.randperm(n, generator=g)
    for start in range(0, n, chunk):
        index = order[start:start + chunk]
        partner[index] = index[nearest_neighbours(flat[index])] if len(index) > 1 else index
    other = flat[partner]
    sd = (flat - other).abs() / spread
    drawn = other + sd * torch.randn(flat.shape, generator=g)
    swapped = torch.rand(flat.shape, generator=g) < swap
    out = torch.where(swapped, drawn, flat).round().clamp(0, 255)
    return out.to(torch.uint8).reshape(images.shape)


def transfer_set(data: Dataset, copies: int, swap: float, spread: float,
                 seed: int = 0) -> Dataset:
    """``data`` followed by ``copies`` MUNGE copies of it (labels of the source images)."""
    made = [munge(data.images, swap, spread, seed=seed * 1000 + c) for c in range(copies)]
    return Dataset(data.name, "transfer", torch.cat([data.images, *made]),
                   data.labels.repeat(copies + 1))


def fisher_ratio(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per neuron (column of ``features``, N x D): the variance of the class means about the
    overall mean (weighted by class size) over the mean within-class variance. A neuron that
    never varies scores 0."""
    features = features.double()
    mean = features.mean(0)
    between = torch.zeros_like(mean)
    within = torch.zeros_like(mean)
    for c in labels.unique():
        rows = features[labels == c]
        between += len(rows) * (rows.mean(0) - mean) ** 2
        within += ((rows - rows.mean(0)) ** 2).sum(0)
    ratio = between / within.clamp_min(1e-12)
    return torch.where(within > 1e-12, ratio, torch.zeros_like(ratio)).float()


def select_neurons(features: torch.Tensor, labels: torch.Tensor, keep: float,
                   how: str = "fisher", seed: int = 0) -> torch.Tensor:
    """Sorted indices of the ``round(keep * D)`` neurons (at least one) with the highest
    ``fisher_ratio`` (``how="fisher"``) or drawn at random (``"random"``)."""
    d = features.shape[1]
    k = max(1, round(keep * d))
    if how == "fisher":
        chosen = torch.argsort(fisher_ratio(features, labels), descending=True, stable=True)
    else:
        chosen = torch.randperm(d, generator=torch.Generator().manual_seed(seed))
    return chosen[:k].sort().values


@torch.no_grad()
def classifier_of(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """Name of the ``Linear`` layer whose output is the network's output (one probe); if
    none is, the last ``Linear`` that ran."""
    outputs = {}

    def record(module, inputs, output, name):
        outputs[name] = output

    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no Linear layer")
    with hooked(model, {n: record for n in names}):
        out = model(torch.zeros(2, *input_shape))
    for name in reversed(list(outputs)):
        if outputs[name] is out:
            return name
    return list(outputs)[-1]


# ------------------------------------------------------------------ hooks


class MimicLoss(Hook):
    """Replaces the loss by ``mimic_loss(student, teacher)``: the labels are not used."""

    def __init__(self, teacher: nn.Module):
        self.teacher = teacher

    def loss(self, model, x, y, logits, loss):
        with torch.no_grad():
            target = self.teacher(x)
        return mimic_loss(logits, target)


class NeuronLoss(Hook):
    """Adds ``weight * MSE(regressor(student features), teacher features[:, selected])``.

    The student's features (input of ``student_layer``) are caught by a forward hook that
    ``catching`` installs for the duration of training; the teacher's are read on the same
    batch. ``error(student, data)`` is the regression term alone, averaged over ``data``."""

    def __init__(self, teacher, teacher_layer, student_layer, selected, regressor, weight):
        self.teacher, self.teacher_layer = teacher, teacher_layer
        self.student_layer, self.selected = student_layer, selected
        self.regressor, self.weight = regressor, weight
        self.caught = None

    def catch(self, module, inputs, output, name):
        self.caught = inputs[0]

    def catching(self, student: nn.Module, eval_mode: bool = False):
        """Context: the student's features are caught on every forward pass."""
        return hooked(student, {self.student_layer: self.catch}, eval_mode=eval_mode)

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's selected neurons on the batch ``x``."""
        seen = {}
        with torch.no_grad(), hooked(self.teacher, {self.teacher_layer: lambda m, i, o, n:
                                                    seen.setdefault("x", i[0])}):
            self.teacher(x)
        return seen["x"][:, self.selected]

    def regression(self, x: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.regressor(self.caught), self.targets(x))

    def loss(self, model, x, y, logits, loss):
        return loss + self.weight * self.regression(x)

    @torch.no_grad()
    def error(self, student: nn.Module, data: Dataset, batch_size: int = 256) -> float:
        """The regression term alone, averaged over ``data`` (student in eval mode)."""
        total = 0.0
        with self.catching(student, eval_mode=True):
            for x, _ in data.loader(batch_size):
                student(x)
                total += self.regression(x).item() * len(x)
        return total / len(data)


# ------------------------------------------------------------------ methods


def _augment(data) -> bool:
    return data.shape[0] == 3


@dataclass
class Mimic(Distillation):
    """The student regresses the teacher's logits (L2), on the training images or those
    plus a MUNGE transfer set; labels are never read by the loss."""
    id = "distill.mimic"
    reference = ("Bucilua, Caruana & Niculescu-Mizil 2006, Model compression; "
                 "Ba & Caruana 2014, Do deep nets really need to be deep?")
    sliders = {"width": (8, 1024, 8), "epochs": (0, 20, 1)}
    smoke = {"epochs": 1, "width": 8}

    transfer: str = knob("none", Choice(("none", "munge")))
    copies: int = knob(1, Int(1, 20))            # MUNGE images per training image
    swap: float = knob(0.5, Real(0.0, 1.0))      # MUNGE's p
    spread: float = knob(5.0, Real(1e-3, 1e6))   # MUNGE's s: sd = |e - e'| / s
    # The loss's gradient is the logit error itself, tens of units for a confident teacher
    # (cross entropy's stays below 1): at the usual 0.01 the student diverges.
    lr: float = 0.001

    def images(self, data: Dataset) -> Dataset:
        """What the student is trained on."""
        if self.transfer == "none":
            return data
        return transfer_set(data, self.copies, self.swap, self.spread, seed=self.seed)

    def teach(self, student, teacher, data):
        images = self.images(data)
        self.fit(student, images, hooks=[MimicLoss(teacher)], augment=_augment(data))

    def settings(self):
        shown = super().settings()
        if self.transfer == "none":
            for name in ("copies", "swap", "spread"):
                shown.pop(name)
        return shown


@dataclass
class KD(Distillation):
    """Hinton et al.'s knowledge distillation: soft targets at temperature T (scaled by
    T^2), ``weight`` of them mixed with ``1 - weight`` of the hard-label loss."""
    id = "distill.kd"
    reference = "Hinton, Vinyals & Dean 2015, Distilling the knowledge in a neural network"
    sliders = {"temperature": (1.0, 20.0, 0.5), "weight": (0.0, 1.0, 0.05),
               "width": (8, 1024, 8)}
    smoke = {"epochs": 1, "width": 8}

    temperature: float = knob(4.0, Real(1.0, 100.0))
    weight: float = knob(0.9, Real(0.0, 1.0))    # the soft targets' share of the loss

    def teach(self, student, teacher, data):
        hook = TeacherLoss(teacher, self.temperature, self.weight)
        self.fit(student, data, hooks=[hook], augment=_augment(data))


@dataclass
class Neurons(Distillation):
    """The student's penultimate layer regresses the teacher's most class-discriminative
    high-level neurons (Fisher ratio; a share ``keep`` of them), beside the task loss."""
    id = "distill.neurons"
    reference = ("Luo, Zhu, Liu, Wang & Tang 2016, Face model compression by distilling "
                 "knowledge from neurons")
    requires = "a Linear layer (the classifier) whose inputs are the high-level neurons"
    sliders = {"keep": (0.05, 1.0, 0.05), "weight": (0.0, 10.0, 0.1), "width": (8, 1024, 8)}
    smoke = {"epochs": 1, "width": 8, "selection_images": 256}

    layer: str | None = knob(None, Optional(Name()))   # None: the teacher's classifier
    keep: float = knob(0.25, Real(1e-6, 1.0))          # share of the neurons taught
    select: str = knob("fisher", Choice(("fisher", "random")))
    weight: float = knob(1.0, Real(0.0, 1000.0))       # of the regression term
    selection_images: int = knob(2048, Int(10, 10**6))

    def supports(self, model):
        return any(isinstance(m, nn.Linear) for m in model.modules())

    def check_model(self, model):
        check_layer_names(self, "layer", model, kinds=(nn.Linear,))

    def teacher_layer(self, teacher: nn.Module, data) -> str:
        return self.layer or classifier_of(teacher, data.shape)

    def selection(self, teacher: nn.Module, data) -> torch.Tensor:
        """Indices of the teacher's neurons the student is taught."""
        name = self.teacher_layer(teacher, data)
        sample = data.subset(min(self.selection_images, len(data)), seed=self.seed)
        features = layer_io(teacher, sample, [name], images=len(sample))[name]["input"]
        return select_neurons(features.flatten(1), sample.labels, self.keep, self.select,
                              seed=self.seed)

    def neuron_loss(self, student, teacher, data) -> NeuronLoss:
        """The hook that teaches ``student`` (its regressor initialized with the seed)."""
        selected = self.selection(teacher, data)
        student_layer = classifier_of(student, data.shape)
        width = student.get_submodule(student_layer).in_features
        regressor = nn.Identity()
        if width != len(selected):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                regressor = nn.Linear(width, len(selected))
        return NeuronLoss(teacher, self.teacher_layer(teacher, data), student_layer, selected,
                          regressor, self.weight)

    def teach(self, student, teacher, data) -> NeuronLoss:
        """Trains ``student``; returns the hook (its regressor, for ``error``)."""
        hook = self.neuron_loss(student, teacher, data)
        recipe = self.recipe()
        params = [*student.parameters(), *hook.regressor.parameters()]
        optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                                    weight_decay=recipe.weight_decay,
                                    nesterov=recipe.nesterov)
        with hook.catching(student):
            self.fit(student, data, hooks=[hook], optimizer=optimizer, augment=_augment(data))
        return hook


METHODS = (Mimic, KD, Neurons)
