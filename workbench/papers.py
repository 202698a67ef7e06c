"""The papers' published results, as structured facts, and "ours | paper" in the same units.

``catalogue.Entry.paper_target`` says in a few words what each paper reports; ``FACTS`` holds
the same figures as data (network, metric, value, ratio and what the ratio counts), keyed by
catalogue id, so that the survey, the lessons and the benches read one set of numbers. A test
parses the digits of every ``paper_target`` and checks that they all appear here, so the two
cannot drift apart.

``checked`` is True only for a fact whose every number was read at its source (the paper's
abstract or table, or the authors' own README), as ``source`` says; the others are copied from
the catalogue and still wait for that check. ``zoo`` names the zoo network that IS the paper's
network (same layers, same parameter count); when it is None, or differs from the network a
row ran on, the row says plainly that the paper's figure is for a different network.

Example::

    >>> from workbench import papers
    >>> papers.compare({"method": "prune.iterative", "model": "lenet300", "accuracy": 0.9839,
    ...                 "base_accuracy": 0.984, "nonzeros_x": 12.4})
    'ours: 12.4x fewer weights at 1.61% error | paper: 12x fewer weights at 1.59% error'
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

# what a ratio counts -> (how a row reads, the row's key holding our figure)
RATIO_UNITS = {"weights": ("x fewer weights", "nonzeros_x"),
               "bytes": ("x smaller", "bytes_x"),
               "MACs": ("x fewer MACs", "effective_macs_x"),
               "time": ("x faster", "latency_vs_base")}
# "test errors": a count out of MNIST's 10,000 test images; "accuracy drop": points lost
# against the paper's own uncompressed network
METRICS = ("error", "top-1 error", "top-5 error", "accuracy", "accuracy drop", "test errors")
MNIST_TEST_IMAGES = 10_000


# Figures the lessons quote beside the catalogue's ``paper_target`` (for an id the catalogue gives
# no figure for, or a second figure of the same work): id -> (the source's words in short, where
# they were read). Text, not facts: the survey does not compare with them.
QUOTED = {
    # pruning (lesson 01b)
    "prune.winograd": ("CIFAR-10: 10.4x fewer multiplications, < 0.1% accuracy loss (retrained, "
                       "with Winograd-domain ReLU)", "Liu et al. 2018, abstract"),
    # quantization (lessons 02a and 02b), as the survey documents summarize them
    "quant.kmeans": ("Gong et al.: 16-24x compression with about 1% loss on ImageNet (k-means "
                     "or PQ)", "seed 004"),
    "quant.pq": ("Gong et al.: 16-24x compression with about 1% loss on ImageNet (k-means or "
                 "PQ)", "seed 004"),
    "quant.trained_kmeans": ("Deep Compression (pruning + trained quantization + Huffman): "
                             "AlexNet 35x, VGG-16 49x smaller on ImageNet", "seed 004"),
    "quant.qcnn": ("Wu et al.: 4-6x speed-up and 15-20x compression with about 1% loss on "
                   "ImageNet", "seed 004"),
    "quant.bit_allocation": ("Lin et al.: over 20% smaller model without loss of accuracy",
                             "seed 004"),
    "quant.grad8": ("Dettmers: 8-bit approximations of gradients and activations; a 50x "
                    "speed-up of parallel training, predicted by the paper's speed-up model for "
                    "a system of 96 GPUs (not timed on one)",
                    "seed 004; the 96 GPUs and the model: the paper's abstract (arXiv 1511.04561)"),
    # binary and ternary (lesson 04), from the shared FIELD-NOTES
    "binary.bnn": ("CIFAR-10 11.40% err (MNIST 0.96%, 3x4096 MLP, 1000 epochs)",
                   "authors' code README"),
    "binary.xnor": ("CIFAR-10: BWN 9.88%, XNOR 10.17% err; 58x faster convolutions counted in "
                    "high-precision operations", "XNOR-Net sec. 4.2 and abstract"),
    "ternary.twn": ("VGG-7 CIFAR-10 92.56%", "TWN arXiv v3, Table 2"),
    # low rank and approximation (lesson 05), from the papers' abstracts
    "lowrank.separable": ("2.5x speedup with no loss, 4.5x with < 1% drop (scene-text "
                          "character CNN)", "Jaderberg et al. 2014, abstract"),
    "lowrank.channel": ("VGG-16 4x faster at +0.3% top-5 error (nonlinear, asymmetric version)",
                        "Zhang et al. 2016, abstract"),
    "lowrank.sparse_decomp": ("more than 90% of the parameters zero, accuracy drop under 1% "
                              "(ImageNet)", "Liu et al. 2015, abstract"),
    "approx.perforation": ("AlexNet and VGG-16 accelerated 2x-4x",
                           "Figurnov et al. 2016, abstract"),
    # distillation (lesson 06): the CIFAR-10 result beside the MNIST facts
    "distill.fitnets": ("CIFAR-10 FitNet1: 89.01% at 36x fewer parameters than its teacher "
                        "(90.18%)", "Romero et al. 2015, Table 1 (checked, shared FIELD-NOTES)"),
}


@dataclass(frozen=True)
class Result:
    """One published result. ``value`` is the compressed network's figure in ``metric``
    (``baseline`` the paper's point of comparison in the same metric: its uncompressed
    network, or for distillation the student trained alone); ``ratio`` how many times
    fewer / smaller / faster, in the unit ``ratio_of``; ``removed_pct`` the paper's own
    "N% removed" when it says so (``ratio`` is then 100 / (100 - N)); ``bits`` bits per weight
    when the paper states a width; ``claim`` the paper's words on accuracy when it gives no
    number."""
    network: str
    dataset: str
    source: str
    checked: bool
    metric: str | None = None
    value: float | None = None
    ratio: float | None = None
    ratio_of: str | None = None
    zoo: str | None = None
    baseline: float | None = None
    removed_pct: float | None = None
    bits: float | None = None
    label: str = ""          # which of the paper's variants, when it reports several
    scope: str = ""          # what the ratio covers when not the whole network
    ratio_bound: str = ""    # "up to" / "more than"
    value_bound: str = ""    # "within" / "under"
    claim: str = ""

    def __post_init__(self):
        if self.metric is not None and self.metric not in METRICS:
            raise ValueError(f"Result.metric={self.metric!r}: allowed is one of {METRICS}")
        if self.ratio_of is not None and self.ratio_of not in RATIO_UNITS:
            raise ValueError(f"Result.ratio_of={self.ratio_of!r}: allowed is one of "
                             f"{tuple(RATIO_UNITS)}")
        if (self.ratio is None) != (self.ratio_of is None):
            raise ValueError(f"Result.ratio={self.ratio}, ratio_of={self.ratio_of!r}: allowed "
                             "is both set or both None")
        if (self.metric is None) != (self.value is None):
            raise ValueError(f"Result.metric={self.metric!r}, value={self.value}: allowed is "
                             "both set or both None")
        if self.removed_pct is not None and self.ratio != removed_to_ratio(self.removed_pct):
            raise ValueError(f"Result.ratio={self.ratio}: allowed is "
                             f"{removed_to_ratio(self.removed_pct)} for removed_pct="
                             f"{self.removed_pct}")

    def numbers(self) -> list[float]:
        """Every figure of the fact, the paper's way of stating it included."""
        return [n for n in (self.value, self.baseline, self.ratio, self.removed_pct, self.bits)
                if n is not None]


def removed_to_ratio(pct: float) -> float:
    """"85% removed" as "6.7x fewer" (one decimal, as the rows show ratios)."""
    return round(100 / (100 - pct), 1)


_HAN15 = ("Han et al. 2015 (arXiv 1506.02626), Table 1; seen only in a public transcription "
          "(a translation) of that table, not in the paper itself")
_DC = "Han et al. 2016, Deep Compression (arXiv 1510.00149), Table 1; not seen at the source here"
_TWN = ("Li & Liu 2016 (arXiv 1605.04711 v3), Table 2, checked at the source (shared "
        "FIELD-NOTES); 'up to 16x' in its abstract")
_FITNETS = "Romero et al. 2015, MNIST table, checked at the source (shared FIELD-NOTES)"
_HE17 = ("He et al. 2017 (arXiv 1707.06168), abstract (its 'speed-up': not said there whether "
         "timed or counted)")

FACTS: dict[str, tuple[Result, ...]] = {
    "prune.iterative": (
        Result("LeNet-300-100", "MNIST", _HAN15, False, "error", 1.59, 12, "weights",
               zoo="lenet300"),
        Result("LeNet-5", "MNIST", _HAN15, False, "error", 0.77, 12, "weights",
               zoo="lenet5")),
    "prune.dns": (
        Result("LeNet-5", "MNIST", "Guo et al. 2016 (arXiv 1608.04493): 108x and 'without any "
               "accuracy loss' in the abstract; 0.91% (Table 1) not seen here", False,
               "error", 0.91, 108, "weights", zoo="lenet5"),
        Result("LeNet-300-100", "MNIST", "Guo et al. 2016, Table 1; not seen at the source here",
               False, ratio=56, ratio_of="weights", zoo="lenet300")),
    "prune.merge": (
        Result("an MNIST network, its dense layers pruned", "MNIST",
               "Srinivas & Babu 2015 (arXiv 1507.06149), abstract", True,
               ratio=removed_to_ratio(85), ratio_of="weights", removed_pct=85,
               ratio_bound="up to", claim="without significantly affecting performance"),),
    "prune.l1_filter": (
        Result("VGG-16", "CIFAR-10", "Li et al. 2016 (arXiv 1608.08710), abstract", True,
               ratio=removed_to_ratio(34), ratio_of="MACs", removed_pct=34, ratio_bound="up to",
               claim="close to the original accuracy after retraining"),),
    "prune.channel_lasso": (
        Result("ResNet", "ImageNet", _HE17, True, "accuracy drop", 1.4, 2, "time"),
        Result("Xception", "ImageNet", _HE17, True, "accuracy drop", 1.0, 2, "time"),
        Result("VGG-16", "ImageNet", _HE17, True, "accuracy drop", 0.3, 5, "time")),
    "quant.fixed_point": (
        Result("the paper's networks", "MNIST", "Gupta et al. 2015 (arXiv 1502.02551), "
               "abstract (it does not name MNIST)", True, bits=16,
               label="16-bit fixed point, stochastic rounding",
               claim="little to no degradation in accuracy"),),
    "quant.inq": (
        Result("AlexNet, VGG-16, GoogleNet, ResNets", "ImageNet",
               "Zhou et al. 2017 (arXiv 1702.03044), abstract", True, bits=5,
               claim="more accurate than the 32-bit references"),),
    "binary.connect": (
        Result("the paper's MLP", "MNIST", "Courbariaux et al. 2015, Table 2; not seen at the "
               "source here", False, "error", 1.29, label="deterministic"),
        Result("the paper's MLP", "MNIST", "Courbariaux et al. 2015, Table 2; 'around 1.18%' "
               "in the authors' README (MatthieuCourbariaux/BinaryConnect)", True,
               "error", 1.18, label="stochastic")),
    "binary.bnn": (
        Result("MLP 3x4096", "MNIST", "Hubara et al. 2016 (Theano), authors' README, checked at "
               "the source (shared FIELD-NOTES)", True, "error", 0.96, label="Theano"),
        Result("MLP", "MNIST", "Hubara et al. 2016, Table 1 (Torch7); not seen at the source "
               "here", False, "error", 1.40, label="Torch7")),
    "ternary.twn": (
        Result("LeNet-5 (TWN's own layer widths)", "MNIST", _TWN, True, "accuracy", 99.35,
               16, "bytes", baseline=99.41, ratio_bound="up to", label="TWN"),
        Result("LeNet-5 (TWN's own layer widths)", "MNIST", _TWN, True, "accuracy", 99.05,
               baseline=99.41, label="binary weights (BWN)")),
    "ternary.ttq": (
        Result("ResNet-20", "CIFAR-10", "Zhu et al. 2017: 8.23 -> 8.87% in the authors' README "
               "(czhu95/ternarynet, shared FIELD-NOTES); 'nearly 16x smaller' in the abstract",
               True, "error", 8.87, 16, "bytes", zoo="resnet20", baseline=8.23,
               ratio_bound="nearly"),),
    "lowrank.svd": (
        Result("the paper's large ImageNet models", "ImageNet",
               "Denton et al. 2014 (arXiv 1404.0736), abstract", True, "accuracy drop", 1, 2,
               "time", scope="convolutional layers", value_bound="within"),),
    "lowrank.separable": (
        Result("a scene text character CNN", "text characters",
               "Jaderberg et al. 2014 (arXiv 1405.3866), abstract", True, "accuracy drop", 0,
               2.5, "time"),
        Result("a scene text character CNN", "text characters",
               "Jaderberg et al. 2014 (arXiv 1405.3866), abstract", True, "accuracy drop", 1,
               4.5, "time", value_bound="under")),
    "lowrank.cp": (
        Result("a 36-class character CNN", "characters",
               "Lebedev et al. 2015 (arXiv 1412.6553), abstract: 91% -> 90%", True,
               "accuracy drop", 1, 8.5, "time", scope="whole network, CPU"),),
    "lowrank.sparse_decomp": (
        Result("the paper's ImageNet network", "ILSVRC2012",
               "Liu et al. 2015, Sparse CNNs (CVPR), abstract", True, "accuracy drop", 1,
               removed_to_ratio(90), "weights", removed_pct=90, ratio_bound="more than",
               value_bound="under"),),
    "hash.hashednets": (
        Result("3-layer network", "MNIST", "Chen et al. 2015; not seen at the source here (the "
               "authors' README, per bench lowrank_hash, says about 1.5% at 1/8)", False,
               "error", 1.45, 8, "weights"),
        Result("3-layer network", "MNIST", "Chen et al. 2015; not seen at the source here",
               False, "error", 2.79, 64, "weights")),
    "distill.kd": (
        Result("student MLP 2x800 (784-800-800-10)", "MNIST", "Hinton, Vinyals & Dean 2015 (arXiv "
               "1503.02531), section 3; not seen at the source here", False, "test errors", 74,
               baseline=146, label="distilled student"),),
    "distill.fitnets": (
        Result("FitNet, 30K-parameter student", "MNIST", _FITNETS, True, "error", 0.51,
               baseline=1.9, label="hints"),
        Result("FitNet, 30K-parameter student", "MNIST", _FITNETS, True, "error", 0.65,
               baseline=1.9, label="KD")),
    "pipeline.deep_compression": (
        Result("LeNet-300-100", "MNIST", _DC, False, "error", 1.58, 40, "bytes",
               zoo="lenet300"),
        Result("LeNet-5", "MNIST", _DC, False, "error", 0.74, 39, "bytes", zoo="lenet5")),
}

# entries whose paper_target holds digits that are not a comparable result, and why
NOT_COMPARABLE: dict[str, str] = {
    "binary.lbc": "9x-169x fewer learnable parameters is one layer's count by construction "
                  "(k^2 for 3x3 to 13x13 kernels), not a trained network's result",
}


def facts(method_id: str) -> tuple[Result, ...]:
    return FACTS.get(method_id, ())


def as_dict(method_id: str) -> dict:
    """The facts of ``method_id`` for the survey's JSON."""
    return {"facts": [asdict(f) for f in facts(method_id)],
            "not_comparable": NOT_COMPARABLE.get(method_id)}


def pick(method_id: str, model: str) -> Result | None:
    """The paper's fact on ``model`` itself if there is one, else its first (main) fact."""
    found = facts(method_id)
    same = [f for f in found if f.zoo == model]
    return (same or list(found) or [None])[0]


def byte_points(model: str, dense_bytes: int) -> list[dict]:
    """The published results on ``model`` itself whose ratio counts bytes and whose metric is
    an error or an accuracy, as points for an accuracy-against-bytes figure: the paper's ratio
    applied to our dense file (bytes, accuracy as a fraction, label)."""
    points = []
    for method_id, found in FACTS.items():
        for fact in found:
            if fact.zoo != model or fact.ratio_of != "bytes" \
                    or fact.metric not in ("error", "accuracy"):
                continue
            accuracy = fact.value if fact.metric == "accuracy" else 100 - fact.value
            bound = f"{fact.ratio_bound} " if fact.ratio_bound else ""
            said = paper_accuracy(fact).removeprefix("at ")
            seen = "" if fact.checked else " (not checked at the source)"
            points.append({"bytes": dense_bytes / fact.ratio, "accuracy": accuracy / 100,
                           "label": f"{method_id}, paper: {bound}{_num(fact.ratio)}x, "
                                    f"{said}{seen}"})
    return points


# ------------------------------------------------------------------ formatting
def _num(x: float) -> str:
    return f"{x:g}"


def _points(x: float) -> str:
    return f"{_num(x)} point{'' if x == 1 else 's'}"


def paper_ratio(fact: Result) -> str:
    text = f"{fact.ratio_bound + ' ' if fact.ratio_bound else ''}{_num(fact.ratio)}" \
           f"{RATIO_UNITS[fact.ratio_of][0]}"
    if fact.removed_pct is not None:
        text += f" ({_num(fact.removed_pct)}% removed)"
    return text + (f" ({fact.scope})" if fact.scope else "")


def paper_accuracy(fact: Result) -> str:
    if fact.metric == "test errors":
        return f"{_num(fact.value)} test errors ({100 * fact.value / MNIST_TEST_IMAGES:.2f}%)"
    if fact.metric == "accuracy drop":
        if fact.value == 0:
            return "with no accuracy loss"
        if fact.value_bound:
            return f"with accuracy {fact.value_bound} {_points(fact.value)} of the original"
        return f"with {_points(fact.value)} of accuracy lost"
    bound = f"{fact.value_bound} " if fact.value_bound else ""
    return f"at {bound}{_num(fact.value)}% {fact.metric}"


def paper_text(fact: Result) -> str:
    parts = []
    if fact.label:
        parts.append(f"{fact.label}:")
    if fact.ratio is not None:
        parts.append(paper_ratio(fact))
    if fact.bits is not None:
        parts.append(f"{_num(fact.bits)} bits/weight")
    if fact.value is not None:
        parts.append(paper_accuracy(fact))
    elif fact.claim:
        if parts and not parts[-1].endswith(":"):
            parts[-1] += ","
        parts.append(fact.claim)
    return " ".join(parts)


def our_ratio(row: dict, ratio_of: str) -> str:
    unit, key = RATIO_UNITS[ratio_of]
    if ratio_of == "time":
        timed = (row.get(key) or {}).get("b64")
        if not timed:
            return "speed not timed"
        if not timed["significant"]:
            return "no measurable speed-up"
        return f"{timed['speedup']:.1f}{unit}"
    value = row.get(key)
    return f"{value:.1f}{unit}" if value is not None else f"n/a{unit}"


def our_accuracy(row: dict, metric: str) -> str:
    error = 100 * (1 - row["accuracy"])
    if metric == "accuracy":
        return f"at {100 * row['accuracy']:.2f}% accuracy"
    if metric == "accuracy drop":
        drop = 100 * (row["base_accuracy"] - row["accuracy"])
        return (f"with {drop:.2f} points of accuracy lost" if drop >= 0
                else f"with {-drop:.2f} points of accuracy gained")
    return f"at {error:.2f}% error"      # error, top-1 / top-5 error, test errors


def our_text(row: dict, fact: Result | None) -> str:
    """Our row in the fact's units (fewer weights and error when there is no fact)."""
    ratio_of = fact.ratio_of if fact else "weights"
    metric = fact.metric if fact else "error"
    parts = []
    if ratio_of is not None:
        parts.append(our_ratio(row, ratio_of))
    if fact is not None and fact.bits is not None and row.get("bits_per_weight") is not None:
        parts.append(f"{row['bits_per_weight']:g} bits/weight")
    accuracy = our_accuracy(row, metric or "accuracy drop")
    parts.append(accuracy if parts else accuracy.removeprefix("at ").removeprefix("with "))
    return " ".join(parts)


def compare(row: dict) -> str:
    """"ours | paper" for one survey row, in the paper's units; says so when the paper's
    network is not ours, and when there is no published figure to compare with."""
    fact = pick(row["method"], row["model"])
    ours = f"ours: {our_text(row, fact)}"
    if row.get("input"):    # a lossless encoding, shown on the network it is for
        ours = (f"ours: {row['bytes_x']:.1f}x smaller than the dense file, "
                f"{row['bytes_x_vs_input']:.2f}x smaller than its input's own file "
                f"({' then '.join(row['input'])}, {row['input_bytes']:,} bytes)")
    if fact is None:
        return f"{ours} | paper: {no_figure(row['method'])}"
    if fact.zoo == row["model"]:
        return f"{ours} | paper: {paper_text(fact)}"
    return (f"{ours} | paper, on a different network ({fact.network}, {fact.dataset}): "
            f"{paper_text(fact)}")


def no_figure(method_id: str) -> str:
    """Why there is no figure beside ours, with the catalogue's words on the paper if any."""
    from . import catalogue
    reason = NOT_COMPARABLE.get(method_id, "no published figure")
    said = catalogue.by_id(method_id).paper_target
    return reason if not said or method_id in NOT_COMPARABLE else f"{reason} ({said})"
