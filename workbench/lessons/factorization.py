"""Lesson 05: low rank (the rank widget with a layer's spectrum; one layer's Tucker-2 / CP
chain, sliders with the papers' settings as lines; the sections' sweeps, tables and timings)."""
from __future__ import annotations

import ipywidgets as w
import torch
from matplotlib.figure import Figure

from .. import METHODS, codec, papers
from ..lowrank import tensor_tensors as tt
from ..measure import html_table, report
from ..plots import spectrum_panels
from ..train import evaluate
from ..widgets import (Explorer, figure_image, interactive_for, knobs, png_of, sliders_for,
                       start_at)
from .common import measured, paper_rows


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
        start_at(controls[n], n, value)
    return interactive_for(explorer, method, controls, fixed, continuous)


# ---------------------------------------------------------------- lesson 05: more widgets
# (issue 16: a widget in every section where a knob moves at interactive speed, the paper's
# figure as a line where the library records one)

CHAIN_KINDS = ("separable", "tucker", "cp")


def chain_point(conv, kind: str, rank: int, iterations: int = 25, seed: int = 0) -> dict:
    """``conv`` (a dense kxk Conv2d, stride 1) as Jaderberg's separable pair of rank ``rank``
    (``matrix_tensors.separable_factors``), a Tucker-2 chain of ranks (rank, rank) or a
    rank-``rank`` CP chain (``tensor_tensors``): the kernel's relative error, the chain's weights
    and its multiplications per output pixel beside the dense layer's. CP is fitted by
    ``iterations`` ALS sweeps (the error of its best sweep)."""
    if kind not in CHAIN_KINDS:
        raise ValueError(f"kind={kind!r}; allowed: {CHAIN_KINDS}")
    weight = conv.weight.detach()
    n, c, kh, kw = weight.shape
    if kind == "separable":
        from ..lowrank import matrix_tensors as mt
        rank = min(rank, c * kh, n * kw)
        vertical, horizontal = mt.separable_factors(weight, rank)
        error = tt.relative_error(weight, mt.compose_separable(vertical, horizontal))
        params = macs = rank * (c * kh + n * kw)
    elif kind == "tucker":
        rank = min(rank, n, c)
        core, u, v = tt.tucker2(weight, rank, rank)
        error = tt.relative_error(weight, tt.tucker2_to_kernel(core, u, v))
        params, macs = c * rank + rank * rank * kh * kw + rank * n, tt.tucker_cost(conv, rank, rank)
    else:
        factors, errors = tt.cp_als(weight, rank, iterations, seed=seed)
        error, params, macs = min(errors), rank * (n + c + kh + kw), tt.cp_cost(conv, rank)
    dense = tt.dense_cost(conv)
    return {"rank": rank, "kernel error": round(error, 4), "chain weights": params,
            "dense weights": weight.numel(), "MACs per pixel": macs,
            "dense MACs per pixel": dense, "x fewer MACs": round(dense / macs, 2)}


def chain_rank_limit(conv, kind: str) -> int:
    """The slider's top: the full rank for the separable pair and Tucker-2, twice the output
    channels for CP."""
    (kh, kw), c, n = conv.kernel_size, conv.in_channels, conv.out_channels
    return {"separable": min(c * kh, n * kw), "tucker": min(c, n), "cp": 2 * n}[kind]


def chain_macs(conv, kind: str, rank: int) -> float:
    """How many times fewer multiplications per output pixel the chain does than ``conv``."""
    (kh, kw), c, n = conv.kernel_size, conv.in_channels, conv.out_channels
    cost = {"separable": lambda: rank * (c * kh + n * kw),
            "tucker": lambda: tt.tucker_cost(conv, rank, rank),
            "cp": lambda: tt.cp_cost(conv, rank)}[kind]()
    return tt.dense_cost(conv) / cost


def _fixed_figure(figsize=(10, 3.2)) -> Figure:
    """A figure of fixed size and margins, redrawn in place (the same pixels every update)."""
    fig = Figure(figsize=figsize, dpi=96)
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.17, top=0.88, wspace=0.3)
    return fig


class ChainExplorer:
    """One convolution as a separable pair, a Tucker-2 or a CP chain at the slider's rank: a table of the kernel
    error, weights and MACs; left, the kernel error of every rank visited; right, the MAC ratio
    of every rank (a closed form, drawn once) with the break-even line and the slider's point.
    Nothing is trained or evaluated: a move is one decomposition of one layer."""

    def __init__(self, conv, name: str, kind: str, iterations: int = 25,
                 mark=None, mark_label: str = ""):
        self.conv, self.name, self.kind, self.iterations = conv, name, kind, iterations
        self.trail: list[dict] = []
        self.fig = _fixed_figure()
        self.left, right = self.fig.subplots(1, 2)
        ranks = list(range(1, chain_rank_limit(conv, kind) + 1))
        right.plot(ranks, [chain_macs(conv, kind, r) for r in ranks], color="C0")
        right.axhline(1, color="0.5", ls="--", label="break-even (as many MACs as the conv)")
        if mark is not None:
            right.axvline(mark, color="k", ls=":", label=mark_label or f"rank {mark}")
        (self.point,) = right.plot([], [], "o", color="C3", label="the slider's rank")
        right.set_yscale("log")
        right.set_xlabel("rank")
        right.set_ylabel("x fewer MACs than the conv")
        right.legend(fontsize=7)
        (self.errors,) = self.left.plot([], [], "o-", ms=3, color="C1")
        (self.current,) = self.left.plot([], [], "o", color="C3")
        self.left.set_xlim(0, ranks[-1] + 1)
        self.left.set_ylim(0, 1.05)
        self.left.set_xlabel("rank")
        self.left.set_ylabel(f"relative kernel error, {name}")
        self.fig.suptitle(f"{name}: {kind} chain", fontsize=9)
        self.table, self.plot = w.HTML(), figure_image(self.fig)

    def update(self, rank: int):
        row = chain_point(self.conv, self.kind, rank, self.iterations)
        self.trail = [r for r in self.trail if r["rank"] != row["rank"]] + [row]
        trail = sorted(self.trail, key=lambda r: r["rank"])
        self.errors.set_data([r["rank"] for r in trail], [r["kernel error"] for r in trail])
        self.current.set_data([row["rank"]], [row["kernel error"]])
        self.point.set_data([row["rank"]], [row["x fewer MACs"]])
        self.table.value = html_table([{"layer": self.name, "chain": self.kind, **row}])
        self.plot.value = png_of(self.fig)
        return row


def _box(explorer, controls: list, *parts):
    box = w.VBox([*controls, *parts])
    box.add_class("wb-explore")
    box.explorer, box.kwargs_widgets = explorer, controls
    return box


def explore_chain(model, name: str, kind: str = "tucker", rank: int | None = None,
                  iterations: int = 25, mark=None, mark_label: str = ""):
    """A rank slider for the convolution ``name`` of ``model`` as a separable pair (rank r), a
    Tucker-2 (ranks r, r) or a CP (rank R) chain: kernel error, weights and MACs live (``ChainExplorer``), no fine-tuning.
    ``mark``: a rank to draw as a line (the paper's, where the library records one)."""
    conv = model.get_submodule(name)
    explorer = ChainExplorer(conv, name, kind, iterations, mark, mark_label)
    top = chain_rank_limit(conv, kind)
    start = rank or max(1, top // 4)
    slider = w.IntSlider(value=start, min=1, max=top, step=1, description="rank",
                         continuous_update=kind != "cp")   # a CP fit takes a moment
    slider.observe(lambda change: explorer.update(change["new"]), names="value")
    explorer.update(start)
    return _box(explorer, [slider], explorer.table, explorer.plot)


class MarkedExplorer(Explorer):
    """``widgets.Explorer`` whose right panel draws several of the paper's settings of the
    knob as vertical lines (``marks``: (value, label) pairs)."""

    def __init__(self, *args, marks=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.marks = list(marks)

    def draw(self, left, right, model, knob: str):
        super().draw(left, right, model, knob)
        for i, (value, label) in enumerate(self.marks):
            right.axvline(value, color="k", ls=(":", "-.", "--")[i % 3], lw=1, label=label)
        right.legend(fontsize=7)


def explore_marked(method, base, test, marks=(), data=None, sliders=None, name: str = "base",
                   continuous: bool | None = None, **fixed):
    """``widgets.explore`` with several paper settings of the first knob drawn as lines
    (``marks``: (value, label) pairs, e.g. ``paper_marks``)."""
    names = list(sliders) if sliders else list(knobs(method))[:1]
    first = {n: fixed.pop(n) for n in names if n in fixed}
    explorer = MarkedExplorer(method, base, test, data, name, marks=marks, **fixed)
    controls = sliders_for(method, names, True)
    for n, value in first.items():
        start_at(controls[n], n, value)
    return interactive_for(explorer, method, controls, fixed, continuous)


def paper_marks(method_id: str, knob: str) -> list[tuple[float, str]]:
    """The paper's settings of ``knob`` from ``papers.facts(method_id)``, as widget lines:
    ``"compression"`` (HashedNets: 1 / the ratio of stored weights) or ``"sparsity"`` (the
    share of weights removed), each labelled with the paper's figure at that setting."""
    marks = []
    for fact in papers.facts(method_id):
        if knob == "compression" and fact.ratio:
            value = 1 / fact.ratio
            label = f"paper: 1/{fact.ratio:g}"
        elif knob == "sparsity" and fact.removed_pct is not None:
            value = fact.removed_pct / 100
            label = f"paper: {fact.ratio_bound + ' ' if fact.ratio_bound else ''}" \
                    f"{fact.removed_pct:g}% removed"
        else:
            continue
        if fact.metric is not None:
            label += f", {fact.value_bound + ' ' if fact.value_bound else ''}" \
                     f"{fact.value:g}{'%' if fact.metric in ('error', 'accuracy drop') else ''} " \
                     f"{fact.metric}"
        marks.append((value, label))
    return marks


# the ends of Figurnov et al.'s "accelerated 2x-4x" (papers.QUOTED), as speed-ups
PERFORATION_SPEEDUPS = (2, 4)


def perforation_marks() -> list[tuple[float, str]]:
    """The rates at which a perforated layer does 2x and 4x fewer MACs (1 - 1/s): the ends of
    Figurnov et al.'s 2x-4x (a measured speed-up of whole networks, not a MAC count)."""
    return [(1 - 1 / s, f"{s}x fewer MACs per conv (Figurnov: {PERFORATION_SPEEDUPS[0]}x-"
                        f"{PERFORATION_SPEEDUPS[-1]}x faster)") for s in PERFORATION_SPEEDUPS]


def lowrank_paper_rows(ours: dict) -> list[dict]:
    """Section 8: every id of the catalogue's lowrank family, with the catalogue's paper target
    and the figure ``papers.QUOTED`` quotes (each a row; "-" when neither), beside ``ours[id]``."""
    from .. import catalogue, papers
    return paper_rows(catalogue.family_ids("lowrank"), papers.QUOTED, ours, every_id=True)


# ---------------------------------------------------------------- lesson 05: the sections'
# computations (so that a code cell narrates and calls)

def spectrum_figure(weight: torch.Tensor, label: str = "LeNet-300-100 fc1 (trained)"):
    """Section 1: the singular values of ``weight`` beside those of a random matrix of the
    same shape and standard deviation (log scale), shown; returns the spectrum (float64)."""
    import matplotlib.pyplot as plt
    w64 = weight.detach().double()
    spectrum = torch.linalg.svdvals(w64)
    random_layer = torch.randn(w64.shape, dtype=torch.float64,
                               generator=torch.Generator().manual_seed(0)) * w64.std()
    fig, ax = plt.subplots(figsize=(6.4, 3.2), layout="constrained")
    ax.semilogy(spectrum.numpy(), label=label)
    ax.semilogy(torch.linalg.svdvals(random_layer).numpy(), label="random, same shape and std")
    ax.set_xlabel("index i")
    ax.set_ylabel("singular value")
    ax.legend()
    plt.show()
    return spectrum


def eckart_young_rows(weight: torch.Tensor, ranks=(10, 25, 50, 100, 200)) -> list[dict]:
    """Section 1: at each rank, the error of the library's ``truncated_svd`` beside the
    spectrum's tail (Eckart-Young) and the energy kept."""
    from ..lowrank import matrix_tensors as mt
    w64 = weight.detach().double()
    spectrum = torch.linalg.svdvals(w64)
    rows = []
    for k in ranks:
        left, right = mt.truncated_svd(weight.detach(), k)
        tail = spectrum[k:].pow(2).sum()
        rows.append({"rank k": k,
                     "||W - W_k||_F": round(torch.linalg.matrix_norm(w64 - left @ right).item(), 5),
                     "sqrt(sum of sigma_i^2, i > k)": round(tail.sqrt().item(), 5),
                     "energy kept %": round(100 * (1 - tail / spectrum.pow(2).sum()).item(), 2)})
    return rows


def svd_sweep(net, test, base_report, ranks=(5, 10, 20, 30, 50, 100),
              layers=("net.1", "net.3")):
    """Section 2: ``lowrank.svd`` of ``layers`` at each rank, no fine-tuning: (rows, models,
    the smallest rank within one point of the base's accuracy)."""
    rows, models = [], {}
    for k in ranks:
        model, row = measured(METHODS["lowrank.svd"](rank=k, layers=layers), net, test)
        r = report(model, latency=False)
        models[k] = model
        rows.append({"rank k": k, "accuracy": row["accuracy"], "params": r.params,
                     "MACs": r.macs, "x fewer MACs": round(base_report.macs / r.macs, 2),
                     "file bytes": row["file bytes"]})
    within = [r["rank k"] for r in rows if r["accuracy"] >= base_report.accuracy - 0.01]
    return rows, models, min(within) if within else None


def speed_rows(model, dense, input_shape, pairs: int, label: dict, batches=(1, 64)) -> list[dict]:
    """``model`` against ``dense`` timed interleaved on one thread (``timing.compare``) at each
    batch: the MAC ratio, the measured ratio and both times; ``label`` leads each row."""
    from .. import measure, timing
    macs_x = round(report(dense, latency=False).macs / report(model, latency=False).macs, 2)
    rows = []
    for batch in batches:
        c = timing.compare(measure.shipped(model), measure.shipped(dense), input_shape,
                           batch=batch, threads=1, pairs=pairs)
        rows.append({**label, "batch": batch, "x fewer MACs (network)": macs_x,
                     "measured": c.display, "compressed ms": round(c.a_ms, 4),
                     "dense ms": round(c.b_ms, 4), "load": c.load_avg})
    return rows


def response_errors(net, train, test, layer: str = "features.3", rank: int = 8,
                    images: int = 500) -> list[dict]:
    """Section 3.2: ``layer`` at ``rank`` fitted to the weights (``lowrank.svd``) and to the
    responses (``lowrank.channel``): the relative error of the layer's output on (up to) 200
    test images, and the network's accuracy on ``test``."""
    index = int(layer.rsplit(".", 1)[1])
    by_responses = METHODS["lowrank.channel"](rank=rank, layers=(layer,),
                                              images=min(images, len(train))).apply(net, train)
    by_weights = METHODS["lowrank.svd"](kinds="conv", rank=rank, layers=(layer,)).apply(net)
    rows = []
    with torch.no_grad():
        x = net.features[:index](test.subset(min(200, len(test)), seed=1).tensors()[0])
        y = net.features[index](x)
        for label, model in (("lowrank.svd (weights)", by_weights),
                             ("lowrank.channel (responses)", by_responses)):
            err = (model.features[index](x) - y).norm() / y.norm()
            rows.append({f"rank {rank} of {y.shape[1]}, {layer}": label,
                         "relative response error": round(err.item(), 4),
                         "network accuracy": round(evaluate(model, test), 4)})
    return rows


def tensor_sweep(methods: dict, net, test, base_report):
    """Section 4: each method of ``methods`` (id -> method) applied to ``net`` without
    fine-tuning: (rows with accuracy, MAC and weight ratios and each layer's kernel error,
    models)."""
    from ..models import attached
    rows, models = [], {}
    for mid, method in methods.items():
        model, row = measured(method, net, test)
        models[mid] = model
        fits = attached(model, "tensor_decomposition")["layers"]
        r = report(model, latency=False)
        rows.append({"method": mid, "accuracy (no fine-tune)": row["accuracy"],
                     "x fewer MACs": round(base_report.macs / r.macs, 2),
                     "x fewer params": round(base_report.params / r.params, 2),
                     "kernel errors by layer": " / ".join(f"{f['error']:.2f}"
                                                         for f in fits.values()),
                     "seconds": row["seconds"]})
    return rows, models


def finetune_sweep(methods: dict, net, test, train, epochs: int, before: list[dict],
                   float_accuracy: float) -> list[dict]:
    """Section 4: each method of ``methods`` again with ``epochs`` of fine-tuning on
    ``train``, beside its accuracy before (``before``: ``tensor_sweep``'s rows)."""
    rows = []
    for mid, method in methods.items():
        _, row = measured(type(method)(**{**method.params(), "epochs": epochs}), net, test,
                          data=train)
        old = next(r for r in before if r["method"] == mid)
        rows.append({"method": mid, "x fewer MACs": old["x fewer MACs"],
                     "before": old["accuracy (no fine-tune)"],
                     f"after {epochs} epoch(s) on {len(train)} images": row["accuracy"],
                     "float": float_accuracy, "seconds": row["seconds"]})
    return rows


def layer_timing(dense_net, chain_net, name: str, shape, layout: str, pairs: int,
                 batch: int = 64):
    """Section 4.4: the convolution ``name`` of ``dense_net`` against the chain that replaced
    it in ``chain_net``, alone, on ``batch`` random inputs of ``shape``, one thread, in NCHW
    or ``"channels_last"``: ``timing.compare_calls``'s result (chain vs conv)."""
    from .. import timing
    from ..method import clone_model
    dense, chain = (clone_model(m.get_submodule(name)) for m in (dense_net, chain_net))
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    if layout == "channels_last":
        dense, chain = (m.to(memory_format=torch.channels_last) for m in (dense, chain))
        x = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        return timing.compare_calls(lambda: chain(x), lambda: dense(x), threads=1, pairs=pairs,
                                    batch=batch)


def chain_timing_rows(dense_net, models: dict, layers: dict, pairs: int,
                      input_shape=(3, 32, 32)) -> list[dict]:
    """Section 4.4: for each layer (name -> its input's shape) and each model of ``models``
    (id -> decomposed network), the layer's MAC ratio and the measured chain vs conv ratio in
    NCHW and channels_last (``layer_timing``)."""
    from ..measure import layer_table
    dense_macs = {r["layer"]: r["macs"] for r in layer_table(dense_net, input_shape)}
    rows = []
    for name, shape in layers.items():
        for mid, model in models.items():
            chain_macs = sum(r["macs"] for r in layer_table(model, input_shape)
                             if r["layer"].startswith(name + "."))
            row = {"layer": f"{name} {shape[0]}ch {shape[1]}x{shape[2]}", "method": mid,
                   "x fewer MACs": round(dense_macs[name] / max(chain_macs, 1), 2)}
            for layout in ("NCHW", "channels_last"):
                row[f"chain vs conv, {layout}"] = layer_timing(dense_net, model, name, shape,
                                                               layout, pairs).display
            rows.append(row)
    return rows


def sparse_decomp_sweep(net, test, train, epochs: int, float_accuracy: float,
                        sparsity: float = 0.9) -> list[dict]:
    """Section 5: ``lowrank.sparse_decomp`` at ``sparsity`` without training, then with
    ``epochs`` of L1 penalty and of fine-tuning: accuracy, kernel zeros, file bytes."""
    from ..lowrank.sparse import kernel_sparsity
    rows = []
    for settings in (dict(sparsity=sparsity, penalty_epochs=0, epochs=0),
                     dict(sparsity=sparsity, penalty_epochs=epochs, epochs=epochs)):
        model, row = measured(METHODS["lowrank.sparse_decomp"](**settings), net, test,
                              data=train)
        rows.append({"settings": row["settings"].split(", layers")[0],
                     "accuracy": row["accuracy"], "float accuracy": float_accuracy,
                     "kernel zeros %": round(100 * kernel_sparsity(model), 1),
                     "file bytes": row["file bytes"], "seconds": row["seconds"]})
    return rows


def perforation_sweep(net, test, base_report, pairs: int, rates=(0.5, 0.75),
                      strategies=("grid", "uniform")) -> list[dict]:
    """Section 6.1: ``approx.perforation`` without fine-tuning at each rate and strategy:
    accuracy, MAC ratio and the measured speed at batch 64 (one thread)."""
    from .. import measure, timing
    rows = []
    for rate in rates:
        for strategy in strategies:
            model = METHODS["approx.perforation"](rate=rate, strategy=strategy,
                                                  epochs=0).apply(net)
            r = report(model, test, latency=False)
            c = timing.compare(measure.shipped(model), measure.shipped(net), net.input_shape,
                               batch=64, threads=1, pairs=pairs)
            rows.append({"rate": rate, "strategy": strategy, "accuracy": r.accuracy,
                         "x fewer MACs": round(base_report.macs / r.macs, 2),
                         "measured, batch 64": c.display})
    return rows


def dct_energy_figure(weight: torch.Tensor) -> str:
    """Section 6.2: the share of the energy of each 2-D DCT coefficient of ``weight``'s
    filters, averaged over the filters, as a heat map (shown); returns the Parseval and
    inverse checks as one line."""
    import matplotlib.pyplot as plt
    import numpy as np
    from ..lowrank import approx_tensors
    w64 = weight.detach().double()
    coeffs = approx_tensors.dct2(w64)
    energy = coeffs.pow(2).mean(dim=(0, 1))
    share = (100 * energy / energy.sum()).numpy()
    fig, ax = plt.subplots(figsize=(3.4, 3), layout="constrained")
    ax.imshow(share, cmap="viridis")
    for (i, j), v in np.ndenumerate(share):
        ax.text(j, i, f"{v:.0f}%", ha="center", va="center", color="w", fontsize=8)
    ax.set_title("share of the energy by DCT coefficient", fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    plt.show()
    return (f"orthonormal DCT: energy in the spatial domain {w64.pow(2).sum():.4f}, in the DCT "
            f"domain {coeffs.pow(2).sum():.4f}; inverse error "
            f"{(approx_tensors.idct2(coeffs) - w64).abs().max():.1e}")


def frequency_sweep(net, test, settings_list) -> list[dict]:
    """Section 6.2: ``approx.frequency`` at each settings dict: accuracy, file bytes and how
    many times smaller than ``net``'s file."""
    dense_bytes = len(codec.encode(net))
    rows = []
    for settings in settings_list:
        _, row = measured(METHODS["approx.frequency"](**settings), net, test)
        rows.append({"settings": ", ".join(f"{k}={v}" for k, v in settings.items()),
                     "accuracy": row["accuracy"], "file bytes": row["file bytes"],
                     "x smaller": round(dense_bytes / row["file bytes"], 2)})
    return rows


def hash_sweep(net, test, train, epochs: int, factors=(1 / 8, 1 / 64),
               layers=("net.1", "net.3")) -> list[dict]:
    """Section 7.1: HashedNets and FunHashNN of ``layers`` at each compression factor, trained
    from scratch for ``epochs`` on ``train``: accuracy, parameters, file bytes, seconds."""
    rows = []
    for factor in factors:
        for mid in ("hash.hashednets", "hash.funhash"):
            method = METHODS[mid](compression=factor, epochs=epochs, layers=layers)
            model, row = measured(method, net, test, data=train)
            rows.append({"method": mid, "compression": f"1/{round(1 / factor)}",
                         "accuracy": row["accuracy"],
                         "params": report(model, latency=False).params,
                         "file bytes": row["file bytes"], "seconds": row["seconds"]})
    return rows


def circulant_checks(layer, seed: int = 0) -> dict:
    """Section 7.2: a ``CirculantLinear``'s FFT path against the dense matrix C(r)D it stands
    for, and that matrix against scipy's ``circulant(r)`` times the signs."""
    import numpy as np
    from scipy.linalg import circulant
    x = torch.randn(4, layer.in_features, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        difference = (layer(x) - (x @ layer.dense_weight().t() + layer.bias)).abs().max()
        mine = layer.dense_weight().double().numpy()
    r, signs = layer.r.detach().double().numpy(), layer.signs.double().numpy()
    scipy_matrix = (circulant(r) * signs[None, :])[:layer.out_features, :layer.in_features]
    return {"FFT vs dense, max difference": float(f"{float(difference):.1e}"),
            "equal to scipy's circulant(r) D": bool(np.allclose(mine, scipy_matrix, atol=1e-6)),
            "stored numbers": layer.r.numel(), "biases": layer.bias.numel(),
            "dense weights": layer.in_features * layer.out_features}


def circulant_timing_rows(pairs: int, sizes=(300, 1024, 2048), batches=(1, 64)) -> list[dict]:
    """Section 7.2: a square circulant layer against the dense one of each size, one thread:
    the counted and the measured ratio (``timing.compare_calls``)."""
    from .. import timing
    from ..lowrank.circulant import CirculantLinear, circulant_mults
    rows = []
    for n in sizes:
        dense = torch.nn.Linear(n, n)
        circ = CirculantLinear.from_linear(dense, seed=0)
        for batch in batches:
            x = torch.randn(batch, n)
            with torch.no_grad():
                c = timing.compare_calls(lambda: circ(x), lambda: dense(x), threads=1,
                                         pairs=pairs, batch=batch)
            rows.append({"layer": f"{n} x {n}", "batch": batch,
                         "x fewer multiplications": round(n * n / circulant_mults(n, batch), 1),
                         "circulant vs dense, measured": c.display})
    return rows
