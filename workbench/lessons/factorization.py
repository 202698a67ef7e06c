"""Lesson 05: low rank (the rank widget with a layer's spectrum)."""
from __future__ import annotations

import torch

from ..plots import spectrum_panels
from ..widgets import Explorer, interactive_for, knobs, sliders_for


class SpectrumExplorer(Explorer):
    """``widgets.Explorer`` for lesson 05's rank widget: the table shows accuracy, parameters,
    bytes and MACs; the left panel the singular values of one layer of the base network with
    the rank the method kept there, the right panel accuracy and MACs against the knob."""

    def __init__(self, *args, layer: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer = layer
        weight = self.base.get_submodule(layer).weight.detach()
        self.spectrum = torch.linalg.svdvals(weight.flatten(1).double()).float()  # once

    def kept_rank(self, model) -> int:
        """The rank the method gave ``self.layer`` (its full rank if it left it dense)."""
        module = model.get_submodule(self.layer)
        config = getattr(module, "config", {})
        return int(config.get("rank", len(self.spectrum)))

    def compute(self, **values):
        model, result, ratios = super().compute(**values)
        self.trail[-1]["rank"] = self.kept_rank(model)
        return model, result, ratios

    def rows(self, model, result) -> list[dict]:
        keep = ("name", "accuracy", "params", "bytes", "macs")
        rows = [{k: r.row()[k] for k in keep} for r in (self.base_report, result)]
        rows[1][f"rank of {self.layer}"] = self.kept_rank(model)
        return rows

    def draw(self, left, right, model, knob: str):
        spectrum_panels(left, right, self.spectrum, self.kept_rank(model), self.layer,
                        self.trail, knob, self.base_report, self.mark, self.mark_label)


def explore_rank(method, base, test, layer: str, data=None, sliders=None, name: str = "base",
                 mark=None, mark_label: str = "", continuous: bool | None = None, **fixed):
    """``widgets.explore`` for lesson 05 (a method class whose layers keep their rank in
    ``config["rank"]``, e.g. ``lowrank.svd``): the singular value spectrum of ``layer`` with
    the rank kept, accuracy and MACs against the knob; ``mark`` draws the paper's setting.
    The returned widget has ``.explorer`` (trail, update times) like ``explore``'s."""
    names = list(sliders) if sliders else list(knobs(method))[:1]
    first = {n: fixed.pop(n) for n in names if n in fixed}
    explorer = SpectrumExplorer(method, base, test, data, name, layer=layer, mark=mark,
                                mark_label=mark_label, **fixed)
    controls = sliders_for(method, names, True)
    for n, value in first.items():
        controls[n].value = value
    return interactive_for(explorer, method, controls, fixed, continuous)
