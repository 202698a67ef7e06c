"""What every distillation method shares: the student it builds and the two-network shape
of ``compress``.

A distillation method is applied to a *teacher* (any network of the zoo, or one a user
trained) and returns a *student*: a new, smaller network trained with the teacher's help. The
student's kind, width and depth are knobs:

- ``"mlp"``: fully connected, ``depth`` hidden layers of ``width`` units (Hinton et al.'s
  MNIST students are 2 x 800); stored as a ``LeNet300`` with those hidden sizes, so it is
  MNIST-shaped (1 x 28 x 28) only.
- ``"thin"``: a thin, deep plain CNN (FitNets' kind of student): three stages of ``depth``
  3x3 convolutions with batch norm, ``width``, 2 ``width`` and 4 ``width`` channels, a 2x2 max
  pool between stages, global average pooling and one linear layer. It takes any input shape.
- ``"resnet"``: the CIFAR ResNet of the zoo at ``width`` (16 is ResNet-20's) with ``depth``
  blocks per stage (3 is ResNet-20's); 3-channel inputs only.
- ``"auto"``: "mlp" for MNIST-shaped data, "resnet" for other 3-channel images, "thin"
  otherwise.

``width=None`` takes the kind's own default (``DEFAULT_WIDTH``): Hinton et al.'s 800 units for
an MLP, 8 channels for the convolutional students (a ResNet of width 8 has half of ResNet-20's
channels in every layer, so about a quarter of its weights per layer).

The teacher must take the data's images: one that declares another ``input_shape``, or fails
on a blank image of the data's shape, is refused with a ``ValueError`` before any training.

``Distillation.compress(teacher, data)`` builds the student (``make_student``), freezes the
teacher and calls ``teach(student, teacher, data)``, which each method writes with
``self.fit`` and its hooks. ``apply`` gives the teacher a private copy, so the caller's network
is untouched, as with every method.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..method import Choice, Int, Optional, Tags, TrainingBase, knob
from ..models import LeNet300, ResNet20, register_module
from ..train import seeded
from .losses import frozen

KINDS = ("auto", "mlp", "thin", "resnet")
MNIST_SHAPE = (1, 28, 28)
DEFAULT_WIDTH = {"mlp": 800, "thin": 8, "resnet": 8}


@register_module
class ThinNet(nn.Module):
    """A plain thin-and-deep CNN: 3 stages of ``depth`` conv3x3-BN-ReLU, widths w, 2w, 4w,
    max pooling between stages, global average pooling, one linear layer. It would take any
    image size; ``size`` (in the config, so a decoded file keeps it) is the one it was built
    for, which ``input_shape`` tells measurements."""

    def __init__(self, in_channels: int = 3, width: int = 8, depth: int = 3,
                 num_classes: int = 10, size: int = 32):
        super().__init__()
        self.config = {"in_channels": in_channels, "width": width, "depth": depth,
                       "num_classes": num_classes, "size": size}
        self.input_shape = (in_channels, size, size)
        stages, c_in = [], in_channels
        for s, c_out in enumerate((width, 2 * width, 4 * width)):
            layers = [nn.MaxPool2d(2)] if s else []
            for _ in range(depth):
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                           nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
                c_in = c_out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(c_in, num_classes))

    def forward(self, x):
        return self.head(self.stages(x))


def student_for(method, kind: str, shape, classes: int) -> nn.Module:
    """``build_student`` with ``method``'s width and depth; an error names its field."""
    try:
        return build_student(kind, method.width, method.depth, shape, classes)
    except ValueError as err:
        raise ValueError(f"{type(method).__name__}.student={method.student!r}: {err}") from None


def build_student(kind: str, width: int | None, depth: int, input_shape: tuple[int, ...],
                  classes: int = 10) -> nn.Module:
    """A freshly initialized student of ``kind`` for inputs of ``input_shape`` (``width``
    None: the kind's default)."""
    if kind == "auto":
        kind = ("mlp" if tuple(input_shape) == MNIST_SHAPE
                else "resnet" if input_shape[0] == 3 else "thin")
    width = DEFAULT_WIDTH.get(kind) if width is None else width
    if kind == "mlp":
        if tuple(input_shape) != MNIST_SHAPE or classes != 10:
            raise ValueError(f"student='mlp' is MNIST-shaped (1, 28, 28) with 10 classes; the "
                             f"data is {tuple(input_shape)}: allowed is student='thin' or "
                             f"'resnet' here")
        return LeNet300(hidden=(width,) * depth)
    if kind == "thin":
        if input_shape[1] != input_shape[2]:
            raise ValueError(f"student='thin' takes square images; the data is "
                             f"{tuple(input_shape)}: allowed is student='mlp' or 'resnet' here")
        return ThinNet(input_shape[0], width, depth, classes, input_shape[1])
    if kind == "resnet":
        if input_shape[0] != 3:
            raise ValueError(f"student='resnet' takes 3-channel images; the data is "
                             f"{tuple(input_shape)}: allowed is student='thin' or 'mlp' here")
        return ResNet20(blocks_per_stage=depth, width=width, num_classes=classes)
    raise ValueError(f"student={kind!r}; allowed: {KINDS}")


def classes_of(teacher: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The number of outputs of ``teacher`` (one probe of a zero image); a ``ValueError`` if
    the teacher does not take images of ``input_shape``."""
    name, takes = type(teacher).__name__, getattr(teacher, "input_shape", None)
    if takes is not None and tuple(takes) != tuple(input_shape):
        raise ValueError(f"the teacher {name} takes images of shape {tuple(takes)}, not the "
                         f"data's {tuple(input_shape)}")
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            out = teacher(torch.zeros(1, *input_shape))
    except RuntimeError as error:
        raise ValueError(f"the teacher {name} cannot read the data's images of shape "
                         f"{tuple(input_shape)}: {error}") from error
    finally:
        teacher.train(was_training)
    return out.shape[-1]


@dataclass
class Distillation(TrainingBase):
    """A teacher in, a trained student out. Subclasses write ``teach``."""
    effects = ("smaller_module", "different_outputs")
    requires = "a network that maps images to class scores"

    student: str = knob("auto", Choice(KINDS))
    width: int | None = knob(None, Optional(Int(1, 4096)))     # None: DEFAULT_WIDTH
    depth: int = knob(2, Int(1, 32))
    epochs: int = 10

    def tags(self) -> Tags:     # the student's shape comes from the data, even untrained
        return replace(super().tags(), needs_data=True)

    def supports(self, model: nn.Module) -> bool:
        return any(p.dim() > 1 for p in model.parameters())

    def make_student(self, teacher: nn.Module, data) -> nn.Module:
        """The untrained student for ``data`` (its shape) and the teacher's classes; seeded,
        so the same settings start from the same weights."""
        shape = data.shape
        with seeded(self.seed):
            return student_for(self, self.student, shape, classes_of(teacher, shape))

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        teacher = frozen(model)
        student = self.make_student(teacher, data)
        self.teach(student, teacher, data)
        return student

    def teach(self, student: nn.Module, teacher: nn.Module, data) -> None:
        """Train ``student`` in place with the teacher's help (through ``self.fit``)."""
        raise NotImplementedError
