"""Honest measurement: accuracy, parameters, nonzeros, real bytes, MACs and latency.

- bytes are ``len(codec.encode(model))``, the real file, with its gzip size beside it;
- dense MACs count every multiply-accumulate of Conv2d and Linear layers, the same operations
  ``torch.utils.flop_counter`` counts (it reports FLOPs = 2 x MACs);
- effective MACs skip the multiplications by a zero weight (each conv weight is used once per
  output position, each linear weight once per row);
- operations by precision (binary and ternary networks), per image, split the same MACs:

  * ``binary_ops``: 1-bit x 1-bit multiply-accumulates (an XNOR and a popcount), those of a
    Conv2d / Linear whose weight is {-a_c, +a_c} in each output channel (or one a per layer)
    AND whose inputs are all -1 or +1 on the images measured (a forward hook looks at the real
    inputs: ``PRECISION_IMAGES`` images of the data given to ``report``, else the zero image of
    ``probe``);
  * ``add_ops``: additions and subtractions that replace the multiplications of a layer with
    binary weights and real inputs (every MAC), or with ternary weights {-n_c, 0, +p_c} (the
    nonzero weights' MACs only, whatever the inputs);
  * ``float_macs``: the MACs of every other layer (dense, as ``macs``);
  * ``ops`` = binary_ops / 64 + float_macs, the convention of Bi-Real Net (Liu et al. 2018)
    and ReActNet (Liu et al. 2020): 64 binary operations in one 64-bit instruction. The
    formula has no term for additions: ``add_ops`` stand beside it, not in it.

  Not counted, as in those papers: scales and their products (each output channel's alpha,
  XNOR-Net's K, HORQ's betas and the sum of its beta-scaled terms), batch norm, the sign of the
  activations.

  ``macs`` is the same number for a layer whatever its precision: the multiply-accumulates of
  the float layer (each weight once per output position), so a binarized network reports the
  macs of its float self. The figures by precision are the work done, and for each row

      float_macs + add_ops + binary_ops / terms = macs - (MACs at zero weights that additions skip)

  with ``terms`` = 1 except in a layer that computes its MACs on several binary terms of its
  input (HORQ of order r: r x macs binary ops, ``terms`` = r); the last term is nonzero only
  where additions stand for a ternary or sparse {-1, 0, +1} weight (TTQ, LBC's anchors), which
  skip their zeros (``effective_macs``).

  A module may count itself: ``ops(inputs, output) -> dict`` with the keys ``float_macs``,
  ``binary_ops``, ``add_ops`` and optionally ``terms`` (per image; it gets the forward hook's
  ``inputs`` tuple and ``output``, of a batch of one or more images). ``layer_table`` then
  takes those figures from it and counts nothing inside it; its ``macs`` and
  ``effective_macs`` come from its ``mac_counts`` (which a module with ``ops`` must have: the
  MACs of the float layers it computes), else from the Conv2d / Linear count if it is one;
- energy per inference (``energy_uj``, split into memory and arithmetic) is ``cost.Energy``'s
  estimate from a 45 nm per-operation table (``workbench.cost`` says what it charges); the
  layer rows of ``report`` carry what it needs (each weight's format in the file, int8 or not);
- latency is the warm median over blocks of calls (``timing.time_model``) at a stated batch size
  and thread count, measured on the decoded file (what would be deployed), with the machine's load beside
  it; how much faster one network runs than another is measured by timing the two interleaved,
  with the spread of the ratio (``compare_latency``, ``report(..., latency_vs=base)``, and
  ``workbench.timing``, which says why).
"""
from __future__ import annotations

import html
import inspect
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from . import codec, cost, timing
from .codec.binary import weight_structure
from .data import Dataset
from .train import evaluate


def input_shape_of(model: nn.Module, data: Dataset | None = None) -> tuple[int, ...]:
    if data is not None:
        return data.shape
    if hasattr(model, "input_shape"):
        return tuple(model.input_shape)
    raise ValueError("pass data, or give the model an input_shape attribute (C, H, W)")


# One forward pass of a zero image with hooks attached (kept importable from here).
from .hooks import hooked, probe  # noqa: E402


OPS_KEYS = ("float_macs", "binary_ops", "add_ops")
PRECISION_IMAGES = 8      # images on which report() looks at the layers' inputs


def _counts_itself(module: nn.Module) -> bool:
    return hasattr(module, "mac_counts") or inspect.ismethod(getattr(module, "ops", None))


def _inputs_matter(model: nn.Module) -> bool:
    return any(inspect.ismethod(getattr(m, "ops", None)) or (
        isinstance(m, (nn.Conv2d, nn.Linear)) and weight_structure(m.weight) == "signs")
        for m in model.modules())


def _is_pm_one(x: torch.Tensor) -> bool:
    return x.is_floating_point() and bool(((x == 1) | (x == -1)).all())


def _layer_counts(module: nn.Module, output: torch.Tensor) -> dict:
    weight = module.weight           # with pruning or parametrization: the effective weight
    uses = output[0].numel() // output.shape[1] if isinstance(module, nn.Conv2d) else \
        output[0].numel() // module.out_features
    nonzeros = int(weight.count_nonzero())
    return {"shape": "x".join(map(str, weight.shape)), "params": weight.numel(),
            "nonzeros": nonzeros, "macs": weight.numel() * uses,
            "effective_macs": nonzeros * uses}


def _precision(module: nn.Module, row: dict, binary_inputs: bool) -> dict:
    """The MACs of a Conv2d / Linear row split by precision (see the module docstring)."""
    kind = weight_structure(module.weight.detach())
    if kind == "signs" and binary_inputs:
        return {"float_macs": 0, "binary_ops": row["macs"], "add_ops": 0}
    if kind == "signs":
        return {"float_macs": 0, "binary_ops": 0, "add_ops": row["macs"]}
    if kind == "ternary":
        return {"float_macs": 0, "binary_ops": 0, "add_ops": row["effective_macs"]}
    return {"float_macs": row["macs"], "binary_ops": 0, "add_ops": 0}


@torch.no_grad()
def layer_table(model: nn.Module, input_shape: tuple[int, ...],
                inputs: torch.Tensor | None = None) -> list[dict]:
    """One row per Conv2d / Linear layer: params, nonzeros, dense and effective MACs per image,
    and the same MACs by precision: float_macs, binary_ops, add_ops (module docstring).

    ``inputs``: a batch of real images, to see which layers receive only -1 and +1 (default:
    one zero image). A module with a ``mac_counts(inputs, output)`` method (e.g. a Winograd
    convolution) or an ``ops(inputs, output)`` method counts itself and everything inside it.
    """
    rows, binary_inputs = [], {}

    def count(module, inputs, output, name):
        # one forward pass; a module called twice in it is counted twice, as torch counts
        binary_inputs[name] = binary_inputs.get(name, True) and _is_pm_one(inputs[0])
        if hasattr(module, "mac_counts"):
            row = {"shape": "-", **module.mac_counts(inputs, output)}
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            row = _layer_counts(module, output)
        else:
            row = {"shape": "-"}
        if inspect.ismethod(getattr(module, "ops", None)):
            counted = module.ops(inputs, output)
            row.update({key: int(counted.get(key, 0)) for key in OPS_KEYS},
                       terms=int(counted.get("terms", 1)))
            if "macs" not in row:
                raise TypeError(f"{type(module).__name__} counts its ops() but has no "
                                "mac_counts(): its macs would mean something else (measure)")
        rows.append({"layer": name, "type": type(module).__name__, **row})

    custom, hooks = [], {}
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in custom):
            continue                  # counted by the custom module that contains it
        if _counts_itself(module):
            custom.append(name)
            hooks[name] = count
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks[name] = count
    if inputs is None:
        probe(model, input_shape, hooks)
    else:
        with hooked(model, hooks):
            model(inputs)
    for row in rows:
        name = row["layer"]
        module = model.get_submodule(name)
        if "float_macs" in row:                     # it said so itself (ops)
            continue
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not hasattr(module, "mac_counts"):
            row.update(_precision(module, row, binary_inputs[name]), terms=1)
        else:                                       # mac_counts only (Winograd): float
            row.update(float_macs=row["macs"], binary_ops=0, add_ops=0, terms=1)
    return rows


def latency_ms(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1,
               threads: int | None = None, min_run_time: float = 0.3) -> float:
    """Median wall time of one warm forward pass (ms) at ``batch`` on ``threads`` threads
    (``timing.time_model``: the first calls are not counted).

    ``threads`` defaults to torch's current setting. On a machine whose cores are busy with
    other work, one thread gives steadier figures than several waiting for each other. To say
    how much faster one network is than another, do not divide two of these (each is taken at
    its own moment): use ``compare_latency``.
    """
    return timing.time_model(model, input_shape, batch, threads, min_run_time).median_ms


def compare_latency(model: nn.Module, base: nn.Module, input_shape: tuple[int, ...] | None = None,
                    batch: int = 64, threads: int | None = None, **options) -> timing.Comparison:
    """How many times faster ``model`` runs than ``base``, both as shipped (decoded from their
    files), timed interleaved with ``timing.compare`` (``options``: pairs, block_time, warmup);
    ``.display`` says "no measurable change" when the spread of the ratio includes 1."""
    shape = input_shape or input_shape_of(model)
    return timing.compare(shipped(model), shipped(base), shape, batch,
                          threads or torch.get_num_threads(), **options)


def shipped(model: nn.Module) -> nn.Module:
    """The network as deployed: decoded from its file, masks folded into plain weights (a
    masked module would also pay for its weight * mask on every call)."""
    return codec.decode(codec.encode(model))


def layer_signature(model: nn.Module) -> list[tuple]:
    """What decides which kernels a network runs: every module's name, class, ``config`` and
    settings (``extra_repr``: stride, padding, groups ...), and the shape, dtype and layout of
    its own parameters and buffers (not their values: a dense kernel costs the same whatever
    numbers, zeros included, its weights hold). The config counts because a constructor
    argument can change the computation and no shape (MobileNet's ``resolution``)."""
    own = lambda m: [(n, tuple(t.shape), str(t.dtype), str(t.layout)) for n, t in
                     [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]]
    from .models import Attachment        # state carried in the file, never called
    return [(name, type(m).__name__, getattr(m, "config", None), m.extra_repr(), own(m))
            for name, m in model.named_modules() if not isinstance(m, Attachment)]


def same_layers(model: nn.Module, base: nn.Module) -> bool:
    """True when ``model`` as shipped runs the very layers of ``base`` as shipped: timing one
    against the other could only measure noise."""
    return layer_signature(shipped(model)) == layer_signature(shipped(base))


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
    """The figures of one model. ``print(report)`` shows a table; ``a.compare(b)`` ratios.

    ``float_macs``, ``binary_ops``, ``add_ops`` and ``ops`` (= binary_ops / 64 + float_macs)
    split the operations by precision (module docstring); ``row()`` shows them only for a
    network that has binary or add operations (otherwise they repeat ``macs``), unless asked.
    Latencies are warm medians (ms) with their interquartile range, on ``threads`` threads, the
    machine's 1-minute ``load_avg`` beside them. ``latency_vs`` holds the interleaved
    comparisons (``timing.Comparison.row()`` by batch, "b1" and "b64") with the network given
    as ``report(..., latency_vs=base)``, the only latency ratios ``compare`` shows.
    """
    name: str
    accuracy: float | None
    params: int
    nonzeros: int
    bytes: int
    gzip_bytes: int
    macs: int
    effective_macs: int
    float_macs: int | None = None
    binary_ops: int | None = None
    add_ops: int | None = None
    ops: float | None = None
    latency_ms_b1: float | None = None
    latency_ms_b64: float | None = None
    latency_iqr_ms_b1: float | None = None
    latency_iqr_ms_b64: float | None = None
    # one inference's energy (microjoules), memory and arithmetic, and whether the file fits
    # in the on-chip SRAM: ``cost.Energy()`` at its defaults (``cost.energy`` for others)
    energy_uj: float | None = None
    energy_memory_uj: float | None = None
    energy_compute_uj: float | None = None
    weights_on_chip: bool | None = None
    threads: int = field(default_factory=torch.get_num_threads)
    load_avg: float | None = None
    test_images: int | None = None
    layers: list[dict] = field(default_factory=list, repr=False)
    latency_vs: dict = field(default_factory=dict, repr=False)

    @property
    def has_low_bit_ops(self) -> bool:
        """Whether some operations are binary or additions (a binary / ternary network)."""
        return bool(self.binary_ops or self.add_ops)

    def row(self, by_precision: bool | None = None) -> dict:
        """The figures as a dict; ``by_precision``: with float_macs, binary_ops, add_ops and
        ops (default: only when the network has binary or add operations, so that the tables
        of float networks do not grow four columns that repeat ``macs``)."""
        show = self.has_low_bit_ops if by_precision is None else by_precision
        hidden = {"layers", "latency_vs"} | (set() if show else {"float_macs", "binary_ops",
                                                                  "add_ops", "ops"})
        return {k: v for k, v in asdict(self).items() if k not in hidden}

    def compare(self, base: "Report") -> dict:
        """How many times smaller / fewer / faster than ``base`` (>1 means better).

        Latency appears only as measured by interleaving (``report(..., latency_vs=base)``):
        "latency_b1" / "latency_b64" say how much faster, with the interquartile range, or
        "no measurable change". Two latencies timed apart are never divided here.
        """
        def ratio(a, b):
            return round(b / a, 2) if a and b else None
        latency = {f"latency_{b}": c["display"] for b, c in self.latency_vs.items()}
        # by the Bi-Real / ReActNet count (binary_ops / 64 + float_macs), for low-bit networks
        ops = {"ops_x": ratio(self.ops, base.ops if base.ops is not None else base.macs)} \
            if self.has_low_bit_ops else {}
        if self.energy_uj is not None and base.energy_uj is not None:
            ops["energy_x"] = ratio(self.energy_uj, base.energy_uj)
        return {"name": f"{self.name} vs {base.name}",
                "accuracy_change": None if self.accuracy is None or base.accuracy is None
                else round(self.accuracy - base.accuracy, 4),
                "nonzeros_x": ratio(self.nonzeros, base.nonzeros),
                "bytes_x": ratio(self.bytes, base.bytes),
                "gzip_bytes_x": ratio(self.gzip_bytes, base.gzip_bytes),
                "effective_macs_x": ratio(self.effective_macs, base.macs), **ops, **latency}

    def __str__(self) -> str:
        return format_table([self.row()])


def report(model: nn.Module, data: Dataset | None = None, name: str | None = None,
           latency: bool = True, threads: int | None = None,
           latency_vs: nn.Module | None = None) -> Report:
    """Measure ``model``: accuracy on ``data`` (if given), sizes, MACs, latency.

    Latency is timed warm on ``threads`` threads (default: torch's current setting), recorded
    in the report with the machine's load. With ``latency_vs`` (a base network) the report also
    holds how much faster ``model`` runs than it, the two timed interleaved at batch 1 and 64
    (``compare_latency``), which ``compare`` shows.
    """
    threads = threads or torch.get_num_threads()
    shape = input_shape_of(model, data)
    blob = codec.encode(model)
    times, paired = {}, {}
    if latency:     # that of the network as shipped (see ``shipped``)
        deployed = codec.decode(blob)
        times = {b: timing.time_model(deployed, shape, b, threads) for b in (1, 64)}
        if latency_vs is not None:
            base = shipped(latency_vs)
            paired = {f"b{b}": timing.compare(deployed, base, shape, b, threads).row()
                      for b in (1, 64)}
    # the layers' real inputs on a few images (binary operations need inputs of -1 and +1),
    # when some layer's inputs matter: binary weights, or a module that counts itself
    sample = None
    if data is not None and _inputs_matter(model):
        sample = data.subset(min(PRECISION_IMAGES, len(data))).tensors()[0]
    layers = cost.annotate(layer_table(model, shape, sample), model, codec.read_header(blob))
    bill = cost.Energy().bill(layers, len(blob))
    params, nonzeros = count_params(model)
    ms = lambda b, key: round(getattr(times[b], key), 4) if b in times else None
    return Report(
        name=name or type(model).__name__,
        accuracy=None if data is None else round(evaluate(model, data), 4),
        params=params, nonzeros=nonzeros, bytes=len(blob), gzip_bytes=codec.gzip_size(blob),
        macs=sum(r["macs"] for r in layers),
        effective_macs=sum(r["effective_macs"] for r in layers),
        **{key: sum(r[key] for r in layers) for key in OPS_KEYS},
        ops=sum(r["binary_ops"] for r in layers) / 64 + sum(r["float_macs"] for r in layers),
        latency_ms_b1=ms(1, "median_ms"), latency_ms_b64=ms(64, "median_ms"),
        latency_iqr_ms_b1=ms(1, "iqr_ms"), latency_iqr_ms_b64=ms(64, "iqr_ms"),
        energy_uj=bill.energy_uj, energy_memory_uj=bill.memory_uj,
        energy_compute_uj=bill.compute_uj, weights_on_chip=bill.on_chip,
        threads=threads, load_avg=times[64].load_avg if times else None,
        test_images=None if data is None else len(data),
        layers=layers, latency_vs=paired)


# Kept for lessons 00 and 03, which quote them, until they use ``cost.energy``: names only,
# the figures and the model are ``workbench.cost``'s (one source of truth).
ENERGY_PJ_45NM = {"float_mult": cost.FLOAT32_MULT_PJ, "float_add": cost.FLOAT32_ADD_PJ,
                  "sram": cost.SRAM_READ_PJ, "dram": cost.DRAM_READ_PJ}


def energy_estimate(r: Report, memory: str = "dram") -> dict:
    """``cost.energy`` of report ``r`` with its file forced into ``memory`` ("dram": no
    on-chip SRAM; "sram": an SRAM as large as the file), as a dict: memory_uj, compute_uj,
    memory_over_compute. Prefer ``cost.energy(r, sram_bytes=...)``."""
    if memory not in ("dram", "sram"):
        raise ValueError(f"energy_estimate memory={memory!r}: allowed is 'dram' or 'sram'")
    bill = cost.energy(r, sram_bytes=0 if memory == "dram" else r.bytes)
    return {"memory": memory, "memory_uj": bill.memory_uj, "compute_uj": bill.compute_uj,
            "memory_over_compute": bill.memory_uj / bill.compute_uj if bill.compute_uj
            else None}


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
