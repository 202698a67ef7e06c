"""Section F, compact architectures, as methods: densify the network instead of cutting it.

The other families take a trained network and make it smaller. A compact architecture
replaces it: ``arch.mobilenet.apply(model, data)`` returns a MobileNet for the task ``model``
solves (CIFAR-10 images in, ten class scores out), and the input network at most teaches it.
So every ``arch.*`` id is a method of the same shape as the rest of ``METHODS``, and the
survey, the benches and a pipeline can set it beside pruning or quantization of the same
network.

Each method's knobs are its network's constructor knobs (width, resolution, expansion ratio,
squeeze ratio, groups ...), plus the training knobs. Two ways to get a network:

- ``epochs=0`` (the default): the zoo's trained network, made by
  ``python -m workbench zoo train NAME``. Only the zoo's own knob values have a checkpoint;
  other values are refused with a message saying to train (``epochs`` > 0), because an
  untrained network returned silently would look like a result.
- ``epochs`` > 0: a new network at the chosen knobs, trained on ``data`` with the zoo's
  CIFAR-10 recipe family (SGD with Nesterov momentum, one-cycle schedule, crop and flip).
  With ``kd_teacher="input"`` the network given to ``apply`` teaches it (Hinton's soft
  targets), which is how a compact network usually inherits a bigger one's accuracy.

The networks themselves, and what each adapts from its ImageNet design for 32 x 32 images,
are in ``workbench/models/``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from ..method import Int, Real, Seq, Tags, TrainingMethod, knob
from ..models import ARCHITECTURES, build
from ..train import seeded

CIFAR_SHAPE = (3, 32, 32)
CLASSES = 10
# Far above every zoo network (room to widen one), far below what fills the memory.
MAX_PARAMS = 20_000_000


def zoo_defaults(network: str) -> dict:
    """The constructor's default knobs of a zoo network: those its checkpoint was trained at."""
    signature = inspect.signature(ARCHITECTURES[network][0])
    return {name: p.default for name, p in signature.parameters.items()
            if p.default is not inspect.Parameter.empty}


def classes_of(model: nn.Module) -> int | None:
    """How many class scores ``model`` gives for a blank CIFAR image (None if it cannot take
    one)."""
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *CIFAR_SHAPE))
    except RuntimeError:
        return None
    finally:
        model.train(was_training)
    return out.shape[-1] if out.dim() == 2 else None


@dataclass
class CompactNetwork(TrainingMethod):
    """A compact network for the input's CIFAR-10 task: the zoo's (``epochs=0``) or a new one
    trained at the chosen knobs (see the module docstring)."""
    network: ClassVar[str] = ""                  # the zoo name of the architecture
    knobs: ClassVar[tuple[str, ...]] = ()        # fields passed to its constructor
    requires: ClassVar[str] = "a CIFAR-10 classifier (3 x 32 x 32 images, 10 classes)"
    effects: ClassVar[tuple[str, ...]] = ("smaller_module", "fewer_macs", "different_outputs")

    epochs: int = 0
    lr: float = 0.1
    weight_decay: float = 5e-4

    def tags(self) -> Tags:
        return replace(super().tags(), needs_data=self.epochs > 0)

    def supports(self, model: nn.Module) -> bool:
        return tuple(getattr(model, "input_shape", ())) == CIFAR_SHAPE \
            and classes_of(model) == CLASSES

    def config(self) -> dict:
        """The constructor arguments of the network these knobs describe."""
        return {name: getattr(self, name) for name in self.knobs}

    def at_zoo_defaults(self) -> bool:
        defaults = zoo_defaults(self.network)
        return all(_same(value, defaults[name]) for name, value in self.config().items())

    def check_model(self, model: nn.Module) -> None:
        if self.epochs == 0 and not self.at_zoo_defaults():
            changed = {k: v for k, v in self.config().items()
                       if not _same(v, zoo_defaults(self.network)[k])}
            raise ValueError(
                f"{type(self).__name__}.epochs=0: only the zoo's knobs {self.zoo_knobs()} have a "
                f"trained checkpoint; {changed} need training: allowed is epochs > 0 (and the "
                f"data) for these knobs")

    def validate(self) -> None:
        # rules between knobs that only the network knows (SqueezeNet's distinct pooling
        # places, Inception's odd n ...), said of this method's own field; and a size limit,
        # since knobs that are each in range can together describe a network of billions of
        # weights. A trial build on the meta device: shapes only, nothing allocated.
        try:
            with torch.device("meta"):
                params = sum(p.numel() for p in build(self.network, **self.config()).parameters())
        except ValueError as err:
            raise ValueError(self._as_own(str(err))) from None
        if params > MAX_PARAMS:
            knobs = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
            first = self.knobs[0]
            raise ValueError(f"{type(self).__name__}.{first}={getattr(self, first)!r}: "
                             f"allowed is knobs whose network has at most {MAX_PARAMS:,} "
                             f"parameters ({knobs} give {params:,})")

    def _as_own(self, message: str) -> str:
        network = ARCHITECTURES[self.network][0].__name__
        message = message.removeprefix(f"{network}.")
        if any(message.startswith(f"{name}=") for name in self.knobs):
            return f"{type(self).__name__}.{message}"
        return f"{type(self).__name__}: {message}"

    def zoo_knobs(self) -> dict:
        defaults = zoo_defaults(self.network)
        return {name: defaults[name] for name in self.knobs}

    def checkpoints(self) -> tuple[str, ...]:
        return (self.network,) if self.epochs == 0 else super().checkpoints()

    def unavailable(self) -> str | None:
        from ..zoo import manifest
        if self.epochs == 0 and self.network not in manifest():
            return (f"the zoo's {self.network} is not trained yet: python -m workbench zoo "
                    f"train {self.network}")
        return None

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        if self.epochs == 0:
            from ..zoo import pretrained
            return pretrained(self.network)
        with seeded(self.seed):
            network = build(self.network, **self.config())
        self.fit(network, data, augment=True)
        return network


def _same(a, b) -> bool:
    # knobs normalize lists to tuples; constructors take either
    as_tuple = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v
    return as_tuple(a) == as_tuple(b)


WIDTH = Real(0.0625, 4.0)


@dataclass
class MobileNetV1(CompactNetwork):
    """Depthwise separable convolutions: a 3x3 filter per channel, then a 1x1 mix of
    channels (Howard et al. 2017); width and resolution multipliers."""
    id: ClassVar[str] = "arch.mobilenet"
    reference: ClassVar[str] = "Howard et al. 2017, MobileNets"
    network: ClassVar[str] = "mobilenet"
    knobs: ClassVar[tuple[str, ...]] = ("width", "resolution")
    sliders: ClassVar[dict] = {"width": (0.25, 1.0, 0.25), "resolution": (0.5, 1.0, 0.25)}
    smoke: ClassVar[dict] = {"epochs": 1, "width": 0.125}
    width: float = knob(0.5, WIDTH)
    resolution: float = knob(1.0, Real(0.25, 1.0))


@dataclass
class MobileNetV2Method(CompactNetwork):
    """Inverted residuals with linear bottlenecks: expand with 1x1, filter depthwise,
    project back without an activation (Sandler et al. 2018); width and expansion ratio."""
    id: ClassVar[str] = "arch.mobilenet_v2"
    reference: ClassVar[str] = "Sandler et al. 2018, MobileNetV2"
    network: ClassVar[str] = "mobilenet_v2"
    knobs: ClassVar[tuple[str, ...]] = ("width", "expansion", "last_channels")
    sliders: ClassVar[dict] = {"width": (0.25, 1.0, 0.25), "expansion": (1, 6, 1)}
    smoke: ClassVar[dict] = {"epochs": 1, "width": 0.125, "expansion": 2, "last_channels": 64}
    width: float = knob(0.5, WIDTH)
    expansion: float = knob(6, Real(1, 8))
    last_channels: int = knob(320, Int(8, 2048))


@dataclass
class ShuffleNetV2Method(CompactNetwork):
    """Channel split, two branches and a channel shuffle, designed by measured speed rather
    than by MACs (Ma et al. 2018); width multiplier."""
    id: ClassVar[str] = "arch.shufflenet_v2"
    reference: ClassVar[str] = "Ma et al. 2018, ShuffleNet V2"
    network: ClassVar[str] = "shufflenet_v2"
    knobs: ClassVar[tuple[str, ...]] = ("width", "last_channels")
    sliders: ClassVar[dict] = {"width": (0.25, 1.0, 0.25)}
    smoke: ClassVar[dict] = {"epochs": 1, "width": 0.25, "last_channels": 64}
    width: float = knob(0.5, WIDTH)
    last_channels: int = knob(512, Int(8, 2048))


@dataclass
class SqueezeNetMethod(CompactNetwork):
    """Fire modules: squeeze with 1x1 filters, expand with a mix of 1x1 and 3x3 (Iandola
    et al. 2016); squeeze ratio, share of 3x3 filters and where the poolings sit (late
    downsampling keeps large maps for more layers)."""
    id: ClassVar[str] = "arch.squeezenet"
    reference: ClassVar[str] = "Iandola et al. 2016, SqueezeNet"
    network: ClassVar[str] = "squeezenet"
    knobs: ClassVar[tuple[str, ...]] = ("base_e", "incr_e", "squeeze_ratio", "pct_3x3",
                                        "pool_after")
    sliders: ClassVar[dict] = {"squeeze_ratio": (0.125, 1.0, 0.125), "pct_3x3": (0.0, 1.0, 0.25)}
    smoke: ClassVar[dict] = {"epochs": 1, "base_e": 16, "incr_e": 16}
    base_e: int = knob(64, Int(1, 1024))
    incr_e: int = knob(64, Int(0, 1024))
    squeeze_ratio: float = knob(0.125, Real(0.01, 1.0))
    pct_3x3: float = knob(0.5, Real(0.0, 1.0))
    pool_after: tuple = knob((1, 4, 8), Seq(Int(1, 9), 1))


@dataclass
class NiNMethod(CompactNetwork):
    """Network-in-Network: 1x1 convolutions after every convolution and global average
    pooling instead of a fully connected head (Lin et al. 2013); width and dropout."""
    id: ClassVar[str] = "arch.nin"
    reference: ClassVar[str] = "Lin et al. 2013, Network In Network"
    network: ClassVar[str] = "nin"
    knobs: ClassVar[tuple[str, ...]] = ("width", "dropout")
    sliders: ClassVar[dict] = {"width": (0.125, 1.0, 0.125)}
    smoke: ClassVar[dict] = {"epochs": 1, "width": 0.0625}
    width: float = knob(0.25, WIDTH)
    dropout: float = knob(0.0, Real(0.0, 0.9))


@dataclass
class ShuffleNetV1(CompactNetwork):
    """Grouped 1x1 convolutions, with a channel shuffle so that the next group sees every
    group's output (Zhang et al. 2018); number of groups and width."""
    id: ClassVar[str] = "arch.shufflenet"
    reference: ClassVar[str] = "Zhang et al. 2018, ShuffleNet"
    network: ClassVar[str] = "shufflenet"
    knobs: ClassVar[tuple[str, ...]] = ("groups", "width", "repeats")
    sliders: ClassVar[dict] = {"groups": (1, 8, 1), "width": (0.25, 1.0, 0.25)}
    smoke: ClassVar[dict] = {"epochs": 1, "groups": 2, "repeats": (1, 1, 1)}
    groups: int = knob(3, Int(1, 8))
    width: float = knob(0.5, WIDTH)
    repeats: tuple = knob((2, 4, 2), Seq(Int(1, 16), 3, 3))


@dataclass
class ResNeXtMethod(CompactNetwork):
    """Residual blocks whose 3x3 convolution is split into ``cardinality`` parallel paths
    (a grouped convolution), more paths instead of wider ones (Xie et al. 2017)."""
    id: ClassVar[str] = "arch.resnext"
    reference: ClassVar[str] = "Xie et al. 2017, ResNeXt"
    network: ClassVar[str] = "resnext"
    knobs: ClassVar[tuple[str, ...]] = ("cardinality", "group_width", "width", "blocks")
    sliders: ClassVar[dict] = {"cardinality": (1, 16, 1), "group_width": (2, 16, 2)}
    smoke: ClassVar[dict] = {"epochs": 1, "cardinality": 2, "width": 16, "blocks": 1}
    cardinality: int = knob(8, Int(1, 64))
    group_width: int = knob(4, Int(1, 64))
    width: int = knob(48, Int(8, 1024))
    blocks: int = knob(2, Int(1, 16))


@dataclass
class DarkNetMethod(CompactNetwork):
    """A plain stack of 3x3 convolutions with 1x1 bottlenecks between them, no shortcuts
    (Redmon and Farhadi 2017, DarkNet-19); width."""
    id: ClassVar[str] = "arch.darknet"
    reference: ClassVar[str] = "Redmon & Farhadi 2017, YOLO9000 (DarkNet-19)"
    network: ClassVar[str] = "darknet"
    knobs: ClassVar[tuple[str, ...]] = ("width",)
    sliders: ClassVar[dict] = {"width": (0.125, 1.0, 0.125)}
    smoke: ClassVar[dict] = {"epochs": 1, "width": 0.0625}
    width: float = knob(0.25, WIDTH)


@dataclass
class InceptionMethod(CompactNetwork):
    """Inception blocks: parallel branches of different receptive fields, the larger kernels
    factorized into 1xn then nx1 (Szegedy et al. 2016); width and n."""
    id: ClassVar[str] = "arch.inception"
    reference: ClassVar[str] = "Szegedy et al. 2015-2017, Inception v1-v4"
    network: ClassVar[str] = "inception"
    knobs: ClassVar[tuple[str, ...]] = ("width", "n", "blocks")
    sliders: ClassVar[dict] = {"width": (0.1, 0.5, 0.05)}
    smoke: ClassVar[dict] = {"epochs": 1, "width": 0.1}
    width: float = knob(0.2, WIDTH)
    n: int = knob(3, Int(1, 7))
    blocks: tuple = knob((1, 1, 1), Seq(Int(1, 8), 3, 3))


@dataclass
class XceptionMethod(CompactNetwork):
    """Depthwise separable convolutions in residual blocks: Inception taken to one branch per
    channel (Chollet 2017); width and middle-flow depth."""
    id: ClassVar[str] = "arch.xception"
    reference: ClassVar[str] = "Chollet 2017, Xception"
    network: ClassVar[str] = "xception"
    knobs: ClassVar[tuple[str, ...]] = ("width", "middle_blocks")
    sliders: ClassVar[dict] = {"width": (0.0625, 0.5, 0.0625)}
    smoke: ClassVar[dict] = {"epochs": 1, "width": 0.0625, "middle_blocks": 1}
    width: float = knob(0.125, WIDTH)
    middle_blocks: int = knob(3, Int(1, 8))


@dataclass
class EffNetMethod(CompactNetwork):
    """A 3x3 depthwise filter split into 1x3 and 3x1 depthwise passes with pooling between
    (Freeman et al. 2018); width and blocks per stage."""
    id: ClassVar[str] = "arch.effnet"
    reference: ClassVar[str] = "Freeman et al. 2018, EffNet"
    network: ClassVar[str] = "effnet"
    knobs: ClassVar[tuple[str, ...]] = ("width", "blocks")
    sliders: ClassVar[dict] = {"width": (0.25, 1.5, 0.25)}
    smoke: ClassVar[dict] = {"epochs": 1, "width": 0.25, "blocks": 1}
    width: float = knob(0.75, WIDTH)
    blocks: int = knob(2, Int(1, 8))


@dataclass
class SepNetMethod(CompactNetwork):
    """Pattern residual blocks: a group-wise kxk convolution plus a 1x1 one, summed (Li et
    al. 2017, SEP-Nets); groups and width."""
    id: ClassVar[str] = "arch.sepnet"
    reference: ClassVar[str] = "Li et al. 2017, SEP-Nets"
    network: ClassVar[str] = "sepnet"
    knobs: ClassVar[tuple[str, ...]] = ("groups", "width", "blocks")
    sliders: ClassVar[dict] = {"groups": (1, 8, 1)}
    smoke: ClassVar[dict] = {"epochs": 1, "width": 16, "blocks": 1}
    groups: int = knob(4, Int(1, 64))
    width: int = knob(48, Int(8, 1024))
    blocks: int = knob(2, Int(1, 16))


@dataclass
class EfficientNetMethod(CompactNetwork):
    """Compound scaling: depth, width and resolution grown together from one coefficient
    phi by the paper's alpha, beta, gamma rule (Tan & Le 2019), on MBConv blocks."""
    id: ClassVar[str] = "arch.efficientnet"
    reference: ClassVar[str] = "Tan & Le 2019, EfficientNet"
    network: ClassVar[str] = "efficientnet"
    knobs: ClassVar[tuple[str, ...]] = ("phi", "width", "depth", "last_channels")
    sliders: ClassVar[dict] = {"phi": (0.0, 3.0, 0.5)}
    smoke: ClassVar[dict] = {"epochs": 1, "width": 0.125, "depth": 0.25, "last_channels": 64}
    phi: float = knob(0.0, Real(0.0, 8.0))
    width: float = knob(0.25, WIDTH)
    depth: float = knob(0.5, Real(0.0625, 4.0))
    last_channels: int = knob(320, Int(8, 2048))


METHODS = (MobileNetV1, MobileNetV2Method, ShuffleNetV2Method, SqueezeNetMethod, NiNMethod,
           ShuffleNetV1, ResNeXtMethod, DarkNetMethod, InceptionMethod, XceptionMethod,
           EffNetMethod, SepNetMethod, EfficientNetMethod)
