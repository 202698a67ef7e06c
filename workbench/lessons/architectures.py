"""Lesson 07: compact architectures (costs by layer kind, the zoo's Pareto front, widgets for width
and the other knobs).
"""
from __future__ import annotations

import time

import ipywidgets as w
import torch

from ..measure import html_table, report
from ..plots import plain_log_axis
from ..widgets import Explorer, png_of, sliders_for, start_at


def layer_kind(module) -> str:
    """What kind of layer a Conv2d / Linear is, as lesson 07 sorts them: "linear", "1x1",
    "3x3" (any full k x k), "3x3 depthwise" (one filter per channel), "1x1 grouped" ..."""
    if isinstance(module, torch.nn.Linear):
        return "linear"
    kernel = "x".join(map(str, module.kernel_size))
    if module.groups > 1 and module.groups == module.in_channels:
        return f"{kernel} depthwise"
    return f"{kernel} grouped" if module.groups > 1 else kernel


def where_macs_go(networks: dict) -> list[dict]:
    """Per network (name -> built model with ``input_shape``) and kind of layer (``layer_kind``):
    the layers' weights and MACs per image as ``measure.layer_table`` counts them, with their
    share of the network's MACs and weights."""
    from ..measure import layer_table
    out = []
    for name, model in networks.items():
        table = layer_table(model, tuple(model.input_shape))
        total_macs, total_params = sum(r["macs"] for r in table), sum(r["params"] for r in table)
        kinds: dict[str, list] = {}
        for r in table:
            kinds.setdefault(layer_kind(model.get_submodule(r["layer"])), []).append(r)
        for kind, rows in sorted(kinds.items(), key=lambda kv: -sum(r["macs"] for r in kv[1])):
            macs, params = sum(r["macs"] for r in rows), sum(r["params"] for r in rows)
            out.append({"network": name, "layers": f"{len(rows)} x {kind}", "weights": params,
                        "% of weights": round(100 * params / total_params, 1), "MACs": macs,
                        "% of MACs": round(100 * macs / total_macs, 1)})
    return out


@torch.no_grad()
def output_sizes(model, names) -> dict[str, tuple[int, int]]:
    """(height, width) of the output of each named module on one zero image of
    ``model.input_shape``."""
    from ..hooks import probe
    sizes = {}
    probe(model, tuple(model.input_shape),
          {n: lambda m, i, out, name: sizes.__setitem__(name, tuple(out.shape[-2:]))
           for n in names})
    return sizes


def separable_blocks(model) -> list[tuple[str, str]]:
    """(depthwise, pointwise) layer names of every depthwise conv followed by a 1x1 conv in
    ``model`` (MobileNet's blocks, in order)."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return [(a, b) for (a, ma), (b, mb) in zip(convs, convs[1:])
            if layer_kind(ma).endswith("depthwise") and layer_kind(mb) == "1x1"]


def separable_table(model) -> list[dict]:
    """Each depthwise separable block of ``model``: its widths and output map, the MACs
    ``measure.layer_table`` counts for its two layers, the formula h*w*c_in*(k*k + c_out), a
    full k x k convolution's h*w*c_in*c_out*k*k, and their ratio beside 1/c_out + 1/k^2."""
    from ..measure import layer_table
    counted = {r["layer"]: r["macs"] for r in layer_table(model, tuple(model.input_shape))}
    pairs = separable_blocks(model)
    sizes = output_sizes(model, [dw for dw, _ in pairs])
    rows = []
    for dw, pw in pairs:
        conv, point = model.get_submodule(dw), model.get_submodule(pw)
        (h, w), k, c_in, c_out = sizes[dw], conv.kernel_size[0], conv.in_channels, \
            point.out_channels
        standard = h * w * c_in * c_out * k * k
        library = counted[dw] + counted[pw]
        rows.append({"block": dw.rsplit(".", 1)[0], "c_in -> c_out": f"{c_in} -> {c_out}",
                     "stride": conv.stride[0], "map": f"{h}x{w}",
                     "depthwise MACs": counted[dw], "pointwise MACs": counted[pw],
                     "h w c_in (k^2 + c_out)": h * w * c_in * (k * k + c_out),
                     "formula = counted": h * w * c_in * (k * k + c_out) == library,
                     "full conv MACs": standard, "separable / full": round(library / standard, 4),
                     "1/c_out + 1/k^2": round(1 / c_out + 1 / k ** 2, 4)})
    return rows


def fire_table(model) -> list[dict]:
    """Each Fire module of a SqueezeNet: its widths, the weights of its three convolutions
    (``measure.layer_table``), and those of one full 3x3 convolution with the same input and
    output widths, which the module replaces."""
    from ..measure import layer_table
    from ..models.squeeze import Fire
    params = {r["layer"]: r["params"] for r in layer_table(model, tuple(model.input_shape))}
    rows = []
    for name, fire in model.named_modules():
        if not isinstance(fire, Fire):
            continue
        squeeze = fire.squeeze[0]
        e1 = fire.expand1[0].out_channels if fire.expand1 is not None else 0
        e3 = fire.expand3[0].out_channels if fire.expand3 is not None else 0
        weights = sum(v for k, v in params.items() if k.startswith(name + "."))
        full = squeeze.in_channels * (e1 + e3) * 9
        rows.append({"module": name, "c_in": squeeze.in_channels,
                     "squeeze s": squeeze.out_channels, "expand e1 (1x1)": e1,
                     "expand e3 (3x3)": e3, "conv weights": weights,
                     "full 3x3 conv c_in -> e1+e3": full, "x fewer": round(full / weights, 1)})
    return rows


def _has_checkpoint(name: str, knobs: dict) -> dict | None:
    """The zoo's manifest entry of ``name`` when ``knobs`` are those its checkpoint was trained
    at (the constructor's defaults), else None."""
    from ..arch.networks import _same, zoo_defaults
    from ..zoo import manifest
    defaults = zoo_defaults(name)
    if any(not _same(v, defaults.get(k)) for k, v in knobs.items()):
        return None
    return manifest().get(name)


def accuracy_note(name: str, knobs: dict) -> str:
    """The test accuracy of the zoo's checkpoint at ``knobs``, or why there is none."""
    entry = _has_checkpoint(name, knobs)
    if entry is not None:
        return f"{100 * entry['test_acc']:.2f}% (zoo checkpoint, full test set)"
    from ..arch.networks import _same, zoo_defaults
    defaults = zoo_defaults(name)
    changed = {k: v for k, v in knobs.items() if not _same(v, defaults.get(k))}
    if not changed:
        return f"not trained yet: python -m workbench zoo train {name}"
    trained_at = ", ".join(f"{k}={defaults[k]}" for k in changed)
    return f"not trained (the zoo has {name} only at {trained_at})"


def architecture_figures(name: str, knobs: dict, min_run_time: float = 0.05) -> dict:
    """Params, MACs (``measure.layer_table``, what ``report`` sums) and measured time per image
    (``timing.time_model``, batch 1, one thread, warm) of ``models.build(name, **knobs)``, with
    the accuracy of a committed checkpoint at those knobs (``accuracy_note``). No training."""
    from ..measure import layer_table
    from ..models import build
    from ..timing import time_model
    model = build(name, **knobs).eval()
    shape = tuple(model.input_shape)
    macs = sum(r["macs"] for r in layer_table(model, shape))
    timed = time_model(model, shape, batch=1, threads=1, min_run_time=min_run_time, warmup=2)
    return {**knobs, "params": sum(p.numel() for p in model.parameters()), "MACs": macs,
            "ms (batch 1, 1 thread)": round(timed.median_ms, 3),
            "IQR ms": round(timed.iqr_ms, 3), "accuracy": accuracy_note(name, knobs)}


class ArchitectureExplorer(Explorer):
    """The state behind ``explore_architecture``: one zoo network rebuilt at the sliders'
    knobs on every move (never trained), its figures in a table, and one figure redrawn in
    place: MACs and params against the first knob, measured time against MACs, over the points
    visited. Moves are computed in a background thread (``Explorer.request``)."""

    def __init__(self, name: str, fixed: dict | None = None, min_run_time: float = 0.05):
        self.name, self.fixed, self.min_run_time = name, dict(fixed or {}), min_run_time
        self.init_view()          # no base network to measure: only the view and the trail

    def compute(self, **values) -> dict:
        row = architecture_figures(self.name, {**self.fixed, **values}, self.min_run_time)
        self.trail.append(row)
        return row

    def panels(self):
        """The two panels, made on the first move and kept, emptied of their lines: new axes
        on every move would build every tick and label again, much of the drawing time."""
        if not self.fig.axes:
            left, _ = self.fig.subplots(1, 2, gridspec_kw=self.margins)
            left.set_yscale("log")
            plain_log_axis(left.yaxis)
        for ax in self.fig.axes:
            for line in list(ax.lines):
                line.remove()
        return self.fig.axes

    def draw(self, left, right, knob: str):
        """Left: MACs and params against ``knob`` at the other knobs' current values; right:
        time against MACs of every setting visited (its last measurement)."""
        points = {}
        for r in self.trail:
            points[tuple(str(r[k]) for k in self.knob_names)] = r
        now = self.trail[-1]
        rows = sorted((r for r in points.values()
                       if all(r[k] == now[k] for k in self.knob_names if k != knob)),
                      key=lambda r: r[knob])
        left.plot([r[knob] for r in rows], [r["MACs"] / 1e6 for r in rows], "o-", ms=3,
                  color="C0", label="MACs (millions)")
        left.plot([r[knob] for r in rows], [r["params"] / 1e6 for r in rows], "s--", ms=3,
                  color="C1", label="params (millions)")
        left.set_xlabel(knob)
        left.legend(fontsize=8)
        right.plot([r["MACs"] / 1e6 for r in points.values()],
                   [r["ms (batch 1, 1 thread)"] for r in points.values()], "o", ms=4,
                   color="C0")
        right.plot([now["MACs"] / 1e6], [now["ms (batch 1, 1 thread)"]], "o", color="C3", ms=7)
        right.set_xlabel("MACs per image (millions)")
        right.set_ylabel("ms per image (batch 1, 1 thread)")
        right.set_title(f"{self.name}: points visited (red: now)", fontsize=9)
        for ax in (left, right):        # the limits of this move's lines only
            ax.relim()
            ax.autoscale_view()

    def update(self, **values):
        from html import escape

        from ..widgets import scrolled
        start = time.perf_counter()
        self.knob_names = list(values)
        last = self.trail[-1] if self.trail else {}
        moved = [k for k in values if k in last and last[k] != values[k]]
        self.knob = moved[0] if moved else getattr(self, "knob", next(iter(values)))
        row = self.compute(**values)
        self.table.value = scrolled(html_table([row]))
        self.ratios.value = scrolled(f"<b>accuracy</b>: {escape(row['accuracy'])}")
        self.draw(*self.panels(), self.knob)
        self.plot.value = png_of(self.fig)
        self.seconds.append(time.perf_counter() - start)


def explore_architecture(name: str, sliders=None, values: dict | None = None,
                         min_run_time: float = 0.05, **fixed):
    """Sliders over a zoo network's knobs (``sliders``: knob names, ranges from its
    ``arch.*`` method's declared ``sliders``; or a dict knob -> list of allowed values), and
    its params, MACs and measured latency updated on every move, with accuracy only where a
    committed checkpoint exists at those knobs (no training). ``values`` sets the sliders'
    starting values; ``fixed`` other constructor knobs. The widget has ``.explorer``."""
    from ..arch.networks import METHODS as ARCH
    from ..widgets import ExploreWidget
    method = next(m for m in ARCH if m.network == name)
    if isinstance(sliders, dict):
        controls = {k: w.SelectionSlider(options=list(v), description=k) for k, v in
                    sliders.items()}
    else:
        controls = sliders_for(method, sliders, continuous=True)
    for knob, value in (values or {}).items():
        start_at(controls[knob], knob, value)
    explorer = ArchitectureExplorer(name, fixed, min_run_time)
    widget = ExploreWidget(explorer, controls)
    explorer.update(**widget.values())
    return widget


def zoo_rows(min_run_time: float = 0.3, warmup: int = 5) -> list[dict]:
    """The zoo's trained CIFAR-10 networks (``zoo.manifest()``) with accuracy (the manifest's,
    full test set), params, MACs (``measure.report``), time per batch of 1 and of 64 on one
    thread (``timing.time_model``) and nanoseconds per MAC at batch 64; whether each compact one
    dominates ``vgg_small`` or ``resnet20`` (``bench.architectures_zoo.dominated``)."""
    from ..bench.architectures_zoo import REFERENCES, cifar_networks, dominated
    from ..timing import time_model
    from ..zoo import manifest, pretrained
    entries, rows = manifest(), []
    for name in [n for n in cifar_networks() if n in entries]:
        model = pretrained(name)
        r = report(model, latency=False)
        row = {"model": name, "accuracy": entries[name]["test_acc"], "params": r.params,
               "macs": r.macs, "bytes": r.bytes}
        for batch in (1, 64):
            t = time_model(model, tuple(model.input_shape), batch=batch, threads=1,
                           min_run_time=min_run_time, warmup=warmup)
            row[f"ms_b{batch}_t1"] = round(t.median_ms, 3)
        row["ns_per_mac_b64_t1"] = round(row["ms_b64_t1"] * 1e6 / (64 * r.macs), 3)
        rows.append(row)
    refs = [r for r in rows if r["model"] in REFERENCES]
    for r in rows:
        r["dominates"] = "(reference)" if r in refs else ", ".join(dominated(r, refs)) or "-"
    return rows


def missing_networks() -> list[dict]:
    """The zoo's CIFAR-10 networks without a checkpoint yet, with the command that trains
    each."""
    from ..bench.architectures_zoo import cifar_networks
    from ..zoo import manifest
    entries = manifest()
    return [{"network": n, "status": f"not trained yet: python -m workbench zoo train {n}"}
            for n in cifar_networks() if n not in entries]


def pareto_front(rows: list[dict], cost: str) -> list[dict]:
    """The rows no other row beats: none with at least the accuracy at a lower ``cost``
    (sorted by ``cost``)."""
    front, best = [], -1.0
    for r in sorted(rows, key=lambda r: (r[cost], -r["accuracy"])):
        if r["accuracy"] > best:
            front.append(r)
            best = r["accuracy"]
    return front


def pareto_panels(axes, rows: list[dict], references=("vgg_small", "resnet20")) -> None:
    """Test accuracy against params (left) and MACs (right), log axes, each network named,
    the references as squares, the Pareto front of each panel as a line."""
    for ax, cost, label in zip(axes, ("params", "macs"), ("parameters", "MACs per image")):
        for r in rows:
            ref = r["model"] in references
            ax.plot(r[cost], 100 * r["accuracy"], "s" if ref else "o",
                    color="0.3" if ref else "C0", ms=6)
            ax.annotate(r["model"], (r[cost], 100 * r["accuracy"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        front = pareto_front(rows, cost)
        ax.plot([r[cost] for r in front], [100 * r["accuracy"] for r in front], "-",
                color="C1", lw=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)


def paper_claims(rows: list[dict]) -> list[dict]:
    """One row per section-F method: the paper (catalogue), what it reports on (the zoo's
    TARGETS), the published figure the library holds (``papers``: none for these, said so),
    and our CIFAR-10 figures from ``rows`` (``zoo_rows``), or that it is not trained yet."""
    from .. import catalogue, papers
    from ..arch.networks import METHODS as ARCH
    from ..zoo import TARGETS
    ours = {r["model"]: r for r in rows}
    out = []
    for method in ARCH:
        entry, name = catalogue.by_id(method.id), method.network
        fact = papers.pick(method.id, name)
        r = ours.get(name)
        out.append({"id": method.id, "paper": entry.reference,
                    "what the paper reports on": TARGETS[name]["paper"],
                    "paper's figure (workbench.papers)": papers.paper_text(fact) if fact
                    else papers.no_figure(method.id),
                    "ours (CIFAR-10)": "not trained yet" if r is None else
                    f"{100 * r['accuracy']:.2f}%, {r['params'] / 1e3:.0f}k params, "
                    f"{r['macs'] / 1e6:.1f}M MACs, {r['ms_b1_t1']:.1f} ms/image"})
    return out


def guideline_rows(size: int, pairs: int) -> list[dict]:
    """ShuffleNet v2's four guidelines, each measured by ``bench.architectures_guidelines`` at
    its smaller scale on ``size`` x ``size`` maps, one thread, ``pairs`` interleaved pairs:
    the variants' MACs and memory access cost relative to the recommended one, their time, and
    how much slower than the recommended variant each ran (the paper's ratios: the bench)."""
    from ..bench import architectures_guidelines as G
    keep = ("guideline", "variant", "first_convs", "macs_vs_rec", "memory_access_vs_rec",
            "time_ms", "display")
    out = []
    for guideline, scales in G.SCALES.items():
        out += [{k: r[k] for k in keep}
                for r in G.scale_rows(guideline, scales[0], threads=1, pairs=pairs, size=size)]
    return out
