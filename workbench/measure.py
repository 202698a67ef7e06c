"""Honest measurement: accuracy, parameters, nonzeros, real bytes, MACs and latency.

- bytes are ``len(codec.encode(model))``, the real file, with its gzip size beside it;
- dense MACs count every multiply-accumulate of Conv2d and Linear layers, the same operations
  ``torch.utils.flop_counter`` counts (it reports FLOPs = 2 x MACs);
- effective MACs skip the multiplications by a zero weight (each conv weight is used once per
  output position, each linear weight once per row);
- latency is the median of ``torch.utils.benchmark`` at a stated batch size and thread count,
  measured on the decoded file (what would be deployed).
"""
from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils import benchmark

from . import codec
from .data import Dataset
from .train import evaluate


def input_shape_of(model: nn.Module, data: Dataset | None = None) -> tuple[int, ...]:
    if data is not None:
        return data.shape
    if hasattr(model, "input_shape"):
        return tuple(model.input_shape)
    raise ValueError("pass data, or give the model an input_shape attribute (C, H, W)")


@torch.no_grad()
def probe(model: nn.Module, input_shape: tuple[int, ...], hooks: dict[str, callable]) -> None:
    """One forward pass of a zero image in eval mode with ``hooks`` (module name ->
    ``hook(module, inputs, output, name)``) attached; hooks and mode are restored after."""
    handles = [model.get_submodule(name).register_forward_hook(
        lambda m, i, o, name=name, hook=hook: hook(m, i, o, name)) for name, hook in hooks.items()]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


@torch.no_grad()
def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    """One row per Conv2d / Linear layer: params, nonzeros, dense and effective MACs per image.

    A module with a ``mac_counts(inputs, output)`` method (e.g. a Winograd convolution) counts
    itself and everything inside it.
    """
    rows = []

    def count(module, inputs, output, name):
        weight = module.weight       # with pruning or parametrization: the effective weight
        uses = output[0].numel() // output.shape[1] if isinstance(module, nn.Conv2d) else \
            output[0].numel() // module.out_features
        rows.append({"layer": name, "type": type(module).__name__,
                     "shape": "x".join(map(str, weight.shape)),
                     "params": weight.numel(), "nonzeros": int(weight.count_nonzero()),
                     "macs": weight.numel() * uses,
                     "effective_macs": int(weight.count_nonzero()) * uses})

    def count_custom(module, inputs, output, name):
        rows.append({"layer": name, "type": type(module).__name__, "shape": "-",
                     **module.mac_counts(inputs, output)})

    custom, hooks = [], {}
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in custom):
            continue                  # counted by the custom module that contains it
        if hasattr(module, "mac_counts"):
            custom.append(name)
            hooks[name] = count_custom
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks[name] = count
    probe(model, input_shape, hooks)
    return rows


@torch.no_grad()
def latency_ms(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1,
               threads: int | None = None, min_run_time: float = 0.3) -> float:
    """Median wall time of one forward pass (ms) at ``batch`` on ``threads`` threads.

    ``threads`` defaults to torch's current setting. On a machine whose cores are busy with
    other work, one thread gives steadier figures than several waiting for each other.
    """
    model.eval()
    x = torch.randn(batch, *input_shape)
    timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x},
                            num_threads=threads or torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, nonzero parameters) of the plain network (masks folded in)."""
    state = codec.plain_state_dict(model)
    names = {n.removesuffix("_orig") for n, _ in model.named_parameters()}
    # a parametrized weight (quantizers that are not folded) counts as the tensor it computes
    names |= {f"{path}.{name}".lstrip(".") for path, m in model.named_modules()
              for name in getattr(m, "parametrizations", {})}
    tensors = [t for n, t in state.items() if n in names]
    return sum(t.numel() for t in tensors), sum(int(t.count_nonzero()) for t in tensors)


@dataclass
class Report:
    """The figures of one model. ``print(report)`` shows a table; ``a.compare(b)`` ratios."""
    name: str
    accuracy: float | None
    params: int
    nonzeros: int
    bytes: int
    gzip_bytes: int
    macs: int
    effective_macs: int
    latency_ms_b1: float | None = None
    latency_ms_b64: float | None = None
    threads: int = field(default_factory=torch.get_num_threads)
    test_images: int | None = None
    layers: list[dict] = field(default_factory=list, repr=False)

    def row(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "layers"}

    def compare(self, base: "Report") -> dict:
        """How many times smaller / fewer / faster than ``base`` (>1 means better)."""
        def ratio(a, b):
            return round(b / a, 2) if a and b else None
        return {"name": f"{self.name} vs {base.name}",
                "accuracy_change": None if self.accuracy is None or base.accuracy is None
                else round(self.accuracy - base.accuracy, 4),
                "nonzeros_x": ratio(self.nonzeros, base.nonzeros),
                "bytes_x": ratio(self.bytes, base.bytes),
                "gzip_bytes_x": ratio(self.gzip_bytes, base.gzip_bytes),
                "effective_macs_x": ratio(self.effective_macs, base.macs),
                "latency_b1_x": ratio(self.latency_ms_b1, base.latency_ms_b1),
                "latency_b64_x": ratio(self.latency_ms_b64, base.latency_ms_b64)}

    def __str__(self) -> str:
        return format_table([self.row()])


def report(model: nn.Module, data: Dataset | None = None, name: str | None = None,
           latency: bool = True, threads: int | None = None) -> Report:
    """Measure ``model``: accuracy on ``data`` (if given), sizes, MACs, latency.

    Latency is timed on ``threads`` threads (default: torch's current setting), recorded in
    the report.
    """
    threads = threads or torch.get_num_threads()
    shape = input_shape_of(model, data)
    blob = codec.encode(model)
    # Latency is that of the network as shipped: the decoded file, masks folded into plain
    # weights (a masked module would also pay for its weight * mask on every call).
    shipped = codec.decode(blob) if latency else None
    layers = layer_table(model, shape)
    params, nonzeros = count_params(model)
    return Report(
        name=name or type(model).__name__,
        accuracy=None if data is None else round(evaluate(model, data), 4),
        params=params, nonzeros=nonzeros, bytes=len(blob), gzip_bytes=codec.gzip_size(blob),
        macs=sum(r["macs"] for r in layers),
        effective_macs=sum(r["effective_macs"] for r in layers),
        latency_ms_b1=round(latency_ms(shipped, shape, 1, threads), 4) if latency else None,
        latency_ms_b64=round(latency_ms(shipped, shape, 64, threads), 4) if latency else None,
        threads=threads,
        test_images=None if data is None else len(data),
        layers=layers)


# Energy of one 32-bit operation in a 45 nm process, in picojoules: Horowitz, "Computing's
# energy problem", ISSCC 2014, as tabulated by Han et al. 2015 (Table 1 / Figure 1).
ENERGY_PJ_45NM = {
    "int_add": 0.1, "float_add": 0.9, "register": 1.0, "int_mult": 3.1,
    "float_mult": 3.7, "sram": 5.0, "dram": 640.0,
}


def energy_estimate(r: Report, memory: str = "dram") -> dict:
    """A rough energy bill (microjoules) of one fp32 inference, memory beside arithmetic.

    Assumptions, stated because they matter: every nonzero weight is read once from
    ``memory`` ("dram" or "sram") as a 32-bit word (no reuse across images); every effective
    MAC is one float multiply and one float add; activations and indices are ignored.
    """
    if memory not in ("dram", "sram"):
        raise ValueError(f"memory={memory!r}; allowed: 'dram', 'sram'")
    memory_uj = r.nonzeros * ENERGY_PJ_45NM[memory] / 1e6
    compute_uj = r.effective_macs * (ENERGY_PJ_45NM["float_mult"]
                                     + ENERGY_PJ_45NM["float_add"]) / 1e6
    return {"memory": memory, "memory_uj": memory_uj, "compute_uj": compute_uj,
            "memory_over_compute": memory_uj / compute_uj if compute_uj else None}


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and abs(value) >= 10000:
        return f"{value:,}"
    return str(value)


def format_table(rows: list[dict]) -> str:
    """A Markdown table of dicts (columns from the first row), readable in a terminal too."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda items: "| " + " | ".join(s.ljust(w) for s, w in zip(items, widths)) + " |"
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def html_table(rows: list[dict]) -> str:
    """The same table as ``format_table``, as HTML (notebooks, the survey page)."""
    if not rows:
        return "<p>(no rows)</p>"
    cell = lambda v, tag: f"<{tag}>{html.escape(_cell(v))}</{tag}>"
    head = "".join(cell(c, "th") for c in rows[0])
    body = "".join("<tr>" + "".join(cell(r.get(c), "td") for c in rows[0]) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
