"""Benchmarks that print the figures behind an issue's speed and size targets.

``python -m workbench bench NAME`` runs ``rows(smoke)`` of module ``NAME`` in this package, or
of every module ``NAME_*`` (``bench pruning`` runs ``pruning_iterative``, ``pruning_dns`` ...).
Modules ``NAME_browser`` drive a real browser and run only when asked (``browser=True``,
``bench widgets --browser``), alone.
Each row holds the measured figure beside its target, so the table and the JSON say both.
"""
from __future__ import annotations

import importlib
import pkgutil


def available() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(__path__)]
    groups = {n.split("_")[0] for n in names if "_" in n}
    return sorted(set(names) | groups)


def run(target: str, smoke: bool = False, browser: bool = False) -> list[dict]:
    names = [m.name for m in pkgutil.iter_modules(__path__)]
    chosen = [n for n in names if (n == target or n.startswith(target + "_"))
              and n.endswith("_browser") == browser]
    if not chosen:
        if browser:
            raise ValueError(f"bench {target} --browser: no browser bench; allowed: "
                             + ", ".join(n.removesuffix("_browser") for n in names
                                         if n.endswith("_browser")))
        raise ValueError(f"unknown bench {target!r}; allowed: {', '.join(available())}")
    rows = []
    for name in sorted(chosen):
        rows += importlib.import_module(f"{__name__}.{name}").rows(smoke=smoke)
    return rows
