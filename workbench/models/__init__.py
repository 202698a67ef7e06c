"""The networks of the zoo (``build(name)`` makes one by its zoo name), the registry of
modules a file can rebuild, and attachments: state that travels with a network.

A file stores a network as its root class and constructor arguments (``config``), the
registered custom modules that methods put inside it, and its tensors. So any network whose
root class is registered with ``register_module`` can be stored, not only the zoo's.
"""
from __future__ import annotations

import json

from torch import nn

from .cifar import ResNet20, VGGSmall
from .efficient import EfficientNet
from .grouped import ResNeXt, ShuffleNet
from .inception import Inception
from .lenet import LeNet5, LeNet300
from .mobile import MobileNet, MobileNetV2
from .plain import DarkNet
from .separable import EffNet, SepNet, Xception
from .shuffle import ShuffleNetV2
from .squeeze import NiN, SqueezeNet

ARCHITECTURES = {
    "lenet300": (LeNet300, "mnist"),
    "lenet5": (LeNet5, "mnist"),
    "vgg_small": (VGGSmall, "cifar10"),
    "resnet20": (ResNet20, "cifar10"),
    # the compact architectures (catalogue F), trained by the same command
    "mobilenet_v2": (MobileNetV2, "cifar10"),
    "shufflenet_v2": (ShuffleNetV2, "cifar10"),
    "mobilenet": (MobileNet, "cifar10"),
    "squeezenet": (SqueezeNet, "cifar10"),
    "nin": (NiN, "cifar10"),
    "shufflenet": (ShuffleNet, "cifar10"),
    "resnext": (ResNeXt, "cifar10"),
    "darknet": (DarkNet, "cifar10"),
    "inception": (Inception, "cifar10"),
    "xception": (Xception, "cifar10"),
    "effnet": (EffNet, "cifar10"),
    "sepnet": (SepNet, "cifar10"),
    "efficientnet": (EfficientNet, "cifar10"),
}


# Modules the codec can rebuild by class name: networks of their own and the modules that
# compression methods put inside a network (a Winograd convolution, a factorized layer...).
# Each keeps its constructor arguments in ``self.config``; it may define
# ``mac_counts(inputs, output) -> dict`` (params, nonzeros, macs, effective_macs per image)
# for measure.layer_table.
CUSTOM_MODULES: dict[str, type] = {}


def register_module(cls):
    """Class decorator: make a module known to the codec by its class name."""
    CUSTOM_MODULES[cls.__name__] = cls
    return cls


for _cls, _ in ARCHITECTURES.values():
    register_module(_cls)


@register_module
class Attachment(nn.Module):
    """State that must travel with a network (its chosen encoding, run bit-widths ...): a
    JSON-able dict kept as the module's extra state. Being in the ``state_dict``, it survives
    ``copy.deepcopy``, ``load_state_dict`` and the file, where a plain attribute would not.
    No parameters, no forward: measurements and methods that walk the layers skip it."""

    def __init__(self, info: dict | None = None):
        super().__init__()
        self.info = _json_copy(info or {})

    def get_extra_state(self) -> dict:
        return _json_copy(self.info)

    def set_extra_state(self, state: dict) -> None:
        self.info = _json_copy(state)

    def extra_repr(self) -> str:
        return json.dumps(self.info)


def _json_copy(info: dict) -> dict:
    # a copy as the file will give it back (tuples become lists), checked once, here
    if not isinstance(info, dict):
        raise ValueError(f"an attachment holds a dict, not a {type(info).__name__}")
    try:
        return json.loads(json.dumps(info))
    except (TypeError, ValueError) as err:
        raise ValueError(f"an attachment must be JSON-able (the file stores it as JSON): "
                         f"{err}") from err


def attach(model: nn.Module, name: str, info: dict) -> None:
    """Keep ``info`` with ``model`` as the submodule ``model.<name>`` (replacing an earlier
    attachment of that name)."""
    current = model._modules.get(name)
    if (current is not None and not isinstance(current, Attachment)) \
            or (current is None and hasattr(model, name)):
        raise ValueError(f"{type(model).__name__}.{name} exists and is not an attachment; "
                         f"choose another name")
    setattr(model, name, Attachment(info).train(model.training))


def attached(model: nn.Module, name: str) -> dict | None:
    """The dict attached to ``model`` as ``name`` (a copy), or None."""
    module = model._modules.get(name)
    return _json_copy(module.info) if isinstance(module, Attachment) else None


def custom_modules(model) -> list[tuple[str, object]]:
    """(path, module) of the outermost registered custom modules inside ``model`` (not the
    root itself, not attachments)."""
    found = []
    for path, module in model.named_modules():
        if path and not isinstance(module, Attachment) \
                and type(module).__name__ in CUSTOM_MODULES \
                and not any(path.startswith(p + ".") for p, _ in found):
            found.append((path, module))
    return found


def replace_module(model, path: str, module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def name_of(model) -> str:
    """The zoo name of a network's architecture (the key of ARCHITECTURES)."""
    for name, (cls, _) in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not a zoo architecture; "
                     f"known: {sorted(ARCHITECTURES)}")


def architecture_of(model) -> str:
    """The name a file gives the network's root: its zoo name, else its registered class name.

    ValueError, saying what to do, when a file could not rebuild the network.
    """
    cls = type(model)
    for name, (zoo_cls, _) in ARCHITECTURES.items():
        if cls is zoo_cls:
            return name
    if CUSTOM_MODULES.get(cls.__name__) is not cls:
        raise ValueError(
            f"cannot store a {cls.__name__}: the class is not registered, so a file could not "
            f"rebuild it. Decorate it with @workbench.models.register_module and keep its "
            f"constructor arguments in self.config (a dict)")
    if not isinstance(getattr(model, "config", None), dict):
        raise ValueError(f"cannot store a {cls.__name__}: it has no self.config, the dict of "
                         f"constructor arguments a file needs to rebuild it")
    return cls.__name__


def build(name: str, **kwargs):
    """A freshly initialized network by zoo name or registered class name (kwargs go to its
    constructor)."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name][0](**kwargs)
    if name in CUSTOM_MODULES and CUSTOM_MODULES[name] is not Attachment:
        return CUSTOM_MODULES[name](**kwargs)
    raise ValueError(f"unknown model {name!r}; allowed: zoo names {sorted(ARCHITECTURES)} or "
                     f"registered modules {sorted(set(CUSTOM_MODULES) - {'Attachment'})}")


__all__ = ["ARCHITECTURES", "CUSTOM_MODULES", "Attachment", "architecture_of", "attach",
           "attached", "build", "custom_modules", "name_of", "register_module",
           "replace_module", "DarkNet", "EffNet", "EfficientNet", "Inception", "LeNet300",
           "LeNet5", "MobileNet", "MobileNetV2", "NiN", "ResNeXt", "ResNet20", "SepNet",
           "ShuffleNet", "ShuffleNetV2", "SqueezeNet", "VGGSmall", "Xception"]
