"""Lesson 08: compression as a search (the space of knobs, the samplers' trials drawn as they come
in, the byte budget and the Pareto front, energy per inference, workers sharing a study, the
search beside Deep Compression's table).

A trial is shown as a *record*: ``{"trial", "state", <its knobs>, "accuracy", "bytes",
"energy", "worker"}``, read from the Optuna trial (``record_of``); accuracy is the validation
accuracy the search measured, None for a trial pruned before it was measured.
"""
from __future__ import annotations

import dataclasses
import math
import time

import ipywidgets as w
import numpy as np
import optuna
from matplotlib.figure import Figure

from ..measure import html_table
from ..widgets import figure_image, png_of, scrolled

MARGINS = {"left": 0.07, "right": 0.97, "bottom": 0.17, "top": 0.9, "wspace": 0.28}


# ------------------------------------------------------------------ the space of knobs


def space_rows(method_id: str, fixed: dict | None = None, space: dict | None = None) -> list[dict]:
    """What a search of ``method_id`` sets: each knob of ``space`` (default: the method's own
    sliders, ``search.space.default_space``), its range or choices, how it is sampled and its
    number of grid points (None for a continuous range)."""
    from ..domains import Invalid
    from ..search import space as spaces
    fixed = dict(fixed or {})
    space = space or spaces.default_space(method_id, fixed)
    rows = []
    for key, spec in space.items():
        spec = spaces.normalized_spec(key, spec)
        if not spaces.is_range(spec):
            kind = "one of the choices"
        elif spaces.is_whole(method_id, fixed, key, spec):
            kind = "whole numbers"
        else:
            kind = "real numbers" + (" on a grid" if len(spec) == 3 else "")
        try:
            points = len(spaces.grid_values(method_id, fixed, key, spec))
        except Invalid:
            points = None
        rows.append({"method": method_id, "knob": key, "range or choices": str(spec),
                     "sampled as": kind, "grid points": points})
    return rows


# ------------------------------------------------------------------ trials as records


def record_of(trial, state: str | None = None) -> dict:
    """One trial (a live ``optuna.Trial`` or a stored ``FrozenTrial``) as a record."""
    attrs = trial.user_attrs
    state = state or trial.state.name.lower()
    return {"trial": trial.number, "state": state, **trial.params,
            "accuracy": attrs.get("accuracy"), "bytes": attrs.get("bytes"),
            "energy": attrs.get("energy"), "worker": attrs.get("worker")}


def trial_records(study) -> list[dict]:
    """Every trial of ``study`` as a record, in the order they were started."""
    return [record_of(t) for t in sorted(study.get_trials(deepcopy=False),
                                         key=lambda t: t.number)]


def fits(record: dict, budget: float) -> bool:
    """A complete trial whose file is within ``budget`` bytes."""
    return record["state"] == "complete" and record["bytes"] is not None \
        and record["bytes"] <= budget


def best_so_far(records: list[dict], budget: float = math.inf) -> list:
    """After each trial: the best validation accuracy of the complete trials within budget so
    far (None while there is none)."""
    best, out = None, []
    for r in records:
        if fits(r, budget):
            best = r["accuracy"] if best is None else max(best, r["accuracy"])
        out.append(best)
    return out


def watched(search, report):
    """A copy of ``search`` that calls ``report(record)`` for every trial as soon as it is
    measured (or pruned, or refused), before the search goes on: the way a notebook draws the
    trials as they come in. The search itself is unchanged (same sampler, same trials)."""
    copy = dataclasses.replace(search)
    measure = copy.trial            # the bound method of the copy

    def trial(t, *args):
        try:
            values, out = measure(t, *args)
        except optuna.TrialPruned:
            report(record_of(t, "pruned"))
            raise
        except ValueError:
            report(record_of(t, "fail"))
            raise
        report(record_of(t, "complete"))
        return values, out

    copy.trial = trial              # shadows the method on this instance only
    return copy


def run_watched(searches: dict, model, data, explorer=None) -> dict:
    """Run each search of ``searches`` (name -> search) on ``model`` with ``data``, in an
    in-memory study named after it (Hyperband's brackets depend on the name), drawing every
    trial in ``explorer`` (``explore_trials``' widget) as it comes in. Returns name -> (the
    network the search returned, its study); the network is None when no trial fitted the
    budget."""
    out = {}
    for name, search in searches.items():
        shown = watched(search, lambda r, name=name: explorer.add(name, r)) if explorer \
            else search
        study = search.open(None, name)
        try:
            best, _ = shown.run(model, data, study)
        except ValueError as err:
            if "no trial's file fits" not in str(err):
                raise
            best = None
        out[name] = (best, study)
    if explorer is not None:
        explorer.finish()
    return out


# ------------------------------------------------------------------ the trials widget


def _knob_axis(ax, name: str, values: list) -> None:
    """The y axis of a knob: log 2 for whole numbers spanning a factor of 8 or more (k),
    whole-number ticks for other whole numbers (bits)."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    whole = bool(numbers) and all(isinstance(v, int) for v in numbers)
    if numbers and min(numbers) > 0 and max(numbers) / min(numbers) >= 8:
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(ScalarFormatter())
    elif whole:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(name)


def _plain_log(axis, unit: float = 1.0, suffix: str = "", subs=(1.0, 2.0, 5.0)) -> None:
    """A log axis labelled 1, 2, 5, 10, 20, 50 ... (``subs`` of each power of ten, divided by
    ``unit``), no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / unit:g}{suffix}"))
    axis.set_minor_formatter(NullFormatter())


class TrialsExplorer:
    """The state behind ``explore_trials``: the records of each search (added live by
    ``run_watched``), a menu over the searches and a slider over their trials, one figure
    redrawn in place. Left: the best validation accuracy within budget after each trial, for
    every search (the chosen one bold, the slider's trial as a line, the ``threshold`` dashed);
    right: the chosen search's first n proposals in its knob space, coloured by validation
    accuracy when complete and within budget, grey when over it, crosses when pruned."""

    figsize, dpi = (10, 3.6), 96

    def __init__(self, searches: dict, dense_bytes: int, threshold: float | None = None,
                 refresh_s: float = 0.3):
        self.names = list(searches)
        self.knobs = {n: list(s.search_space()) for n, s in searches.items()}
        self.budgets = {n: (s.byte_budget * dense_bytes if s.byte_budget else math.inf)
                        for n, s in searches.items()}
        self.records: dict[str, list[dict]] = {n: [] for n in self.names}
        self.threshold, self.refresh_s = threshold, refresh_s
        self.menu = w.Dropdown(options=self.names, value=self.names[0], description="search")
        self.slider = w.IntSlider(value=0, min=0, max=0, description="trials",
                                  continuous_update=True)
        self.fig = Figure(figsize=self.figsize, dpi=self.dpi)
        self.plot, self.table = figure_image(self.fig), w.HTML()
        self.table.add_class("wb-table")
        self.live, self.drawn_at, self.seconds = False, 0.0, []
        self.menu.observe(self.on_menu, names="value")
        self.slider.observe(lambda change: self.redraw(), names="value")

    # -- live: trials arrive
    def add(self, name: str, record: dict) -> None:
        self.live = True
        self.records[name].append(record)
        self.menu.value = name
        self.slider.max = len(self.records[name])
        self.slider.value = len(self.records[name])
        if time.perf_counter() - self.drawn_at >= self.refresh_s:
            self.draw(name, len(self.records[name]))

    def finish(self) -> None:
        """The searches are done: the controls replay them."""
        self.live = False
        self.redraw()

    # -- replay: the controls moved
    def on_menu(self, change) -> None:
        if self.live:
            return
        self.slider.max = len(self.records[change["new"]])
        self.slider.value = self.slider.max      # redraws (or not, if unchanged)
        self.redraw()

    def redraw(self) -> None:
        if not self.live:
            self.draw(self.menu.value, self.slider.value)

    def draw(self, name: str, n: int) -> None:
        start = time.perf_counter()
        shown = self.records[name][:n]
        self.fig.clear()
        # room on the right for the colour bar's labels
        left, right = self.fig.subplots(1, 2, gridspec_kw={**MARGINS, "right": 0.92})
        self.draw_progress(left, name, n)
        self.draw_space(right, name, shown)
        self.plot.value = png_of(self.fig)
        self.table.value = scrolled(html_table(self.rows(name, shown)))
        self.drawn_at = time.perf_counter()
        self.seconds.append(self.drawn_at - start)

    def draw_progress(self, ax, name: str, n: int) -> None:
        for i, other in enumerate(self.names):
            curve = best_so_far(self.records[other], self.budgets[other])
            if other == name:
                curve = curve[:n]
            ys = [np.nan if v is None else v for v in curve]
            ax.step(range(1, len(ys) + 1), ys, where="post", color=f"C{i}",
                    lw=2.2 if other == name else 1.0, label=other)
        if self.threshold is not None:
            ax.axhline(self.threshold, color="k", ls="--", lw=0.8, label="threshold")
        if n:
            ax.axvline(n, color="C3", ls=":", lw=0.8)
        ax.set_xlabel("trial")
        ax.set_ylabel("best val. accuracy within budget")
        ax.legend(fontsize=7, loc="lower right")

    def draw_space(self, ax, name: str, shown: list[dict]) -> None:
        knobs, budget = self.knobs[name], self.budgets[name]
        x_key = knobs[0]
        y_key = knobs[1] if len(knobs) > 1 else "accuracy"
        every = [r for rs in self.records.values() for r in rs if r["accuracy"] is not None]
        low = min((r["accuracy"] for r in every), default=0.0)
        high = max((r["accuracy"] for r in every), default=1.0)
        inside = [r for r in shown if fits(r, budget)]
        over = [r for r in shown if r["state"] == "complete" and not fits(r, budget)]
        stopped = [r for r in shown if r["state"] != "complete"]
        ys = lambda rs: [r[y_key] for r in rs]
        if inside:
            dots = ax.scatter([r[x_key] for r in inside], ys(inside), c=[r["accuracy"] for r in
                              inside], cmap="viridis", vmin=low, vmax=high, s=28,
                              label="within budget")
            self.fig.colorbar(dots, ax=ax, pad=0.01, fraction=0.05, format="%.4f").set_label(
                "val. accuracy", fontsize=7)
        if over:
            ax.scatter([r[x_key] for r in over], ys(over), facecolors="none",
                       edgecolors="0.5", s=28, label="over budget")
        if stopped:
            ax.scatter([r[x_key] for r in stopped], ys(stopped), marker="x", c="0.4", s=24,
                       label="pruned / failed")
        if shown:
            last = shown[-1]
            ax.scatter([last[x_key]], [last[y_key]], s=110, facecolors="none",
                       edgecolors="C3", lw=1.5)
        ax.set_xlabel(x_key)
        _knob_axis(ax, y_key, [r[y_key] for rs in self.records.values() for r in rs
                               if r.get(y_key) is not None])
        ax.set_title(f"{name}: the first {len(shown)} of {len(self.records[name])} trials "
                     f"(red ring: the last)", fontsize=9)
        if shown:
            ax.legend(fontsize=7, loc="best")

    def rows(self, name: str, shown: list[dict]) -> list[dict]:
        if not shown:
            return [{"search": name, "trials": 0}]
        best = best_so_far(shown, self.budgets[name])[-1]
        last = shown[-1]
        return [{"search": name, **{k: last[k] for k in ("trial", "state")},
                 **{k: last[k] for k in self.knobs[name]},
                 "val. accuracy": None if last["accuracy"] is None else round(last["accuracy"], 4),
                 "bytes": last["bytes"],
                 "best within budget so far": None if best is None else round(best, 4)}]


def explore_trials(searches: dict, dense_bytes: int, threshold: float | None = None):
    """A widget that draws the trials of ``searches`` (name -> search) as ``run_watched``
    runs them, then replays them: a menu picks the search, a slider how many of its trials
    are shown. Nothing is computed on a move. The widget has ``.explorer``."""
    explorer = TrialsExplorer(searches, dense_bytes, threshold)
    explorer.draw(explorer.names[0], 0)
    widget = w.VBox([w.HBox([explorer.menu, explorer.slider]), explorer.table, explorer.plot])
    widget.add_class("wb-explore")
    widget.explorer, widget.kwargs_widgets = explorer, [explorer.slider]
    return widget


# ------------------------------------------------------------------ samplers compared


def grid_oracle(search, model, data, seed: int | None = None) -> dict:
    """``bench.search_samplers.oracle`` for the task of ``search`` (a ``pipeline.hybrid``
    search of one objective, accuracy, over a space with a grid) at ``seed`` (default: the
    search's own, whose validation split it uses): every grid point applied once, the best
    validation accuracy within budget and the threshold, that less one point."""
    from ..bench import search_samplers as bench
    if search.method != bench.TASK:
        raise ValueError(f"grid_oracle: a search of {search.method!r}; allowed: {bench.TASK!r}")
    task = bench.Task("lesson 08", search.fixed, search.search_space(), (), search.trials,
                      None, search.eval_images)
    return bench.oracle(model, data, task, search.seed if seed is None else seed,
                        search.budget(model))


def race_rows(searches: dict, model, data, seeds, done: dict | None = None,
              oracles: dict | None = None) -> list[dict]:
    """Section 2's table: for each seed, the trials each search needed to reach the
    threshold of ``grid_oracle`` at the budget (``bench.search_samplers.trials_to_reach``).
    ``done`` (name -> study) holds studies already run at the searches' own seed, and
    ``oracles`` (seed -> ``grid_oracle``) oracles already computed; neither is redone."""
    from ..bench import search_samplers as bench
    oracles = dict(oracles or {})
    rows = []
    for seed in seeds:
        first = next(iter(searches.values()))
        found = oracles.get(seed) or grid_oracle(first, model, data, seed)
        budget = first.budget(model)
        for name, search in searches.items():
            if done and seed == search.seed and name in done:
                study = done[name]
            else:
                study = bench.run_search(dataclasses.replace(search, seed=seed), model, data,
                                         f"{name}-seed{seed}")
            records = trial_records(study)
            reach = bench.trials_to_reach(study, found["threshold"], budget)
            best = best_so_far(records, budget)[-1]
            rows.append({"seed": seed, "search": name, "id": search.id,
                         "trials": len(records),
                         "pruned": sum(r["state"] == "pruned" for r in records),
                         "threshold": found["threshold"],
                         "trials to reach it": reach if reach else f"not in {len(records)}",
                         "best within budget": None if best is None else round(best, 4)})
    return rows


# ------------------------------------------------------------------ the byte budget widget


def paper_point(method_id: str, model: str) -> dict | None:
    """The published result of ``method_id`` on zoo network ``model`` whose ratio counts bytes
    (``workbench.papers``): ratio, accuracy as a fraction, label, source; None if none."""
    from .. import papers
    fact = papers.pick(method_id, model)
    if fact is None or fact.zoo != model or fact.ratio_of != "bytes" \
            or fact.metric not in ("error", "accuracy"):
        return None
    accuracy = fact.value / 100 if fact.metric == "accuracy" else 1 - fact.value / 100
    # the label names the network and the result; who published it is in ``source``
    return {"x": fact.ratio, "accuracy": accuracy, "source": fact.source,
            "label": f"{fact.network}: {papers.paper_text(fact)}"}


class BudgetExplorer:
    """The state behind ``explore_budget``: one finished study, a slider over the byte
    budget (how many times smaller than the dense file) and one figure redrawn in place.
    Left: validation accuracy against bytes of every complete trial (coloured within the
    budget, grey over it), the study's Pareto front, the budget, the trial the search would
    return at that budget (``Search.best``: the smallest file within ``tolerance`` of the best
    accuracy) and the paper's point; right: the best validation accuracy within budget against
    the budget, over the slider's range (computed once)."""

    figsize, dpi = (10, 3.6), 96

    def __init__(self, search, study, dense_bytes: int, paper: dict | None = None,
                 low: float = 5.0, high: float = 100.0):
        self.search, self.study, self.dense, self.paper = search, study, dense_bytes, paper
        self.done = [r for r in trial_records(study) if r["state"] == "complete"]
        self.front = sorted((record_of(t) for t in study.best_trials), key=lambda r: r["bytes"])
        self.curve_x = np.geomspace(low, high, 120)
        self.curve_y = [max((r["accuracy"] for r in self.done if r["bytes"] <= dense_bytes / x),
                            default=np.nan) for x in self.curve_x]
        self.fig = Figure(figsize=self.figsize, dpi=self.dpi)
        self.plot, self.table = figure_image(self.fig), w.HTML()
        self.table.add_class("wb-table")
        self.trail: list[dict] = []
        self.seconds: list[float] = []

    def chosen(self, budget: float):
        """The trial the search returns at ``budget`` bytes (None: no file fits)."""
        try:
            return record_of(self.search.best(self.study, budget))
        except ValueError:
            return None

    def update(self, times_smaller: float) -> None:
        start = time.perf_counter()
        budget = self.dense / times_smaller
        chosen = self.chosen(budget)
        inside = [r for r in self.done if r["bytes"] <= budget]
        row = {"x smaller": round(times_smaller, 1), "budget bytes": round(budget),
               "trials within": f"{len(inside)} of {len(self.done)}",
               "best val. accuracy within": round(max(r["accuracy"] for r in inside), 4)
               if inside else None}
        if chosen:
            row.update({"returned: trial": chosen["trial"],
                        **{k: chosen[k] for k in self.search.search_space()},
                        "val. accuracy": round(chosen["accuracy"], 4), "bytes": chosen["bytes"],
                        "x": round(self.dense / chosen["bytes"], 1)})
        else:
            row["returned: trial"] = "none fits"
        self.trail.append(row)
        self.table.value = scrolled(html_table([row]))
        self.fig.clear()
        self.draw(*self.fig.subplots(1, 2, gridspec_kw=MARGINS), budget, times_smaller, chosen)
        self.plot.value = png_of(self.fig)
        self.seconds.append(time.perf_counter() - start)

    def draw(self, left, right, budget: float, times_smaller: float, chosen) -> None:
        inside = [r for r in self.done if r["bytes"] <= budget]
        over = [r for r in self.done if r["bytes"] > budget]
        left.scatter([r["bytes"] for r in over], [r["accuracy"] for r in over], s=14, c="0.75",
                     label="over budget")
        left.scatter([r["bytes"] for r in inside], [r["accuracy"] for r in inside], s=16,
                     c="C0", label="within budget")
        left.plot([r["bytes"] for r in self.front], [r["accuracy"] for r in self.front], "-",
                  c="C1", lw=1, label="Pareto front")
        left.axvline(budget, color="C3", ls="--", lw=1, label=f"budget: {times_smaller:.3g}x")
        if chosen:
            left.scatter([chosen["bytes"]], [chosen["accuracy"]], marker="*", s=160, c="C3",
                         zorder=5, label="returned")
        if self.paper:      # its bytes: the paper's ratio applied to our dense file
            label = (f"paper: {self.paper['x']:g}x at {100 * self.paper['accuracy']:.2f}% "
                     "(retrained)")
            for ax, where in ((left, self.dense / self.paper["x"]), (right, self.paper["x"])):
                ax.axvline(where, color="k", ls=":", lw=1)
                ax.axhline(self.paper["accuracy"], color="k", ls=":", lw=1, label=label)
        left.set_xscale("log")
        _plain_log(left.xaxis, 1000, " KB")
        left.set_xlabel("file (log)")
        left.set_ylabel("validation accuracy")
        left.legend(fontsize=7, loc="lower right")
        right.plot(self.curve_x, self.curve_y, "-", c="C0")
        current = max((r["accuracy"] for r in inside), default=np.nan)
        right.plot([times_smaller], [current], "o", c="C3", ms=7)
        right.set_xscale("log")
        _plain_log(right.xaxis)
        right.set_xlabel("budget: times smaller than the dense file (log)")
        right.set_ylabel("best val. accuracy within budget")
        right.legend(fontsize=7, loc="lower left")


def _slider_widget(explorer, slider):
    """One slider above an explorer's table and plot, each move redrawing them in place."""
    slider.observe(lambda change: explorer.update(change["new"]), names="value")
    explorer.update(slider.value)
    widget = w.VBox([slider, explorer.table, explorer.plot])
    widget.add_class("wb-explore")
    widget.explorer, widget.kwargs_widgets = explorer, [slider]
    return widget


def explore_budget(search, study, dense_bytes: int, paper: dict | None = None,
                   low: float = 5.0, high: float = 100.0, value: float | None = None):
    """A slider over the byte budget of a finished ``study`` of ``search``: which trials fit,
    the one the search would return, the paper's point (``paper_point``) as lines. Nothing
    is applied or trained on a move. The widget has ``.explorer``."""
    explorer = BudgetExplorer(search, study, dense_bytes, paper, low, high)
    start = value or (paper["x"] if paper else low)
    slider = w.FloatLogSlider(value=start, base=10, min=np.log10(low), max=np.log10(high),
                              step=0.01, description="x smaller", readout_format=".3g",
                              continuous_update=True)
    return _slider_widget(explorer, slider)


# ------------------------------------------------------------------ energy


OPERATIONS = (("float32_add", "32-bit float add"), ("float32_mult", "32-bit float multiply"),
              ("int8_add", "8-bit integer add"), ("int8_mult", "8-bit integer multiply"),
              ("sram_read32", "32-bit read from on-chip SRAM"),
              ("dram_read32", "32-bit read from off-chip DRAM"),
              ("binary_op", "1-bit multiply-accumulate (XNOR + popcount)"))


def operation_rows() -> list[dict]:
    """``cost.energy``'s table: energy per operation at 45 nm (``cost.PJ_45NM``), and how many
    32-bit float multiply-adds each costs."""
    from .. import cost
    mac = cost.FLOAT32_MULT_PJ + cost.FLOAT32_ADD_PJ
    source = {"binary_op": "assumption of cost.energy (one bit of an 8-bit add)",
              "int8_add": "Horowitz 2014 (Han et al.'s Figure 1 lists 32-bit operations only)",
              "int8_mult": "Horowitz 2014 (Han et al.'s Figure 1 lists 32-bit operations only)"}
    return [{"operation": label, "pJ": cost.PJ_45NM[key],
             "in float MACs": round(cost.PJ_45NM[key] / mac, 4),
             "source": source.get(key, "Horowitz 2014, as Han et al. 2015 (Fig. 1) quote it")}
            for key, label in OPERATIONS]


def energy_rows(reports: dict, sram_bytes: int | None = None) -> list[dict]:
    """The energy bill (``cost.energy``) of one inference of each network of ``reports``
    (name -> ``measure.report``) with ``sram_bytes`` of on-chip memory (default: cost's)."""
    from .. import cost
    knobs = {} if sram_bytes is None else {"sram_bytes": int(sram_bytes)}
    rows = []
    for name, r in reports.items():
        bill = cost.energy(r, **knobs)
        rows.append({"network": name, "file bytes": r.bytes, "weights read from": bill.memory,
                     "memory uJ": round(bill.memory_uj, 4), "compute uJ": round(bill.compute_uj, 4),
                     "total uJ": round(bill.energy_uj, 4),
                     "memory share": f"{bill.memory_uj / bill.energy_uj:.1%}",
                     "MACs charged": bill.float_macs + bill.int8_macs})
    return rows


class SramExplorer:
    """The state behind ``explore_sram``: the networks' reports, a slider over the on-chip
    memory and one figure redrawn in place. Left: each network's memory and arithmetic energy
    (log scale) at the slider's size; right: each network's total energy against the SRAM
    size (a step where its file starts to fit), the slider's size and ``mark`` as lines."""

    figsize, dpi = (10, 3.6), 96

    def __init__(self, reports: dict, mark: int | None = None, mark_label: str = "",
                 low_kb: float = 4, high_kb: float = 4096):
        from .. import cost
        self.reports, self.mark, self.mark_label = reports, mark, mark_label
        self.sizes = np.geomspace(low_kb * 1024, high_kb * 1024, 200)
        self.curves = {name: [cost.energy(r, sram_bytes=int(s)).energy_uj for s in self.sizes]
                       for name, r in reports.items()}
        self.fig = Figure(figsize=self.figsize, dpi=self.dpi)
        self.plot, self.table = figure_image(self.fig), w.HTML()
        self.table.add_class("wb-table")
        self.trail: list[dict] = []
        self.seconds: list[float] = []

    def update(self, sram_kb: float) -> None:
        start = time.perf_counter()
        rows = energy_rows(self.reports, round(sram_kb * 1024))
        self.trail.append({"sram_kb": sram_kb, "rows": rows})
        self.table.value = scrolled(html_table(rows))
        self.fig.clear()
        left, right = self.fig.subplots(1, 2, gridspec_kw={**MARGINS, "right": 0.8})
        names = [r["network"] for r in rows]
        at = np.arange(len(rows))
        left.bar(at - 0.2, [r["memory uJ"] for r in rows], 0.4, label="reading the weights")
        left.bar(at + 0.2, [r["compute uJ"] for r in rows], 0.4, label="arithmetic")
        left.set_xticks(at, names, fontsize=7, rotation=12)
        left.set_yscale("log")
        left.set_ylabel("uJ per inference (log)")
        left.set_title(f"on-chip SRAM: {sram_kb:,.0f} KB", fontsize=9)
        left.legend(fontsize=7)
        for i, (name, curve) in enumerate(self.curves.items()):
            right.plot(self.sizes / 1024, curve, c=f"C{i}", label=name)
        right.axvline(sram_kb, color="C3", ls="--", lw=1)
        if self.mark:
            right.axvline(self.mark / 1024, color="k", ls=":", lw=1, label=self.mark_label)
        right.set_xscale("log")
        _plain_log(right.xaxis, subs=(1.0,))
        right.set_yscale("log")
        right.set_xlabel("on-chip SRAM (KB, log)")
        right.set_ylabel("uJ per inference (log)")
        right.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        self.plot.value = png_of(self.fig)
        self.seconds.append(time.perf_counter() - start)


def explore_sram(reports: dict, value_kb: float | None = None, mark: int | None = None,
                 mark_label: str = ""):
    """A slider over the on-chip memory of ``cost.energy`` (KB, log scale; it starts at
    ``value_kb``, by default cost's own ``SRAM_BYTES``) and the energy bill of each network of
    ``reports`` (name -> ``measure.report``): which files fit, what reading them costs. Nothing
    is applied on a move. The widget has ``.explorer``."""
    from .. import cost
    value_kb = cost.SRAM_BYTES / 1024 if value_kb is None else value_kb
    explorer = SramExplorer(reports, mark, mark_label)
    low, high = explorer.sizes[0] / 1024, explorer.sizes[-1] / 1024
    slider = w.FloatLogSlider(value=value_kb, base=2, min=np.log2(low), max=np.log2(high),
                              step=0.25, description="SRAM KB", readout_format=".4g",
                              continuous_update=True)
    return _slider_widget(explorer, slider)


def energy_panels(axes, study, knob: str, sram_bytes: int) -> None:
    """A study whose trials recorded their energy: left, energy per inference (log) against
    ``knob``, on-chip files in one colour; right, validation accuracy against energy with
    the study's Pareto front."""
    left, right = axes
    done = [r for r in trial_records(study) if r["state"] == "complete"]
    chip = [r for r in done if r["bytes"] <= sram_bytes]
    dram = [r for r in done if r["bytes"] > sram_bytes]
    for rows, colour, label in ((dram, "C3", f"file > {sram_bytes // 1024} KB: DRAM"),
                                (chip, "C2", f"file <= {sram_bytes // 1024} KB: SRAM")):
        left.scatter([r[knob] for r in rows], [r["energy"] for r in rows], s=16, c=colour,
                     label=label)
        right.scatter([r["energy"] for r in rows], [r["accuracy"] for r in rows], s=16,
                      c=colour, label=label)
    front = sorted((record_of(t) for t in study.best_trials), key=lambda r: r["energy"])
    right.plot([r["energy"] for r in front], [r["accuracy"] for r in front], "-", c="C1",
               lw=1, label="Pareto front")
    left.set_yscale("log")
    left.set_xlabel(knob)
    left.set_ylabel("uJ per inference (log)")
    left.legend(fontsize=7)
    right.set_xscale("log")
    right.set_xlabel("uJ per inference (log)")
    right.set_ylabel("validation accuracy")
    right.legend(fontsize=7, loc="lower right")


# ------------------------------------------------------------------ workers


def two_workers(trials: int, smoke: bool) -> dict:
    """``bench.search_samplers``' worker processes on one study in a journal file of a
    temporary folder (removed after): two ``python -m workbench search ... --worker K``
    started together. Returns the command of worker 0 (as one would type it), the wall
    seconds, the trials' own span and the study's records."""
    import shlex
    import tempfile
    from pathlib import Path

    from ..bench import search_samplers as bench
    from ..search import open_storage
    with tempfile.TemporaryDirectory(prefix="lesson08-") as tmp:
        folder = Path(tmp)
        wall = bench.timed_workers(2, folder, "lesson08", trials, smoke)
        span, _ = bench.study_span(folder, "lesson08", trials)
        study = optuna.load_study(study_name="lesson08",
                                  storage=open_storage(folder / "study.journal"))
        records = trial_records(study)
        command = bench.worker_command(0, Path("search/study.journal"), "lesson08",
                                       Path("search"), trials, smoke)
    command = ["python", *command[1:]]
    return {"command": shlex.join(command), "wall_s": wall, "span_s": span, "records": records}


# ------------------------------------------------------------------ beside the paper


def why_stopped(trial, budget: float) -> str:
    """Why a trial of a bandit study is not complete, from what it recorded: its file predicted
    over ``budget`` before training (no epochs), Hyperband after some epochs, or its real file
    over the budget after training (it recorded its bytes)."""
    if trial.state.name == "COMPLETE":
        return "-"
    if trial.state.name != "PRUNED":
        return trial.user_attrs.get("error", trial.state.name.lower())
    epochs = len(trial.intermediate_values)
    if "bytes" in trial.user_attrs and trial.user_attrs["bytes"] > budget:
        return "trained, then its file was over the budget"
    if not epochs and trial.user_attrs.get("predicted_bytes", 0) > budget:
        return "file predicted over the budget: never trained"
    return f"stopped by Hyperband after {epochs} epoch{'s' if epochs != 1 else ''}"


def bandit_rows(study, budget: float) -> list[dict]:
    """Each trial of a bandit study: its knobs, the file the bandit predicted before training
    (the settings applied without training), the epochs it trained (its reports), its
    validation accuracy and real file when it finished, and why it stopped (``why_stopped``)."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        r = record_of(t)
        rows.append({"trial": r["trial"], **t.params,
                     "predicted bytes": t.user_attrs.get("predicted_bytes"),
                     "epochs trained": len(t.intermediate_values),
                     "val. accuracy": None if r["accuracy"] is None else round(r["accuracy"], 4),
                     "bytes": r["bytes"], "state": r["state"], "why": why_stopped(t, budget)})
    return rows


def hyperband_panel(ax, study, budget: float) -> None:
    """Validation accuracy reported after each training epoch of every trial of a bandit
    study: complete trials in blue, those Hyperband stopped in grey (their line ends where it
    stopped them), those stopped for their file after training dashed."""
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        steps = sorted(t.intermediate_values.items())
        if not steps:
            continue
        why = why_stopped(t, budget)
        style = {"-": ("o-", "C0"), "trained, then its file was over the budget": ("s--", "C1")
                 }.get(why, ("x-", "0.6"))
        ax.plot([s for s, _ in steps], [v for _, v in steps], style[0], c=style[1], ms=3, lw=0.8)
    ax.plot([], [], "o-", c="C0", label="complete")
    ax.plot([], [], "x-", c="0.6", label="stopped by Hyperband")
    ax.plot([], [], "s--", c="C1", label="trained, file over budget")
    ax.set_xlabel("training epochs so far (pruning rounds, then k-means)")
    ax.set_ylabel("validation accuracy")
    ax.legend(fontsize=7)


def deep_compression_rows(model_name: str, base_report, ours_report, trial: dict, settings: str,
                          val_accuracy: float) -> list[dict]:
    """Han et al. 2016's total row for ``model_name`` (``reproduce.PAPER``: weights, share
    kept, bits, KB before and after, error before and after) beside the network a search
    returned (``ours_report``, against ``base_report``; both on the same test images)."""
    from ..reproduce import PAPER, PAPER_BITS
    paper = PAPER[model_name]
    total = paper["layers"][-1]
    fc_bits = PAPER_BITS[model_name][0]
    rows = [{"": "Han et al. 2016 (Tables 2-3, total row)", "weights": f"{total[1]:,}",
             "weights kept": f"{total[2]}%", "fc bits": fc_bits,
             "dense -> compressed": f"{paper['kb'][0]} KB -> {paper['kb'][1]} KB",
             "x smaller": paper["x"],
             "test error": f"{paper['error'][0]}% -> {paper['error'][1]}%",
             "how": "pruned and retrained, k-means trained, Huffman; settings by hand"}]
    kept = ours_report.nonzeros / ours_report.params
    rows.append({"": "ours: the search's network", "weights": f"{ours_report.params:,}",
                 "weights kept": f"{100 * kept:.1f}%", "fc bits": trial.get("fc_bits"),
                 "dense -> compressed": f"{base_report.bytes / 1000:,.0f} KB -> "
                                        f"{ours_report.bytes / 1000:,.1f} KB",
                 "x smaller": round(base_report.bytes / ours_report.bytes, 1),
                 "test error": f"{100 * (1 - base_report.accuracy):.2f}% -> "
                               f"{100 * (1 - ours_report.accuracy):.2f}%",
                 "how": f"{settings}; validation accuracy {100 * val_accuracy:.2f}%"})
    return rows
