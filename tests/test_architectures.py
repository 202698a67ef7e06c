"""The compact architectures (catalogue F), untrained: counted MACs and parameters agree with
``torch.utils.flop_counter`` (grouped and depthwise convolutions included), the output is one
row of 10 logits per image, the file round-trips, and the knobs change what they should."""
from __future__ import annotations

import pytest
import torch
from conftest import untrained
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from workbench import codec, measure, models, zoo
from workbench.models.mobile import MobileNet, MobileNetV2, divisible
from workbench.models.shuffle import ShuffleNetV2, channel_shuffle
from workbench.models.squeeze import NiN, SqueezeNet

COMPACT = list(zoo.COMPACT)
# Networks at other knob settings than the zoo's (resolution, groups of other sizes, v1.1 pools).
VARIANTS = [MobileNet(width=0.25, resolution=0.75), MobileNetV2(width=0.35, expansion=4),
            ShuffleNetV2(width=1.0), SqueezeNet(pool_after=(1, 3, 5), pct_3x3=0.25),
            NiN(width=0.5, dropout=0.5)]


def flops(model: nn.Module, batch: int = 1) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(batch, *model.input_shape))
    return counter.get_total_flops()


def test_compact_networks_are_in_the_zoo():
    for name in COMPACT:
        cls, dataset = models.ARCHITECTURES[name]
        assert dataset == "cifar10" and cls.input_shape == (3, 32, 32)
        assert models.CUSTOM_MODULES[cls.__name__] is cls
        assert name in zoo.RECIPES and zoo.TARGETS[name]["min_acc"] == 0.85
        assert cls.__doc__ and "Adapted" in cls.__doc__, f"{name}: say what was adapted"


@pytest.mark.parametrize("model", [models.build(n) for n in COMPACT] + VARIANTS,
                         ids=COMPACT + [f"{type(m).__name__}-variant" for m in VARIANTS])
def test_macs_and_params_agree_with_flop_counter(model):
    model.eval()
    rep = measure.report(model, latency=False)
    assert rep.macs * 2 == flops(model)
    assert rep.params == sum(p.numel() for p in model.parameters())
    # and per image: a batch of 3 counts 3 times the FLOPs of one image
    assert flops(model, 3) == 3 * flops(model)


def test_grouped_convolution_is_counted_per_group():
    """A depthwise 3x3 conv on c channels costs c*9 MACs per pixel, not c*c*9."""
    class Depthwise(nn.Module):
        input_shape = (8, 6, 6)

        def __init__(self):
            super().__init__()
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
            self.gc = nn.Conv2d(8, 16, 1, groups=4, bias=False)

        def forward(self, x):
            return self.gc(self.dw(x))

    rows = measure.layer_table(Depthwise(), Depthwise.input_shape)
    assert [r["macs"] for r in rows] == [8 * 9 * 36, 16 * 2 * 36]
    assert sum(r["macs"] for r in rows) * 2 == flops(Depthwise())


@pytest.mark.parametrize("name", COMPACT)
def test_output_shape_and_codec_round_trip(name):
    model = untrained(name, seed=3)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
        back = codec.decode(codec.encode(model)).eval()
        assert type(back) is type(model) and back.config == model.config
        assert out.shape == (4, 10)
        assert torch.equal(back(x), out)
    assert codec.read_header(codec.encode(model))["arch"] == name


@pytest.mark.parametrize("model", VARIANTS, ids=lambda m: type(m).__name__)
def test_variants_round_trip(model):
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(model)).eval()(x), model(x))


def test_knobs_scale_the_cost():
    def macs(m):
        return measure.report(m, latency=False).macs
    # width multiplier: MACs fall roughly as width**2; resolution: as rho**2
    assert macs(MobileNet(width=0.25)) < 0.35 * macs(MobileNet(width=0.5))
    full, smaller = macs(MobileNet()), macs(MobileNet(resolution=0.5))
    assert 0.2 < smaller / full < 0.3
    assert macs(MobileNetV2(expansion=3)) < macs(MobileNetV2(expansion=6))
    assert macs(ShuffleNetV2(width=1.0)) > 3 * macs(ShuffleNetV2(width=0.5))
    # SqueezeNet: earlier pooling (v1.1) costs fewer MACs; a smaller squeeze ratio too
    assert macs(SqueezeNet(pool_after=(1, 3, 5))) < macs(SqueezeNet())
    assert macs(SqueezeNet(squeeze_ratio=0.0625)) < macs(SqueezeNet())


def test_paper_widths():
    assert NiN(width=1).config["channels"] == list(NiN.PAPER_CHANNELS)
    assert sum(p.numel() for p in NiN(width=1).parameters()) > 0.9e6   # the paper's ~0.97 M
    convs = [m for m in ShuffleNetV2(width=1.0).stages.modules() if isinstance(m, nn.Conv2d)]
    assert {c.out_channels for c in convs} >= {58, 116, 232}           # branches of 116/232/464
    assert [divisible(c * 0.5) for c in (32, 24, 96, 160)] == [16, 16, 48, 80]


def test_building_blocks():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    v2 = MobileNetV2()
    assert sum(getattr(m, "residual", False) for m in v2.modules()) == 10
    fires = [m for m in SqueezeNet().modules() if type(m).__name__ == "Fire"]
    assert len(fires) == 8 and fires[-1].expand3[0].out_channels == 128


@pytest.mark.parametrize("kwargs, field", [
    ({"width": 0}, "width"), ({"resolution": 1.5}, "resolution")])
def test_bad_knobs_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MobileNet(**kwargs)


def test_bad_knobs_other_networks():
    with pytest.raises(ValueError, match="expansion"):
        MobileNetV2(expansion=0)
    with pytest.raises(ValueError, match="pool_after"):
        SqueezeNet(pool_after=(0, 4, 8))
    with pytest.raises(ValueError, match="squeeze_ratio"):
        SqueezeNet(squeeze_ratio=0)
    with pytest.raises(ValueError, match="channels"):
        NiN(channels=[8] * 3)


def test_nin_channel_groups_shrink():
    from workbench.prune import surgery
    model = untrained("nin")
    groups = surgery.channel_groups(model)
    assert len(groups) == 8
    keep = {g.name: torch.arange(g.width(model) // 2) for g in groups}
    small = surgery.shrink(model, keep)
    assert isinstance(small, NiN)
    assert small.config["channels"] == [c // 2 for c in model.config["channels"]]
    assert small(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
