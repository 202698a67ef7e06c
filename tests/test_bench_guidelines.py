"""ShuffleNet v2's guideline micro-benchmarks: the blocks compute what they say, the variants of
each experiment do the same multiply-adds (against ``torch.utils.flop_counter``), the memory
access cost formula against hand computations, and the smoke rows' fields. No timing
assertions: speed is what the bench measures, not what a unit test can promise."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from workbench import guidelines as G
from workbench.bench import architectures_guidelines as bench

SIZE = 8    # MACs of 1x1 and padded 3x3 convs scale with the map: ratios do not change


def counted_macs(model) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *model.input_shape))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("guideline", list(bench.SCALES))
def test_variants_of_each_experiment_do_equal_macs(guideline):
    for scale in bench.SCALES[guideline]:
        nets = bench.BUILD[guideline](scale[1], SIZE)
        assert set(nets) == set(bench.PAPER[guideline])   # every row of the paper's table
        macs = {v: counted_macs(m) for v, m in nets.items()}
        assert macs == {v: G.macs(m) for v, m in nets.items()}   # measure agrees with torch
        # the paper's own widths differ by up to 5.5% (Table 1: 22 x 44 = 968 vs 32 x 32)
        assert max(macs.values()) / min(macs.values()) < 1.06, (scale[0], macs)
        if guideline in ("G3", "G4"):
            assert max(macs.values()) / min(macs.values()) < 1.02, (scale[0], macs)


def test_memory_access_formula_against_hand_computation():
    # Table 1's (128, 128) on 56 x 56: 3136 * 256 maps + 16384 weights
    assert G.memory_access(56, 56, 128, 128) == 3136 * 256 + 128 * 128 == 819_200
    assert G.memory_access(4, 4, 8, 8, groups=2) == 16 * 16 + 64 / 2
    # Eq. 2 rewritten with B = hw c1 c2 / g: hw c1 + B g / c1 + B / hw
    h = w = 7
    c1, c2, g = 12, 24, 3
    b = h * w * c1 * c2 / g
    assert G.memory_access(h, w, c1, c2, g) == pytest.approx(h * w * c1 + b * g / c1 + b / (h * w))
    # one block 2 -> 3 -> 2 on 4 x 4: two convs of 16 * 5 + 6
    assert G.stack_memory_access(G.balance_stack(2, 3, size=4, blocks=1)) == 2 * (16 * 5 + 6)


def test_formula_orders_the_variants_as_the_guidelines_say():
    for widths in ("arm", "gpu"):
        g1 = [G.stack_memory_access(m) for m in bench.g1_networks(widths, 32).values()]
        g2 = [G.stack_memory_access(m) for m in bench.g2_networks(widths, 32).values()]
        assert g1 == sorted(g1) and g2 == sorted(g2)      # 1:1 .. 1:12 and g = 1 .. 8


def test_formula_is_for_1x1_convolutions_only():
    with pytest.raises(ValueError, match="1x1"):
        G.stack_memory_access(G.bottleneck_stack(16, True, True, SIZE, units=1))


def test_group_width_keeps_the_paper_widths_where_they_divide():
    assert [G.group_width(64, g) for g in (1, 2, 4)] == [64, 90, 128]
    assert [G.group_width(128, g) for g in (4, 8)] == [256, 360]
    assert G.group_width(64, 8) == 184       # the paper's 180 is not a multiple of 8
    for base in (64, 128):
        for g in (1, 2, 4, 8):
            c = G.group_width(base, g)
            assert c % g == 0 and abs(c * c / g / base ** 2 - 1) < 0.04


def test_fragmented_blocks_compute_what_they_say():
    x = torch.randn(2, 8, 5, 5)
    par = G.Fragmented(8, 4, "parallel")
    whole = torch.cat([conv.weight for conv in par.convs])      # one 8 -> 8 conv, cut in four
    torch.testing.assert_close(par(x), F.conv2d(x, whole))
    ser = G.Fragmented(8, 2, "series")
    torch.testing.assert_close(ser(x), F.conv2d(F.conv2d(x, ser.convs[0].weight),
                                                ser.convs[1].weight))


@pytest.mark.parametrize("relu,shortcut", [(True, True), (True, False), (False, True),
                                           (False, False)])
def test_bottleneck_against_its_formula(relu, shortcut):
    unit = G.bottleneck_stack(16, relu, shortcut, SIZE, units=1)[0]
    x = torch.randn(1, 16, SIZE, SIZE)
    act = F.relu if relu else (lambda t: t)
    out = F.conv2d(act(F.conv2d(act(F.conv2d(x, unit.reduce.weight)), unit.conv.weight,
                                padding=1)), unit.expand.weight)
    with torch.no_grad():
        torch.testing.assert_close(unit(x.clone()), act(out + x if shortcut else out))


def test_bad_arguments_say_what_is_allowed():
    with pytest.raises(ValueError, match="group_stack.c=90: allowed is a multiple of groups=4"):
        G.group_stack(90, 4, SIZE)
    with pytest.raises(ValueError, match="Fragmented.arrangement='tree': allowed is one of"):
        G.Fragmented(8, 2, "tree")
    with pytest.raises(ValueError, match="Bottleneck.c=18: allowed is a multiple of 4"):
        G.Bottleneck(18)
    with pytest.raises(ValueError, match="balance_stack.c1=0: allowed is a positive integer"):
        G.balance_stack(0, 8, SIZE)


def test_paper_ratio_reads_the_right_cells():
    assert bench.paper_ratio("G1", "1:12", 1, 0) == round(76.2 / 57.6, 3)    # ARM x1
    assert bench.paper_ratio("G2", "g=8", 0, 0) == round(2451 / 634, 3)      # GPU x1
    assert bench.paper_ratio("G4", "ReLU+shortcut", 1, 1) == round(20.2 / 16.9, 3)   # ARM c=64


FIELDS = {"guideline", "scale", "variant", "first_convs", "threads", "batch", "map", "macs",
          "macs_vs_rec", "memory_access", "memory_access_vs_rec", "time_ms", "rec_time_ms", "ratio",
          "ratio_iqr", "display", "paper_gpu_ratio", "paper_arm_ratio", "paper", "met",
          "load_avg", "bench", "setting"}


@pytest.fixture(scope="module")
def smoke_rows():
    return bench.rows(smoke=True)


def test_smoke_rows_have_every_field_and_judge_nothing(smoke_rows):
    measured = [r for r in smoke_rows if r["variant"] != "summary"]
    summaries = [r for r in smoke_rows if r["variant"] == "summary"]
    assert {r["guideline"] for r in measured} == set(bench.PAPER)
    assert [r["guideline"] for r in summaries] == list(bench.PAPER)
    for r in measured:
        assert FIELDS <= set(r), FIELDS - set(r)
        assert r["met"] is None and r["setting"] == "smoke" and r["time_ms"] > 0
        assert r["macs"] == G.macs(bench.BUILD[r["guideline"]](
            bench.SCALES[r["guideline"]][0][1], bench.SMOKE_SIZE)[r["variant"]])
        assert (r["memory_access"] is None) == (r["guideline"] in ("G3", "G4"))
        if r["variant"] != bench.RECOMMENDED[r["guideline"]]:
            lo, hi = r["ratio_iqr"]
            assert lo <= r["ratio"] <= hi and r["paper"].startswith("GPU ")
    assert all(r["met"] is None for r in summaries)
