"""The networks of the zoo; ``build(name)`` makes one by its zoo name."""
from .cifar import ResNet20, VGGSmall
from .lenet import LeNet5, LeNet300

ARCHITECTURES = {
    "lenet300": (LeNet300, "mnist"),
    "lenet5": (LeNet5, "mnist"),
    "vgg_small": (VGGSmall, "cifar10"),
    "resnet20": (ResNet20, "cifar10"),
}


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


__all__ = ["ARCHITECTURES", "name_of", "LeNet300", "LeNet5", "ResNet20", "VGGSmall", "build"]
