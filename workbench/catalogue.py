"""The catalogue: every compression method of the survey, whether implemented yet or not.

Each method the survey covers has an id such as ``"prune.magnitude"``. That id is the key of
``workbench.IMPLEMENTED`` once implemented (``METHODS``: the compressors; ``ACCOUNTS``: what
measures without compressing, ``cost.energy``), the name used in the survey report
and in the tests. This module is plain data: one ``Entry`` per id, in the order of the
survey's catalogue (sections A to G), plus a few small look-up helpers. It is longer than the
house's ~300 lines because it is one table of 88 entries: split, it would be harder to read.

``paper_target`` holds the published result a notebook puts beside our own number; the
figures are copied exactly because they are facts, everything else is written in our words.
``seeds`` names the survey documents (000-004) that describe the method.

Example::

    >>> from workbench import IMPLEMENTED, catalogue
    >>> catalogue.by_id("prune.obs").reference
    'Hassibi & Stork 1993'
    >>> [e.id for e in catalogue.missing(IMPLEMENTED)]
    []
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    id: str             # e.g. "prune.magnitude"
    family: str         # a key of FAMILIES
    name: str           # short human name
    reference: str      # authors and year
    summary: str        # one sentence: what the method does
    paper_target: str   # published result to compare with; "" when there is none
    seeds: tuple[str, ...]  # survey documents describing the method, e.g. ("001", "002")


# family key -> section title of the survey's catalogue
FAMILIES: dict[str, str] = {
    "pruning": "A. Pruning",
    "quantization": "B. Quantization and weight sharing",
    "binary": "C. Binary and ternary",
    "lowrank": "D. Low-rank, approximation and hashing",
    "distillation": "E. Distillation",
    "architecture": "F. Compact architectures (densifying)",
    "search": "G. Search, pipelines and accounting",
}

# family key -> one sentence on what the family does (the survey report's section intros)
FAMILY_SUMMARIES: dict[str, str] = {
    "pruning": "Remove weights, channels or whole filters that matter least, then usually "
               "retrain the rest: fewer nonzeros, and fewer MACs when whole structures go.",
    "quantization": "Store each weight in fewer bits, on a uniform grid, a learned grid or a "
                    "small shared codebook; integer arithmetic where the runtime has it.",
    "binary": "Push quantization to one or two bits (+-1, or -1/0/+1 with scales), so that "
              "multiplications become sign flips or xnor and popcount.",
    "lowrank": "Replace a layer by a product of smaller ones (matrix or tensor factors), "
               "compute it approximately, or fill it from a few shared values by hashing.",
    "distillation": "Train a small student to imitate a large teacher's outputs or "
                    "intermediate features, instead of the labels alone.",
    "architecture": "Design networks that are small from the start: 1x1 and depthwise "
                    "convolutions, grouped convolutions and channel shuffles, scaled widths.",
    "search": "Chain methods into one compressor, encode the result losslessly, search the "
              "knobs, and account for what a network costs.",
}

# Families whose every id is implemented in workbench.IMPLEMENTED (checked by the tests).
# A family is added here once all of its methods have landed.
LANDED_FAMILIES: frozenset[str] = frozenset({"pruning", "quantization", "binary", "lowrank",
                                             "distillation", "architecture", "search"})


def _seeds(text: str) -> tuple[str, ...]:
    return tuple(text.split())


CATALOGUE: tuple[Entry, ...] = (
    # ---------------------------------------------------------------- A. Pruning
    Entry("prune.magnitude", "pruning", "one-shot magnitude pruning", "Han et al. 2015",
          "Zeroes the smallest weights, with the cut set by a target sparsity, an absolute "
          "value or a multiple of the layer's standard deviation, per layer or globally.",
          "", _seeds("001 002 003 004")),
    Entry("prune.iterative", "pruning", "iterative prune + retrain", "Han et al. 2015",
          "Alternates pruning with retraining while pruned weights stay at zero, using L2 decay, "
          "reduced dropout and optionally retraining one layer at a time.",
          "LeNet-300-100 12x at 1.59% err; LeNet-5 12x at 0.77%", _seeds("001 003")),
    Entry("prune.obd", "pruning", "Optimal Brain Damage", "LeCun et al. 1990",
          "Removes the weights with the lowest second-order saliency 1/2 h_ii w^2, using an "
          "estimate of the Hessian diagonal.",
          "saliency ordering vs magnitude at equal sparsity", _seeds("004")),
    Entry("prune.obs", "pruning", "Optimal Brain Surgeon", "Hassibi & Stork 1993",
          "Uses a layer-wise inverse Hessian both to pick which weights to drop and to adjust "
          "the remaining weights so the layer's output barely changes.",
          "beats OBD and magnitude without retraining", _seeds("004")),
    Entry("prune.dns", "pruning", "Dynamic Network Surgery", "Guo et al. 2016",
          "Keeps updating all weights during training and lets a hysteresis rule both cut "
          "connections and splice pruned ones back in.",
          "LeNet-5 108x at 0.91%; LeNet-300-100 56x", _seeds("004")),
    Entry("prune.apoz", "pruning", "Network Trimming (APoZ)", "Hu et al. 2016",
          "Drops neurons or channels that are zero on too much of the data (APoZ above mean "
          "plus one std) and rebuilds thinner layers.",
          "", _seeds("001")),
    Entry("prune.activity", "pruning", "low-activity channel elimination", "Polyak & Wolf 2015",
          "Ranks channels by their average activation, deletes the weakest and shrinks the "
          "following layer to match.",
          "", _seeds("004")),
    Entry("prune.merge", "pruning", "data-free neuron merging", "Srinivas & Babu 2015",
          "Finds pairs of nearly identical neurons and folds one into the other by adding its "
          "outgoing weights to its twin, with neither data nor retraining.",
          "up to 85% of an MNIST network's parameters removed (its dense layers)", _seeds("004")),
    Entry("prune.l1_filter", "pruning", "pruning filters by L1 norm", "Li et al. 2016",
          "Removes the conv filters with the smallest L1 norm along with the input channels they "
          "feed, once, then retrains, taking care of residual connections.",
          "VGG on CIFAR-10: up to 34% less inference cost, close to the original accuracy",
          _seeds("001")),
    Entry("prune.channel_lasso", "pruning", "channel pruning by LASSO + least squares",
          "He et al. 2017",
          "Selects the channels to keep with a LASSO fit on sampled feature maps, then refits "
          "the next layer's weights by least squares.",
          "2x speed-up with a small loss (ResNet and Xception on ImageNet)", _seeds("000 001 004")),
    Entry("prune.thinet", "pruning", "ThiNet", "Luo et al. 2017",
          "Greedily removes, layer by layer, the channels whose loss least disturbs the next "
          "layer's output, then rescales the survivors by least squares.",
          "", _seeds("000 001 004")),
    Entry("prune.dcp", "pruning", "discrimination-aware channel pruning", "Zhuang et al. 2018",
          "Chooses channels using an extra classification loss from auxiliary classifiers so "
          "that the kept channels stay discriminative.",
          "", _seeds("000")),
    Entry("prune.layer", "pruning", "layer removal", "(ThiNet, seed 000)",
          "Deletes the whole blocks or layers that cost least accuracy to remove and shows how "
          "accuracy varies with depth.",
          "", _seeds("000")),
    Entry("prune.granularity", "pruning", "vector / kernel / group / filter granularity",
          "Mao et al. 2017; Anwar et al. 2015",
          "Prunes to one budget at several granularities, including strided intra-kernel "
          "patterns, and compares their accuracy and actual speed.",
          "", _seeds("004")),
    Entry("prune.group_lasso", "pruning", "structured sparsity learning",
          "Wen et al. 2016; Lebedev & Lempitsky 2016",
          "Trains with a group-lasso penalty that drives whole filters, channels or shapes to "
          "zero, which are then cut out.",
          "", _seeds("004")),
    Entry("prune.l1_reg", "pruning", "sparsity by L1 regularization", "(seed 000)",
          "Adds an L1 penalty while training and then thresholds the small weights away.",
          "", _seeds("000")),
    Entry("prune.winograd", "pruning", "sparse Winograd convolution", "Liu et al. 2018",
          "Runs 3x3 convolutions as F(2x2,3x3) Winograd transforms, prunes in the transformed "
          "domain and counts the multiplications really performed.",
          "", _seeds("000")),

    # ------------------------------------------------ B. Quantization and weight sharing
    Entry("quant.fixed_point", "quantization", "fixed-point Qm.n", "Gupta et al. 2015",
          "Represents numbers in fixed point of any word and fraction length, rounding to "
          "nearest or stochastically, in training and inference.",
          "16-bit fixed point, stochastic rounding: little to no loss", _seeds("000 004")),
    Entry("quant.float16", "quantization", "half and bfloat16", "(seed 002)",
          "Stores and computes in fp16 and bf16 and compares the result with fp32.",
          "", _seeds("002")),
    Entry("quant.int8", "quantization", "8-bit integer (TFLite / TensorRT style)",
          "Jacob et al. 2018",
          "Quantizes affinely per tensor or per channel with calibrated activations, runs true "
          "integer inference and times it.",
          "", _seeds("000")),
    Entry("quant.bit_allocation", "quantization", "per-layer bit-width allocation",
          "Lin et al. 2016",
          "Gives each layer its own bit-width, guided by SQNR or sensitivity, within a total "
          "size budget.",
          "", _seeds("004")),
    Entry("quant.symmetric", "quantization", "learned symmetric quantization (SYQ)",
          "Faraone et al. 2018",
          "Trains with a symmetric codebook whose scaling factors are learned per group.",
          "", _seeds("000")),
    Entry("quant.grad8", "quantization", "8-bit approximation of gradients", "Dettmers 2016",
          "Compresses gradients and activations to a dynamic (tree) 8-bit code during training "
          "and weighs the bytes saved against accuracy.",
          "", _seeds("004")),
    Entry("quant.kmeans", "quantization", "scalar k-means weight sharing", "Gong et al. 2014",
          "Clusters each layer's weights with k-means (random, density or linear start) and "
          "keeps only a codebook plus log2(k)-bit indices.",
          "", _seeds("001 003 004")),
    Entry("quant.trained_kmeans", "quantization", "trained quantization", "Han et al. 2016",
          "Fine-tunes the shared centroids by summing the gradients of the weights assigned to "
          "each.",
          "", _seeds("001 003")),
    Entry("quant.pq", "quantization", "product quantization", "Gong et al. 2014",
          "Cuts weight matrices into sub-vectors and runs k-means separately in each "
          "sub-space.",
          "", _seeds("001 004")),
    Entry("quant.rq", "quantization", "residual quantization", "Gong et al. 2014",
          "Quantizes the weights, then the remaining error, over several stages.",
          "", _seeds("001")),
    Entry("quant.qcnn", "quantization", "Quantized CNN", "Wu et al. 2016",
          "Product-quantizes conv and FC layers with error correction and infers through table "
          "look-ups, counting the operations actually done.",
          "", _seeds("004")),
    Entry("quant.pq_reg", "quantization", "PQ learned during training", "Soulie et al. 2016",
          "Adds a training penalty that draws the weights towards a product-quantization "
          "codebook.",
          "", _seeds("004")),
    Entry("quant.log", "quantization", "logarithmic / power-of-two",
          "Miyashita et al. 2016; Lee et al. 2017",
          "Restricts weights to powers of two so each multiplication becomes a bit shift.",
          "", _seeds("000")),
    Entry("quant.inq", "quantization", "incremental network quantization", "Zhou et al. 2017",
          "Repeatedly fixes a growing share of the weights to powers of two and retrains the "
          "others to compensate.",
          "5-bit without loss", _seeds("000")),
    Entry("quant.dorefa", "quantization", "DoReFa-style k-bit", "Zhou et al. 2016",
          "Maps weights into [0,1] through tanh, rounds them to k bits and trains float shadow "
          "weights via a straight-through estimator.",
          "", _seeds("002")),
    Entry("quant.learned_step", "quantization", "learned quantizer parameters",
          "Esser et al. 2020 (LSQ); Choi et al. 2018 (PACT)",
          "Learns the quantizer's step size or clipping level by backpropagation alongside the "
          "weights.",
          "", _seeds("002")),
    Entry("quant.multi_bit", "quantization",
          "several bit-widths trained jointly with distillation", "(seed 002)",
          "Trains one network that can switch between bit-widths, the narrower settings learning "
          "from the wider ones by distillation.",
          "", _seeds("002")),

    # ---------------------------------------------------------- C. Binary and ternary
    Entry("binary.sign", "binary", "binarization by sign", "Gong et al. 2014",
          "After training, replaces each weight by its sign times a scale.",
          "", _seeds("001")),
    Entry("binary.connect", "binary", "BinaryConnect", "Courbariaux et al. 2015",
          "Uses deterministic or stochastic binary weights in the forward and backward passes "
          "while updating real-valued shadow weights.",
          "MNIST MLP 1.29% / 1.18% err", _seeds("004")),
    Entry("binary.bnn", "binary", "Binarized Neural Networks", "Hubara et al. 2016",
          "Binarizes both weights and activations, trains through a hard-tanh straight-through "
          "estimator and counts XNOR-popcount operations.",
          "MNIST 0.96-1.40% err", _seeds("003 004")),
    Entry("binary.xnor", "binary", "XNOR-Net and BWN", "Rastegari et al. 2016",
          "Adds scaling factors to binary weights (BWN) and also to binary inputs (XNOR-Net), "
          "and counts the bit operations.",
          "", _seeds("000 004")),
    Entry("binary.abc", "binary", "ABC-Net multiple binary bases", "Lin et al. 2017",
          "Approximates each weight tensor by a sum of M binary tensors with their own scales.",
          "", _seeds("000")),
    Entry("binary.horq", "binary", "high-order residual quantization", "Li et al. 2017",
          "Binarizes the inputs in several passes, each pass encoding the residual left by the "
          "previous one.",
          "", _seeds("000")),
    Entry("binary.bireal", "binary", "Bi-Real Net", "Liu et al. 2018",
          "Wraps every binary convolution in a real-valued shortcut and trains with an "
          "ApproxSign gradient.",
          "", _seeds("000")),
    Entry("binary.lab", "binary", "loss-aware binarization", "Hou et al. 2017",
          "Binarizes with a proximal Newton step whose diagonal Hessian comes from the "
          "optimizer's second-moment estimates.",
          "", _seeds("004")),
    Entry("binary.lbc", "binary", "local binary convolution", "Juefei-Xu et al. 2017",
          "Combines fixed, sparse binary filters with learnable 1x1 weights.",
          "9x-169x fewer learnable params", _seeds("004")),
    Entry("binary.sketch", "binary", "network sketching", "Guo et al. 2017",
          "Approximates pretrained filters by successive binary residual terms, from coarse to "
          "fine.",
          "", _seeds("004")),
    Entry("binary.ebp", "binary", "expectation backpropagation", "Soudry et al. 2014",
          "Trains an MLP with binary weights by expectation backpropagation.",
          "", _seeds("004")),
    Entry("binary.pattern", "binary", "pattern binarization (SEP-Net)", "Li et al. 2017",
          "Binarizes only the kxk filters, leaves 1x1 filters in floating point and "
          "fine-tunes.",
          "", _seeds("003")),
    Entry("ternary.twn", "binary", "Ternary Weight Networks", "Li et al. 2016",
          "Maps weights to -1, 0 or +1 with a threshold of 0.7 times their mean absolute value "
          "and one scale per layer.",
          "LeNet-5: 99.41 FP / 99.35 TWN / 99.05 binary", _seeds("000")),
    Entry("ternary.ttq", "binary", "Trained Ternary Quantization", "Zhu et al. 2017",
          "Ternarizes with separately learned positive and negative scales per layer, keeping "
          "the first and last layers in floating point.",
          "ResNet-20 CIFAR-10 8.23 -> 8.87% err", _seeds("000 003 004")),

    # --------------------------------------- D. Low-rank, approximation and hashing
    Entry("lowrank.svd", "lowrank", "truncated SVD of dense layers", "Denton et al. 2014",
          "Factors a dense layer into two thinner ones with a truncated SVD and sets the "
          "theoretical cost ratio k(m+n)/(mn) beside the measured time.",
          "2x speedup within 1%", _seeds("000 004")),
    Entry("lowrank.separable", "lowrank", "spatial separable filters", "Jaderberg et al. 2014",
          "Replaces a kxk convolution by a kx1 then a 1xk convolution of chosen rank, fitted to "
          "the original filters.",
          "2.5x speedup no loss", _seeds("000 004")),
    Entry("lowrank.channel", "lowrank", "channel decomposition", "Zhang et al. 2016",
          "Rewrites a convolution as one with fewer output channels followed by a 1x1, fitted "
          "to the layer's responses on data.",
          "", _seeds("004")),
    Entry("lowrank.tucker", "lowrank", "Tucker-2 decomposition", "Kim et al. 2016",
          "Splits a convolution into 1x1, a small kxk core and 1x1, with ranks picked by VBMF "
          "or retained energy.",
          "", _seeds("004")),
    Entry("lowrank.cp", "lowrank", "CP decomposition", "Lebedev et al. 2015",
          "Writes the 4D kernel as a rank-R CP decomposition, i.e. four small convolutions, "
          "and fine-tunes.",
          "8.5x CPU speedup at -1%", _seeds("004")),
    Entry("lowrank.block_term", "lowrank", "block-term decomposition", "Wang & Cheng 2016",
          "Approximates the kernel by a sum of small Tucker blocks, giving a block-diagonal "
          "core.",
          "", _seeds("004")),
    Entry("lowrank.sparse_decomp", "lowrank", "sparse decomposition", "Liu et al. 2015",
          "Changes basis along the channels so the convolution kernels become mostly zero.",
          ">90% zeros within 1%", _seeds("004")),
    Entry("approx.perforation", "lowrank", "loop perforation", "Figurnov et al. 2016",
          "Evaluates a convolution only at some output positions and fills in the others by "
          "interpolation.",
          "", _seeds("004")),
    Entry("approx.frequency", "lowrank", "CNNPack frequency-domain compression",
          "Wang et al. 2016",
          "Moves filters to the DCT domain, shares cluster centres plus residuals and discards "
          "low-energy coefficients.",
          "", _seeds("000 004")),
    Entry("approx.circulant", "lowrank", "circulant projections",
          "Cheng et al. 2015; Wang et al. 2017",
          "Constrains weight matrices to be circulant and multiplies by them with the FFT.",
          "", _seeds("004")),
    Entry("hash.hashednets", "lowrank", "HashedNets", "Chen et al. 2015",
          "Builds a large virtual weight matrix by hashing into a small shared parameter vector, "
          "accumulating gradients per bucket.",
          "MNIST 1.45% err at 1/8, 2.79% at 1/64", _seeds("002 004")),
    Entry("hash.funhash", "lowrank", "FunHashNN", "Shi et al. 2016",
          "Looks up weights with several hash functions and merges them through a small "
          "learned function.",
          "", _seeds("004")),

    # ---------------------------------------------------------------- E. Distillation
    Entry("distill.mimic", "distillation", "model compression / mimic learning",
          "Bucilua et al. 2006; Ba & Caruana 2014",
          "Trains a student to regress the teacher's logits.",
          "", _seeds("004")),
    Entry("distill.kd", "distillation", "knowledge distillation", "Hinton et al. 2015",
          "Trains a student on the teacher's temperature-softened outputs blended with the true "
          "labels.",
          "MNIST 2x800 student 146 -> 74 errors", _seeds("000 004")),
    Entry("distill.fitnets", "distillation", "FitNets hints", "Romero et al. 2015",
          "First fits a thin, deep student's middle layer to a teacher hint by regression, then "
          "distills the outputs.",
          "MNIST 30K student 1.9 -> 0.65 -> 0.51%", _seeds("004")),
    Entry("distill.neurons", "distillation", "neuron-selected knowledge", "Luo et al. 2016",
          "Transfers a chosen subset of the teacher's high-level neurons to the student.",
          "", _seeds("004")),
    Entry("distill.fsp", "distillation", "flow of solution procedure", "Yim et al. 2017",
          "Makes the student's Gram (FSP) matrices between pairs of layers match the "
          "teacher's.",
          "", _seeds("004")),

    # ------------------------------------------------- F. Compact architectures
    Entry("arch.nin", "architecture", "Network-in-Network", "Lin et al. 2013",
          "A network built from 1x1 convolutions that ends in global average pooling instead "
          "of dense layers.",
          "", _seeds("004")),
    Entry("arch.squeezenet", "architecture", "SqueezeNet", "Iandola et al. 2016",
          "Fire modules that squeeze channels before expanding them, with a tunable squeeze "
          "ratio and downsampling late in the network.",
          "", _seeds("000 003 004")),
    Entry("arch.mobilenet", "architecture", "MobileNet v1", "Howard et al. 2017",
          "Depthwise separable convolutions scaled by width and resolution multipliers.",
          "", _seeds("000 002 003 004")),
    Entry("arch.mobilenet_v2", "architecture", "MobileNet v2", "Sandler et al. 2018",
          "Inverted residual blocks with linear bottlenecks and an adjustable expansion ratio.",
          "", _seeds("000 003")),
    Entry("arch.xception", "architecture", "Xception", "Chollet 2017",
          "An Inception-like network made entirely of depthwise separable convolutions.",
          "", _seeds("000")),
    Entry("arch.shufflenet", "architecture", "ShuffleNet", "Zhang et al. 2018",
          "Group convolutions with a channel shuffle so information crosses the groups.",
          "", _seeds("000 002 004")),
    Entry("arch.shufflenet_v2", "architecture", "ShuffleNet v2", "Ma et al. 2018",
          "Blocks that split the channels, designed around four practical speed guidelines "
          "that are measured here.",
          "", _seeds("000")),
    Entry("arch.effnet", "architecture", "EffNet", "Freeman et al. 2018",
          "Blocks of depthwise convolutions separated spatially into 1x3 and 3x1.",
          "", _seeds("000")),
    Entry("arch.inception", "architecture", "Inception", "Szegedy et al. 2015-2017",
          "The Inception v1-v4 blocks, including convolutions factorized into nx1 and 1xn.",
          "", _seeds("002")),
    Entry("arch.resnext", "architecture", "ResNeXt", "Xie et al. 2017",
          "Residual blocks that aggregate parallel paths as a grouped convolution.",
          "", _seeds("004")),
    Entry("arch.sepnet", "architecture", "SEP-Net", "Li et al. 2017",
          "Pattern Residual Blocks built on group-wise convolution.",
          "", _seeds("003")),
    Entry("arch.darknet", "architecture", "DarkNet-style backbone", "Redmon et al. 2016-2017",
          "A backbone of small kernels in the style of DarkNet.",
          "", _seeds("004")),
    Entry("arch.efficientnet", "architecture", "EfficientNet", "Tan & Le 2019",
          "Scales depth, width and input resolution together with one compound coefficient.",
          "", _seeds("002")),
    Entry("arch.regularizers", "architecture", "sparsifying regularizers",
          "Srivastava 2014; Wan 2013; He 2015",
          "Dropout, DropConnect and the activation sparsity of ReLU versus PReLU.",
          "", _seeds("004")),

    # ---------------------------------------- G. Search, pipelines and accounting
    # The catalogue lists the four search strategies in one row with one shared reference
    # cell ("Bergstra 2012; TPE; Hyperband"); each strategy gets the part that fits it.
    Entry("search.random", "search", "random search", "Bergstra 2012",
          "Samples compression and architecture hyperparameters at random, scoring accuracy "
          "and cost together and keeping the Pareto front.",
          "", _seeds("002")),
    Entry("search.grid", "search", "grid search", "Bergstra 2012",
          "Tries every point of a grid of compression and architecture hyperparameters, "
          "scoring accuracy and cost together and keeping the Pareto front.",
          "", _seeds("002")),
    Entry("search.bayes", "search", "Bayesian optimisation (TPE)", "TPE",
          "Proposes hyperparameters from a model of earlier trials (TPE), scoring accuracy and "
          "cost together and keeping the Pareto front.",
          "", _seeds("002")),
    Entry("search.bandit", "search", "bandit search (Hyperband)", "Hyperband",
          "Gives small budgets to many configurations and more to the promising ones "
          "(Hyperband), scoring accuracy and cost together and keeping the Pareto front.",
          "", _seeds("002")),
    Entry("pipeline.deep_compression", "search", "Deep Compression pipeline", "Han et al. 2016",
          "Chains pruning, trained k-means quantization and Huffman coding, reporting each "
          "stage.",
          "LeNet-300-100 40x at 1.58% err, LeNet-5 39x at 0.74%", _seeds("001 003 004")),
    Entry("pipeline.hybrid", "search", "hybrid pipeline", "(seed 004, future directions)",
          "Runs any sequence of methods, such as distill then prune then quantize, as a single "
          "compressor.",
          "", _seeds("004")),
    Entry("encode.huffman", "search", "Huffman coding", "Huffman 1952",
          "Huffman-codes the stored indices and compares the size with the entropy bound.",
          "", _seeds("001 003 004")),
    Entry("encode.sparse", "search", "sparse storage (CSR / CSC)", "Han et al. 2016",
          "Stores sparse weights as CSR or CSC with relative indices and filler zeros, as in "
          "Deep Compression.",
          "", _seeds("001 002 003")),
    Entry("cost.energy", "search", "energy estimate", "Horowitz 2014; Han et al. 2015",
          "Estimates energy from a per-operation table, separating memory accesses from "
          "arithmetic.",
          "", _seeds("001")),
)

_BY_ID: dict[str, Entry] = {entry.id: entry for entry in CATALOGUE}


def by_id(id: str) -> Entry:
    """The catalogue entry with this id; KeyError if there is none."""
    try:
        return _BY_ID[id]
    except KeyError:
        raise KeyError(f"unknown catalogue id {id!r}") from None


def missing(methods: Mapping[str, object]) -> list[Entry]:
    """The entries, in catalogue order, whose id is not a key of ``methods``."""
    return [entry for entry in CATALOGUE if entry.id not in methods]


def family_ids(family: str) -> list[str]:
    """The ids of one family (a key of FAMILIES), in catalogue order."""
    if family not in FAMILIES:
        raise KeyError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return [entry.id for entry in CATALOGUE if entry.family == family]
