"""workbench.prune.dependency: coupled channels found by tracing, checked against the groups the
zoo declares by hand and against the unpruned network's own outputs."""
from __future__ import annotations

import pytest
import torch
from conftest import sample_input, untrained
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from workbench import codec, measure, models, zoo
from workbench.prune import dependency, propagate
from workbench.prune.channels import L1Filter, filter_l1, group_l1
from workbench.prune.dependency import analyze, as_channel_group
from workbench.prune.slim import (
    SlimBatchNorm1d,
    SlimBatchNorm2d,
    SlimConv2d,
    shrink_traced,
)
from workbench.prune.surgery import shrink, traced_groups

DECLARING = ["lenet300", "lenet5", "vgg_small", "resnet20", "nin"]


@pytest.mark.parametrize("arch", DECLARING)
def test_traced_groups_equal_the_declared_ones(arch):
    """The hand-written channel_groups() say nothing tracing does not find (they could go)."""
    model = untrained(arch)
    traced = [as_channel_group(g, model) for g in analyze(model).prunable()]
    declared = [g.__class__(g.name, g.norm, g.consumer, g.spatial, None)
                for g in model.channel_groups()]
    assert traced == declared


def test_what_is_not_prunable_says_why():
    groups = {g.name: g for g in analyze(untrained("resnet20")).groups}
    assert "F.pad along channels" in groups["stem.0"].reason      # option-A shortcut
    assert "stages.0.1.conv2" in groups["stem.0"].producers       # added to the stem's channels
    assert groups["head.2"].reason == "the network's outputs"
    stem_inputs = [key for g in groups.values() for key in g.positions if key[0] == "stem.0"]
    assert ("stem.0", "in") not in stem_inputs                    # the image's channels


def test_mobilenet_v2_couples_each_stage_through_its_additions():
    model = models.build("mobilenet_v2")
    groups = {g.name: g for g in analyze(model).prunable()}
    stage = groups["features.4.block.6"]           # 3 blocks of 16 channels, two additions
    assert stage.producers == ("features.4.block.6", "features.5.block.6", "features.6.block.6")
    assert stage.width == 16
    for p in stage.producers:                      # channel c of each projection is class c
        assert torch.equal(stage.rows(p), torch.arange(16))
    hidden = groups["features.5.block.0"]          # expansion -> depthwise -> projection
    assert hidden.carriers == ("features.5.block.1", "features.5.block.3", "features.5.block.4")
    assert hidden.consumers == ("features.5.block.6",)
    assert len(traced_groups(model)) == len(groups) == 25


class ChunkNet(nn.Module):
    """conv -> chunk in two -> (left, 2 * right) -> cat -> conv: the halves must lose the
    same offsets, or the pruned network's chunk cuts in the wrong place."""
    input_shape = (3, 6, 6)

    def __init__(self):
        super().__init__()
        self.config = {}
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 5, 1)

    def forward(self, x):
        left, right = self.a(x).chunk(2, dim=1)
        return self.b(torch.cat([left, 2 * right], dim=1)).mean((2, 3))


def test_chunk_couples_the_same_offset_of_each_piece():
    torch.manual_seed(0)
    model = ChunkNet().eval()
    (group,) = analyze(model).prunable()
    assert torch.equal(group.rows("a"), torch.tensor([0, 1, 0, 1]))
    smaller = shrink(model, {"a": [1]})
    assert smaller.a.out_channels == 2 and torch.equal(smaller.a.weight, model.a.weight[[1, 3]])
    with torch.no_grad():
        model.a.weight[[0, 2]] = 0
        model.a.bias[[0, 2]] = 0
        x = sample_input(model)
        torch.testing.assert_close(smaller(x), model(x), rtol=1e-6, atol=1e-6)


def test_a_wrong_rule_is_caught_not_silently_applied(monkeypatch):
    """Without the chunk rule, removing two channels of the left half would run (4 -> 2
    channels, cut in two again) but double the wrong channel: the re-trace check refuses."""
    def chunk_without_coupling(self, node):
        x = self.chan(node.args[0])
        return tuple(propagate.Chan(row, True) for row in x.ids.view(node.args[1], -1))
    monkeypatch.setattr(propagate.Propagation, "chunk", chunk_without_coupling)
    model = ChunkNet().eval()
    (group,) = analyze(model).prunable()
    assert group.width == 4
    with pytest.raises(ValueError, match="went wrong at node"):
        shrink(model, {"a": [2, 3]})


def test_a_permutation_inside_one_class_is_caught(monkeypatch):
    """The re-trace check compares each channel with the very channel of the original, not
    only its class: a rule that swapped the two (coupled) halves of the chunk in the pruned
    network only would keep every class in place, and must still be refused."""
    right_rule = propagate.Propagation.chunk

    def chunk_swapped_when_pruned(self, node):
        pieces = right_rule(self, node)
        return pieces[::-1] if len(pieces[0].ids) == 1 else pieces
    monkeypatch.setattr(propagate.Propagation, "chunk", chunk_swapped_when_pruned)
    model = ChunkNet().eval()
    (group,) = analyze(model).prunable()
    assert torch.equal(group.rows("a"), torch.tensor([0, 1, 0, 1]))   # one class: a1 and a3
    with pytest.raises(ValueError, match="went wrong at node"):
        shrink(model, {"a": [1]})


class Literal(nn.Module):
    """A shuffle whose view sizes are written in the code, and a grouped convolution."""
    input_shape = (4, 4, 4)

    def __init__(self):
        super().__init__()
        self.config = {}
        self.a, self.g, self.b = nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 1, groups=2), \
            nn.Conv2d(8, 3, 1)

    def forward(self, x):
        y = self.a(x).view(-1, 2, 4, 4, 4).transpose(1, 2).reshape(-1, 8, 4, 4)
        return self.b(self.g(y)).mean((2, 3))


def test_what_cannot_be_mapped_safely_is_not_prunable():
    groups = {g.name: g for g in analyze(Literal()).groups}
    assert "written in the code" in groups["a"].reason
    assert "grouped convolution" in groups["g"].reason
    with pytest.raises(ValueError, match="not prunable: grouped convolution"):
        shrink(Literal(), {"g": [0, 1]})
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    assert traced_groups(plain) == []               # no config: no file could rebuild it


class Norms(nn.Module):
    """A conv with BatchNorm2d and a Linear with BatchNorm1d, each pruned to Slim layers."""
    input_shape = (3, 6, 6)

    def __init__(self):
        super().__init__()
        self.config = {}
        self.conv, self.bn2 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=0.3)
        self.fc, self.bn1 = nn.Linear(4, 5), nn.BatchNorm1d(5, eps=1e-3)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        x = torch.relu(self.bn2(self.conv(x))).mean((2, 3))
        return self.out(torch.relu(self.bn1(self.fc(x))))


@pytest.mark.parametrize("name, kind, plain, kept, shape", [
    ("bn2", SlimBatchNorm2d, nn.BatchNorm2d, [0, 2], (6, 2, 3, 3)),
    ("bn1", SlimBatchNorm1d, nn.BatchNorm1d, [1, 3, 4], (6, 3))])
def test_slim_norms_are_the_sliced_norm_and_rebuild_from_their_config(name, kind, plain, kept,
                                                                      shape):
    torch.manual_seed(0)
    model = Norms()
    with torch.no_grad():
        for m in (model.bn1, model.bn2):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.normal_()
            m.bias.normal_()
    group = "conv" if name == "bn2" else "fc"
    slim = shrink(model, {group: kept}).get_submodule(name)
    full_norm = model.get_submodule(name)
    assert type(slim) is kind and isinstance(slim, plain)
    assert models.CUSTOM_MODULES[kind.__name__] is kind
    assert slim.config == {"num_features": len(kept), "eps": full_norm.eps,
                           "momentum": full_norm.momentum, "affine": True,
                           "track_running_stats": True}
    oracle = plain(len(kept), full_norm.eps, full_norm.momentum)   # the plain norm, sliced
    oracle.load_state_dict({k: v[kept] if v.dim() else v
                            for k, v in full_norm.state_dict().items()})
    rebuilt = kind(**slim.config)                                  # as the codec rebuilds it
    rebuilt.load_state_dict(slim.state_dict())
    x = torch.randn(*shape)
    for train in (False, True):
        for m in (slim, oracle, rebuilt):
            m.train(train)
        expected = oracle(x)
        torch.testing.assert_close(slim(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(rebuilt(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(slim.running_mean, oracle.running_mean, rtol=0, atol=0)


class SharedModules(nn.Module):
    """One ReLU instance after both convs (it holds nothing: each call is its own); with
    ``twice``, conv ``b`` is also called twice (its weights serve two places)."""
    input_shape = (3, 6, 6)

    def __init__(self, twice: bool = False):
        super().__init__()
        self.config, self.twice = {}, twice
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.c, self.act = nn.Conv2d(4, 3, 1), nn.ReLU()

    def forward(self, x):
        x = self.act(self.b(self.act(self.a(x))))
        if self.twice:
            x = self.act(self.b(x))
        return self.c(x).mean((2, 3))


def test_a_shared_module_without_weights_couples_nothing():
    torch.manual_seed(0)
    model = SharedModules().eval()
    groups = {g.name: g for g in analyze(model).prunable()}
    assert sorted(groups) == ["a", "b"]
    assert groups["a"].consumers == ("b",) and groups["b"].consumers == ("c",)
    silence(model, groups["a"], torch.tensor([1, 2]))
    silence(model, groups["b"], torch.tensor([0]))
    smaller = shrink(model, {"a": [0, 3], "b": [1, 2, 3]})       # checked by the re-trace
    assert (smaller.a.out_channels, smaller.b.in_channels, smaller.b.out_channels) == (2, 2, 3)
    x = sample_input(model)
    with torch.no_grad():
        torch.testing.assert_close(smaller(x), model(x), rtol=1e-6, atol=1e-6)
    shared = {g.name: g for g in analyze(SharedModules(twice=True)).groups}
    assert "b is called twice" in shared["a"].reason             # weights still couple


def silence(model, group, classes):
    """Make ``classes`` of ``group`` contribute nothing: zero their producer rows, and the
    scale and shift of every BatchNorm (and the filters of every depthwise conv) they pass."""
    with torch.no_grad():
        for (layer, role), where in group.positions.items():
            module, hit = model.get_submodule(layer), torch.isin(where, classes)
            if role == "out" or (role == "carry" and isinstance(module, nn.Conv2d)):
                module.weight[hit] = 0
                if module.bias is not None:
                    module.bias[hit] = 0
            elif role == "carry":
                module.weight[hit] = 0
                module.bias[hit] = 0


def macs_by_flop_counter(model, x):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("arch", ["mobilenet_v2", "shufflenet_v2", "mobilenet", "squeezenet",
                                  "nin"])
def test_removing_silenced_channels_keeps_outputs(arch):
    model = zoo.pretrained(arch) if arch in ("mobilenet_v2", "shufflenet_v2") \
        else untrained(arch, seed=3)
    graph = analyze(model)
    keep = {}
    for group in graph.prunable():
        if group.width > 1:
            dropped = torch.arange(0, group.width, 3)        # every third class
            silence(model, group, dropped)
            keep[group.name] = torch.tensor([c for c in range(group.width) if c % 3])
    smaller = shrink_traced(model, keep)                     # the traced path, also for NiN
    assert any(isinstance(m, SlimConv2d) for m in smaller.modules())
    x = sample_input(model)
    with torch.no_grad():    # equal up to float rounding: fewer zero terms in each sum
        torch.testing.assert_close(smaller(x), model(x), rtol=1e-5, atol=1e-5)
    one = x[:1]
    big, small = macs_by_flop_counter(model, one), macs_by_flop_counter(smaller, one)
    assert small < 0.8 * big
    assert measure.report(smaller, latency=False).macs == small   # counts grouped convs too
    decoded = codec.decode(codec.encode(smaller))
    assert all(torch.equal(a, b) for a, b in zip(decoded.state_dict().values(),
                                                 smaller.state_dict().values()))
    with torch.no_grad():
        assert torch.equal(decoded(x), smaller(x))


def test_the_silencing_matters():
    """The same removal without silencing changes the outputs (the test above can fail)."""
    model = untrained("vgg_small", seed=3)
    group = analyze(model).prunable()[1]
    smaller = shrink_traced(model, {group.name: torch.arange(1, group.width)})
    x = sample_input(model)
    with torch.no_grad():
        assert not torch.allclose(smaller(x), model(x), rtol=1e-3, atol=1e-3)


def small_mobilenet_v2(seed: int) -> nn.Module:
    """A narrow MobileNet v2 (same structure, fewer channels), BN statistics randomized."""
    torch.manual_seed(seed)
    model = models.MobileNetV2(width=0.25, last_channels=64).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def test_l1_filter_scores_a_coupled_group_by_the_sum_over_its_producers():
    model = small_mobilenet_v2(seed=2)
    group = next(g for g in analyze(model).prunable() if len(g.producers) == 3)
    by_hand = sum(filter_l1(model.get_submodule(p).weight) for p in group.producers)
    torch.testing.assert_close(group_l1(model, group), by_hand)
    pruned = L1Filter(fraction=0.5, epochs=0).apply(model)
    kept = torch.sort(by_hand, descending=True, stable=True).indices[:group.width // 2].sort()[0]
    for norm in group.carriers:   # every BatchNorm of the stage kept the same channels
        assert torch.equal(pruned.get_submodule(norm).running_mean,
                           model.get_submodule(norm).running_mean[kept])
    big, small = measure.report(model, latency=False), measure.report(pruned, latency=False)
    assert small.macs < 0.5 * big.macs and small.bytes < big.bytes


def test_shrinking_twice_and_the_resolution_branch():
    """A pruned network is traced again (its Slim layers are layers like any other), and
    MobileNet's resize-in-forward branch is followed as the network takes it."""
    model = models.MobileNet(width=0.25, resolution=0.75).eval()
    once = L1Filter(fraction=0.25, epochs=0).apply(model)
    twice = L1Filter(fraction=0.25, epochs=0).apply(once)
    sizes = [measure.report(m, latency=False).macs for m in (model, once, twice)]
    assert sizes[0] > sizes[1] > sizes[2]
    with torch.no_grad():
        assert twice(sample_input(model)).shape == (4, 10)


def resnet20_narrow(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return models.ResNet20(width=8).eval()


@pytest.mark.parametrize("strategy, network", [("independent", small_mobilenet_v2),
                                               ("greedy", resnet20_narrow)])
def test_l1_filter_traces_once_and_prunes_as_the_plain_loop_does(strategy, network,
                                                                 monkeypatch):
    """apply() traces its input once (supports, check_model and compress share the trace);
    the result is, tensor by tensor, the network of the plain loop (trace, rank every group,
    shrink), which traced the input at each of those calls."""
    model = network(seed=4)
    method = L1Filter(fraction=0.4, epochs=0, strategy=strategy)

    def conv_groups(model):
        return [g for g in analyze(model).prunable()
                if all(isinstance(model.get_submodule(p), nn.Conv2d) for p in g.producers)]

    def plain_loop(model):
        if strategy == "independent":
            return shrink(model, {g.name: method.keep_scores(group_l1(model, g), g.name)
                                  for g in conv_groups(model)})
        for name in [g.name for g in conv_groups(model)]:
            group = next(g for g in conv_groups(model) if g.name == name)
            model = shrink(model, {name: method.keep_scores(group_l1(model, group), name)})
        return model

    expected = plain_loop(model).eval()
    steps = len(conv_groups(model))
    traced = []
    real_trace = dependency.trace
    monkeypatch.setattr(dependency, "trace", lambda *a, **kw: traced.append(1) or
                        real_trace(*a, **kw))
    pruned = method.apply(model)
    if strategy == "independent":  # the input, and the pruned network (the re-trace check)
        assert len(traced) == 2
    else:    # the network each step prunes (the first: the input); ResNet-20 declares its
        assert len(traced) == steps   # groups, so shrink rebuilds it from config: no check
    assert [type(m) for m in pruned.modules()] == [type(m) for m in expected.modules()]
    got, want = pruned.state_dict(), expected.state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert method._traced is None                    # nothing kept after apply
