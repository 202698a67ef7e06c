"""The section-F networks of issue 13 written as CIFAR-10 models (grouped, separable,
inception, plain, efficient), untrained: they build at their defaults and at other knob values,
give one row of 10 logits per image and backpropagate; their counted MACs agree with
``torch.utils.flop_counter`` (grouped and depthwise convolutions included); the codec restores
them with equal outputs; bad knobs raise ValueErrors naming the knob; and each block does what
its paper says (oracles: hand counts, the flop counter, a full convolution's weights)."""
from __future__ import annotations

from dataclasses import replace

import itertools
from functools import partial

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from workbench import codec, measure, models, zoo
from workbench.models.efficient import EfficientNet, MBConv
from workbench.models.grouped import ResNeXt, ShuffleNet, ShuffleUnit, channel_shuffle
from workbench.models.inception import Inception
from workbench.models.layers import check_count, check_range, classifier_head, conv_bn
from workbench.models.plain import DarkNet
from workbench.models.separable import (
    EffNet,
    EffNetBlock,
    PatternResidualBlock,
    Xception,
)

NEW = ["shufflenet", "resnext", "darknet", "inception", "xception", "effnet", "sepnet",
       "efficientnet"]
# Other knob values than the zoo's defaults: small, so that the file runs in seconds.
VARIANTS = {
    "shufflenet": [{"groups": 1}, {"groups": 8, "width": 0.25}],
    "resnext": [{"cardinality": 4, "group_width": 2, "width": 16, "blocks": 1,
                 "first_stride": 1}],
    "darknet": [{"width": 0.125}],
    "inception": [{"width": 0.125, "n": 5, "blocks": (1, 1, 1)}],
    "xception": [{"width": 0.0625, "middle_blocks": 1}],
    "effnet": [{"width": 0.5, "blocks": 1}],
    "sepnet": [{"groups": 8, "width": 16, "blocks": 1, "stem_channels": 8}],
    "efficientnet": [{"phi": 1.0, "width": 0.125, "depth": 0.25}],
}
BAD = {
    "shufflenet": [({"groups": 5}, "groups"), ({"width": 0}, "width")],
    "resnext": [({"cardinality": 0}, "cardinality"), ({"first_stride": 3}, "first_stride"),
                ({"blocks": 1.5}, "blocks")],
    "darknet": [({"width": -1}, "width")],
    "inception": [({"n": 4}, "n"), ({"blocks": (1, 1)}, "blocks"), ({"width": 5}, "width")],
    "xception": [({"width": 0}, "width"), ({"middle_blocks": -1}, "middle_blocks")],
    "effnet": [({"blocks": 0}, "blocks"), ({"width": 8}, "width")],
    "sepnet": [({"groups": 3}, "groups"), ({"blocks": 0}, "blocks")],
    "efficientnet": [({"phi": -1}, "phi"), ({"depth": 0}, "depth"),
                     ({"last_channels": 0}, "last_channels")],
}
CASES = [(name, {}) for name in NEW] + [(n, kw) for n in NEW for kw in VARIANTS[n]]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for n, kw in CASES]


def build(name: str, kwargs: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build(name, **kwargs)


def flops(model: nn.Module, batch: int = 1) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(batch, *model.input_shape))
    return counter.get_total_flops()


def test_registered_in_the_zoo():
    for name in NEW:
        cls, dataset = models.ARCHITECTURES[name]
        assert dataset == "cifar10" and cls.input_shape == (3, 32, 32)
        assert models.CUSTOM_MODULES[cls.__name__] is cls
        assert name in zoo.COMPACT
        assert zoo.TARGETS[name]["min_acc"] == 0.85 and zoo.TARGETS[name]["paper"]
        assert "Adapted" in cls.__doc__, f"{name}: say what was adapted for 32 x 32 inputs"


def test_every_compact_network_trains_with_the_cifar_recipe_family():
    # so that their accuracies compare; only the epochs may differ (NiN, EffNet, EfficientNet
    # to reach the floor; ResNeXt, Xception, both ShuffleNets to catch up with the references)
    for name in zoo.COMPACT:
        recipe = zoo.RECIPES[name]
        assert recipe == replace(zoo.cifar_recipe(), epochs=recipe.epochs), name
    assert zoo.RECIPES["vgg_small"] == zoo.RECIPES["resnet20"] == zoo.cifar_recipe()


@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_builds_outputs_backprops_and_counts(name, kwargs):
    model = build(name, kwargs)
    assert model.config == {**model.config, **{k: list(v) if isinstance(v, tuple) else v
                                                for k, v in kwargs.items()}}
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = model.train()(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    model.eval()
    rep = measure.report(model, latency=False)
    assert rep.macs * 2 == flops(model)                  # grouped and depthwise included
    assert flops(model, 2) == 2 * flops(model)
    assert rep.params == sum(p.numel() for p in model.parameters())
    assert measure.count_params(model)[0] == rep.params


@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_codec_round_trip(name, kwargs):
    model = build(name, kwargs, seed=3)
    for m in model.modules():           # non-trivial running statistics, so eval mode matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    blob = codec.encode(model)
    back = codec.decode(blob).eval()
    assert type(back) is type(model) and back.config == model.config
    assert codec.read_header(blob)["arch"] == name
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


@pytest.mark.parametrize("name, kwargs, field", [(n, kw, f) for n in NEW for kw, f in BAD[n]],
                         ids=lambda v: str(v) if isinstance(v, str) else None)
def test_bad_knobs_name_the_field(name, kwargs, field):
    cls = models.ARCHITECTURES[name][0]
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field}=.*allowed"):
        cls(**kwargs)


# ---- the substance of each block ----------------------------------------------------------

def test_shufflenet_shuffle_lets_every_group_see_every_group():
    """In a stride-1 unit with g groups, each output group of the second 1x1 group conv depends
    on input channels of every group (through the shuffle); without the shuffle, only on its
    own group. Checked by the gradient of one output channel with respect to the input."""
    torch.manual_seed(0)
    g = 3
    unit = ShuffleUnit(48, 48, 1, g).eval()
    x = torch.randn(1, 48, 6, 6, requires_grad=True)
    reduced = unit.reduce(x)
    out = unit.expand(unit.depthwise(channel_shuffle(reduced, g)))
    out[0, 0].sum().backward()                               # output group 0
    seen = x.grad[0].abs().sum(dim=(1, 2)).view(g, -1).sum(dim=1)
    assert (seen > 0).all(), "with the shuffle, output group 0 reads every input group"
    x.grad = None
    out = unit.expand(unit.depthwise(unit.reduce(x)))       # the same unit, no shuffle
    out[0, 0].sum().backward()
    seen = x.grad[0].abs().sum(dim=(1, 2)).view(g, -1).sum(dim=1)
    assert seen[0] > 0 and (seen[1:] == 0).all(), "without it, only its own group"


def test_shufflenet_groups_and_widths():
    # the paper's Table 1 stage-2 widths at 1x, and a g-times cheaper grouped 1x1 conv
    for g, width in ShuffleNet.STAGE2_WIDTHS.items():
        net = ShuffleNet(groups=g, width=1.0)
        assert net.stages[0][0].expand[0].out_channels + ShuffleNet.STEM == width
        assert net.stages[1][1].reduce[0].groups == g
    conv = ShuffleNet(groups=4, width=1.0).stages[1][1].reduce[0]
    assert conv.weight.numel() == conv.in_channels * conv.out_channels // 4


def test_resnext_cardinality_divides_the_weights():
    """The 3x3 conv of a block with C groups holds C times fewer weights than the full conv
    of the same width (the paper's aggregated transformations), and counts C times fewer MACs."""
    full = ResNeXt(cardinality=1, group_width=32)
    for c in (2, 8, 32):
        net = ResNeXt(cardinality=c, group_width=32 // c)
        conv, base = net.stages[0][1].branch[3], full.stages[0][1].branch[3]
        assert conv.groups == c and conv.in_channels == base.in_channels == 32
        assert conv.weight.numel() * c == base.weight.numel()
        rows = {r["layer"]: r["macs"] for r in measure.layer_table(net, net.input_shape)}
        base_rows = {r["layer"]: r["macs"] for r in measure.layer_table(full, full.input_shape)}
        name = "stages.0.1.branch.3"
        assert rows[name] * c == base_rows[name]


def test_inception_factorized_kernels():
    """The B modules hold 1 x n and n x 1 convs (2n weights per channel pair, not n*n) and keep
    the map size; the C modules' forks concatenate a 1x3 and a 3x1 conv."""
    net = Inception(n=5)
    shapes = {tuple(m.kernel_size) for m in net.modules() if isinstance(m, nn.Conv2d)}
    assert {(1, 5), (5, 1), (1, 3), (3, 1)} <= shapes and (5, 5) not in shapes
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((i[0].shape, o.shape)))
             for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size in ((1, 5),
                                                                                      (5, 1))]
    net.eval()(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert seen and all(i[-2:] == o[-2:] == (8, 8) for i, o in seen)   # the B grid: 8 x 8
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 5))
    assert conv.weight[0, 0].numel() == 5


def test_darknet_alternates_3x3_and_1x1():
    net = DarkNet(width=1.0)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19                                  # DarkNet-19: 18 + classifier
    kernels = [c.kernel_size[0] for c in convs[:-1]]
    assert kernels == [3, 3, 3, 1, 3, 3, 1, 3, 3, 1, 3, 1, 3, 3, 1, 3, 1, 3]
    for a, b in itertools.pairwise(convs[:-1]):
        if b.kernel_size == (1, 1):
            assert b.out_channels * 2 == a.out_channels      # the 1x1 halves the channels
    assert [c.out_channels for c in convs[:-1] if c.kernel_size == (3, 3)][-1] == 1024
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.features) == 3     # 32 -> 4
    assert isinstance(net.features[2], nn.LeakyReLU) and net.features[2].negative_slope == 0.1


def test_xception_separable_convs_and_shortcuts():
    """Every 3x3 conv after the stem is depthwise (groups = channels) and followed directly by
    a 1x1 conv; a separable conv costs c_in * (9 + c_out) MACs per pixel (hand count)."""
    net = Xception(width=0.25, middle_blocks=2).eval()
    convs = [m for m in net.features[6:].modules() if isinstance(m, nn.Conv2d)]
    spatial = [c for c in convs if c.kernel_size == (3, 3)]
    assert spatial and all(c.groups == c.in_channels == c.out_channels for c in spatial)
    sep = net.features[7].branch[1]                       # a SeparableConv (entry block 2)
    c_in, c_out = sep[0].in_channels, sep[1].out_channels
    rows = measure.layer_table(sep, (c_in, 5, 5))
    assert sum(r["macs"] for r in rows) == 25 * c_in * (9 + c_out)
    blocks = [m for m in net.modules() if type(m).__name__ == "XceptionBlock"]
    assert len(blocks) == 4 + 2
    assert sum(len(b.shortcut) == 0 for b in blocks) == 2   # identity in the middle flow


def test_effnet_block_halves_rows_then_columns():
    """A downsampling EffNet block pools rows (2x1) before the 3x1 depthwise conv, which so runs
    on half the pixels, and strides columns in its last (1x2) conv."""
    block = EffNetBlock(16, 32, 2).eval()
    shapes = {}

    def keep_shape(name):
        def hook(module, inputs, output):
            shapes[name] = output.shape
        return hook
    for name, m in block.block.named_children():
        m.register_forward_hook(keep_shape(name))
    assert block(torch.zeros(1, 16, 8, 8)).shape == (1, 32, 4, 4)
    kinds = [(n, m.kernel_size, m.groups) for n, m in block.block.named_children()
             if isinstance(m, nn.Conv2d)]
    (_, k1, _), (n2, k2, g2), (n3, k3, g3), (n4, k4, _) = kinds
    assert (k1, k2, k3, k4) == ((1, 1), (1, 3), (3, 1), (1, 2)) and g2 == g3 == 16
    assert shapes[n2][-2:] == (8, 8) and shapes[n3][-2:] == (4, 8) and shapes[n4][-2:] == (4, 4)
    pools = [m for m in EffNet().features[1].modules() if isinstance(m, nn.MaxPool2d)]
    assert [p.kernel_size for p in pools] == [(2, 1)]                   # rows only


def test_pattern_residual_block_adds_patterns_and_projection():
    """The block's output is ReLU(BN(group conv 3x3 (x)) + BN(conv 1x1 (x))), checked against
    the two branches run apart; the group conv holds ``groups`` times fewer weights."""
    torch.manual_seed(0)
    block = PatternResidualBlock(16, 32, 1, groups=4).eval()
    x = torch.randn(2, 16, 6, 6)
    expected = torch.relu(block.pattern(x) + block.transform(x))
    assert torch.allclose(block(x), expected)
    assert block.pattern[0].weight.numel() * 4 == 16 * 32 * 9
    assert block.transform[0].kernel_size == (1, 1)


def test_efficientnet_compound_scaling():
    """phi scales depth, width and resolution by alpha**phi, beta**phi, gamma**phi with the
    paper's alpha = 1.2, beta = 1.1, gamma = 1.15 (alpha * beta**2 * gamma**2 ~ 2), so the
    FLOPs (the flop counter's) roughly double per step of phi."""
    a, b, g = EfficientNet.ALPHA, EfficientNet.BETA, EfficientNet.GAMMA
    assert (a, b, g) == (1.2, 1.1, 1.15) and abs(a * b ** 2 * g ** 2 - 2) < 0.1
    base = {"width": 1.0, "depth": 1.0, "last_channels": 1280}
    b0, b2 = EfficientNet(phi=0, **base), EfficientNet(phi=2, **base)
    def blocks(net):
        return sum(isinstance(m, MBConv) for m in net.modules())
    def stage_widths(net):
        return sorted({m.block[-2].out_channels for m in net.modules() if isinstance(m, MBConv)})
    assert blocks(b0) == 16                                           # B0's Table 1
    assert stage_widths(b0) == [16, 24, 40, 80, 112, 192, 320]
    assert blocks(b2) == sum(-(-n * a ** 2 // 1) for *_, n, _ in EfficientNet.STAGES)
    for got, (_, _, c, _, _) in zip(stage_widths(b2), EfficientNet.STAGES, strict=True):
        assert got % 8 == 0 and 0.9 * c * b ** 2 <= got < c * b ** 2 + 8   # rounded to 8
    assert (b0.size, b2.size) == (32, round(32 * g ** 2))
    ratios = [flops(EfficientNet(phi=p, **base)) / flops(b0) for p in (1, 2)]
    for p, ratio in zip((1, 2), ratios):   # rounding of blocks and widths: within a factor 1.5
        assert 2 ** p / 1.5 < ratio < 2 ** p * 1.5, (p, ratio)
    assert ratios[1] > 1.5 * ratios[0]


def test_mbconv_squeeze_excitation_rescales_channels():
    """With the SE step's output forced to 0 (sigmoid 1/2), the block equals the same block
    without SE whose projection sees half the depthwise output."""
    torch.manual_seed(0)
    block = MBConv(16, 16, 3, 1, 6).eval()
    se = block.block[6]
    nn.init.zeros_(se.expand.weight)
    nn.init.zeros_(se.expand.bias)
    x = torch.randn(2, 16, 5, 5)
    inner = block.block[:6](x) * 0.5
    assert torch.allclose(block(x), x + block.block[7:](inner), atol=1e-6)
    assert block.residual and se.reduce.out_channels == 4          # a quarter of c_in


def test_shared_building_blocks():
    """The helpers the networks share: a conv_bn keeps the map size for odd kernels, square or
    not, and makes its activation in place; the head averages, then applies its linear layer
    (oracle: the mean over the map by hand); the knob checks say what is allowed."""
    x = torch.randn(2, 4, 6, 10)
    for kernel in (1, 3, (1, 3), (5, 1)):
        conv, norm, act = conv_bn(4, 8, kernel, groups=2, act=partial(nn.LeakyReLU, 0.1))
        assert conv.bias is None and conv.groups == 2 and norm.num_features == 8
        assert act.inplace and act.negative_slope == 0.1
        assert conv(x).shape == (2, 8, 6, 10)
    assert len(conv_bn(4, 8, act=None)) == 2
    head = classifier_head(4, 3)
    torch.testing.assert_close(head(x), head[2](x.mean((2, 3))))
    with pytest.raises(ValueError, match=r"^Net.blocks=1.5: allowed is an integer >= 0 "
                                         r"\(8 in the paper\)$"):
        check_count("Net.blocks", 1.5, 0, note="8 in the paper")
    with pytest.raises(ValueError, match=r"^Net.groups=0: allowed is an integer >= 1$"):
        check_count("Net.groups", 0)
    check_count("Net.groups", 1)
    with pytest.raises(ValueError, match=r"^Net.width=0: allowed is a number with "
                                         r"0 < Net.width <= 4$"):
        check_range("Net.width", 0, 0, 4)
    for wrong in ("0.5", None, True):       # a ValueError that says so, not a TypeError
        with pytest.raises(ValueError, match=rf"^Net.width={wrong!r}: allowed is a number"):
            check_range("Net.width", wrong, 0, 4)
    check_range("Net.width", 4, 0, 4)
