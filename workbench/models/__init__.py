"""The networks of the zoo; ``build(name)`` makes one by its zoo name."""
from .cifar import ResNet20, VGGSmall
from .lenet import LeNet5, LeNet300

ARCHITECTURES = {
    "lenet300": (LeNet300, "mnist"),
    "lenet5": (LeNet5, "mnist"),
    "vgg_small": (VGGSmall, "cifar10"),
    "resnet20": (ResNet20, "cifar10"),
}


# Modules that compression methods put inside a zoo network (a Winograd convolution, a
# factorized layer...). Each keeps its constructor arguments in ``self.config`` so the codec can
# rebuild it; it may define ``mac_counts(inputs, output) -> dict`` (params, nonzeros, macs,
# effective_macs per image) for measure.layer_table.
CUSTOM_MODULES: dict[str, type] = {}


def register_module(cls):
    """Class decorator: make a custom module known to the codec by its class name."""
    CUSTOM_MODULES[cls.__name__] = cls
    return cls


def custom_modules(model) -> list[tuple[str, object]]:
    """(path, module) of the outermost registered custom modules inside ``model``."""
    found = []
    for path, module in model.named_modules():
        if type(module).__name__ in CUSTOM_MODULES and not any(
                path.startswith(p + ".") for p, _ in found):
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


def build(name: str, **kwargs):
    """A freshly initialized network by zoo name (kwargs go to its constructor)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; allowed: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name][0](**kwargs)


__all__ = ["ARCHITECTURES", "CUSTOM_MODULES", "custom_modules", "name_of", "register_module",
           "replace_module", "LeNet300", "LeNet5", "ResNet20", "VGGSmall", "build"]
