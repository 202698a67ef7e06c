"""workbench.prune.channels: APoZ, activity, merging, L1 filters and layer removal, each checked
against a hand or brute-force computation, and the networks they return are really smaller."""
from __future__ import annotations

import statistics

import pytest
import torch
import torch.nn.functional as F
from conftest import sample_input, untrained

from torch import nn

from workbench import codec, data, measure, models, zoo
from workbench.prune.channels import (APoZ, Activity, L1Filter, LayerRemoval, Merge, apoz_keep,
                                      filter_l1, greedy_block_removal, merge_neurons,
                                      merge_saliency, relu_site, removable_blocks, subset_cost,
                                      without_block)
from workbench.models.groups import ChannelGroup
from workbench.prune.surgery import channel_groups, shrink
from workbench.train import evaluate, quiet


def random_dataset(name: str, n: int = 24, seed: int = 0) -> data.Dataset:
    """A tiny Dataset of random uint8 images in the shape of ``name``'s images."""
    g = torch.Generator().manual_seed(seed)
    shape = (1, 28, 28) if name == "mnist" else (3, 32, 32)
    images = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    return data.Dataset(name, "train", images, torch.arange(n) % 10)


def inputs_of(dataset: data.Dataset) -> torch.Tensor:
    return dataset.normalize(dataset.images)


# ------------------------------------------------------------------ APoZ

def test_apoz_of_fc_layers_equals_hand_computation():
    model = models.build("lenet300", hidden=[6, 5]).eval()
    ds = random_dataset("mnist")
    x = inputs_of(ds).flatten(1)
    with torch.no_grad():
        h1 = F.relu(model.net[1](x))
        h2 = F.relu(model.net[3](h1))
    hand = {"net.1": [sum(float(h1[n, c] == 0) for n in range(len(x))) / len(x) for c in range(6)],
            "net.3": [sum(float(h2[n, c] == 0) for n in range(len(x))) / len(x) for c in range(5)]}
    scores = APoZ(images=len(ds)).scores(model, ds)
    for name, values in hand.items():
        torch.testing.assert_close(scores[name], torch.tensor(values))


@pytest.mark.parametrize("arch, group, where", [
    ("vgg_small", "features.0", lambda m, x: F.relu(m.features[1](m.features[0](x)))),
    ("resnet20", "stages.1.2.conv1", lambda m, x: F.relu(m.stages[1][2].bn1(m.stages[1][2].conv1(
        m.stages[1][:2](m.stages[0](m.stem(x))))))),
])
def test_apoz_of_conv_channels_counts_images_and_positions(arch, group, where):
    model = untrained(arch, seed=2)
    ds = random_dataset("cifar10", n=6)
    with torch.no_grad():
        acts = where(model, inputs_of(ds))          # (N, C, H, W) after the ReLU
    n, c, h, w = acts.shape
    hand = torch.tensor([(acts[:, k] == 0).sum().item() / (n * h * w) for k in range(c)])
    scores = APoZ(images=len(ds)).scores(model, ds)
    torch.testing.assert_close(scores[group], hand)
    assert 0 < hand.mean() < 1


def test_apoz_only_where_a_relu_follows():
    # Caffe's LeNet-5 has no ReLU after its convolutions: only the hidden FC layer is scored.
    model = untrained("lenet5")
    sites = {g.name: relu_site(model, g) for g in channel_groups(model)}
    assert sites == {"features.0": None, "features.2": None,
                     "classifier.1": ("classifier.2", False)}
    assert set(APoZ(images=8).scores(model, random_dataset("mnist", 8))) == {"classifier.1"}
    vgg = untrained("vgg_small")
    assert relu_site(vgg, channel_groups(vgg)[0]) == ("features.2", False)
    # inside a residual block the ReLU is functional, after bn1: applied by the reader
    resnet = untrained("resnet20")
    assert relu_site(resnet, channel_groups(resnet)[4]) == ("stages.1.1.bn1", True)


def test_apoz_rule_is_mean_plus_std():
    scores = torch.tensor([0.1, 0.2, 0.25, 0.3, 0.95, 0.5])
    limit = statistics.mean(scores.tolist()) + statistics.stdev(scores.tolist())
    assert apoz_keep(scores).tolist() == [i for i, s in enumerate(scores.tolist()) if s <= limit]
    assert apoz_keep(scores).tolist() == [0, 1, 2, 3, 5]
    assert apoz_keep(scores, std_factor=0.0).tolist() == [0, 1, 2, 3]


def dead_and_busy_lenet300(dead1=(1, 4), dead2=(2,)) -> torch.nn.Module:
    """Hidden neurons that are never zero (large bias) except ``dead``, which always are."""
    model = models.build("lenet300", hidden=[8, 6]).eval()
    with torch.no_grad():
        for layer, dead in ((model.net[1], dead1), (model.net[3], dead2)):
            layer.bias.fill_(100.0)
            layer.bias[list(dead)] = -1e4
    return model


def test_apoz_removes_dead_neurons_and_outputs_stay():
    model = dead_and_busy_lenet300()
    ds = random_dataset("mnist")
    pruned = APoZ(epochs=0, images=len(ds)).apply(model, ds)
    assert pruned.config["hidden"] == [6, 5]
    x = inputs_of(ds)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x))


# ------------------------------------------------------------------ activity

def test_activity_scores_equal_hand_means():
    model = untrained("lenet5", seed=3)
    ds = random_dataset("mnist", 10)
    x = inputs_of(ds)
    with torch.no_grad():
        conv1 = model.features[0](x)
        hidden = F.relu(model.classifier[1](model.features(x).flatten(1)))
    scores = Activity(images=len(ds)).scores(model, ds)
    torch.testing.assert_close(scores["features.0"], conv1.abs().mean((0, 2, 3)))  # no ReLU
    torch.testing.assert_close(scores["classifier.1"], hidden.mean(0))


def silence(model, group, channels):
    """Channels whose output after BN + ReLU is exactly zero."""
    with torch.no_grad():
        model.get_submodule(group.name).weight[channels] = 0
        norm = model.get_submodule(group.norm)
        norm.bias[channels] = -1.0
        norm.running_mean[channels] = 0.0


def test_activity_removes_silent_channels_first_and_outputs_stay():
    model = untrained("vgg_small", seed=5)
    for g in channel_groups(model):
        silence(model, g, torch.arange(0, g.width(model), 4))
    ds = random_dataset("cifar10", 8)
    pruned = Activity(fraction=0.25, epochs=0, images=8).apply(model, ds)
    assert pruned.config["channels"] == [24, 24, 48, 48, 96, 96]
    x = inputs_of(ds)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ merging

def test_merge_saliency_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    w_in, w_out = torch.randn(7, 5, generator=g), torch.randn(7, 3, generator=g)
    s = merge_saliency(w_in, w_out)
    for i in range(7):
        for j in range(7):
            expected = float("inf") if i == j else \
                float(((w_in[i] - w_in[j]) ** 2).sum() * (w_out[j] ** 2).sum())
            assert s[i, j].item() == pytest.approx(expected, rel=1e-6)


def test_merge_neurons_picks_the_twin_and_adds_its_outgoing_weights():
    g = torch.Generator().manual_seed(1)
    w_in, w_out = torch.randn(6, 4, generator=g), torch.randn(6, 3, generator=g)
    w_in[4] = w_in[1]
    keep, out = merge_neurons(w_in, w_out, 1)
    assert sorted(keep.tolist()) in ([0, 1, 2, 3, 5], [0, 2, 3, 4, 5])
    survivor, gone = (1, 4) if 1 in keep.tolist() else (4, 1)
    torch.testing.assert_close(out[survivor], w_out[1] + w_out[4])
    assert torch.equal(out[[0, 2, 3, 5]], w_out[[0, 2, 3, 5]])


def test_greedy_merging_equals_recomputing_every_saliency():
    g = torch.Generator().manual_seed(3)
    w_in, w_out = torch.randn(30, 6, generator=g), torch.randn(30, 4, generator=g)
    out, alive = w_out.clone(), list(range(30))
    for _ in range(20):     # naive: all pairs of live neurons, saliency from scratch
        i, j = min(((i, j) for i in alive for j in alive if i != j),
                   key=lambda p: float(((w_in[p[0]] - w_in[p[1]]) ** 2).sum()
                                       * (out[p[1]] ** 2).sum()))
        out[i] += out[j]
        alive.remove(j)
    keep, merged = merge_neurons(w_in, w_out, 20)
    assert keep.tolist() == alive
    torch.testing.assert_close(merged[keep], out[alive])


@pytest.mark.parametrize("arch", ["lenet300", "lenet5"])
def test_merging_exact_duplicates_keeps_outputs(arch):
    model = untrained(arch, seed=6)
    fc = [g for g in channel_groups(model) if isinstance(model.get_submodule(g.name),
                                                          torch.nn.Linear)]
    with torch.no_grad():
        for g in fc:    # neuron 7 becomes an exact copy of neuron 3
            layer = model.get_submodule(g.name)
            layer.weight[7], layer.bias[7] = layer.weight[3], layer.bias[3]
    merged = Merge(by="count", count=1).apply(model)
    x = sample_input(model, n=16)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), model(x), rtol=1e-5, atol=1e-5)
        dropped = shrink(model, {g.name: torch.tensor([c for c in range(g.width(model)) if c != 7])
                                 for g in fc})
        assert (dropped(x) - model(x)).abs().max() > 1e-3   # dropping alone is not exact
    widths = [merged.get_submodule(g.name).out_features for g in fc]
    assert widths == [g.width(model) - 1 for g in fc]


def test_merge_beats_dropping_the_same_neurons_on_lenet300(mnist_test):
    model = zoo.pretrained("lenet300")
    test = mnist_test.subset(2000, seed=0)
    merged, keep = Merge(fraction=0.6).merge(model)
    dropped = shrink(model, keep)       # the same survivors, their twins' weights not added
    with torch.no_grad():               # the survivors' incoming weights are the originals'
        assert torch.equal(merged.net[1].weight, model.net[1].weight[keep["net.1"]])
    acc_merged, acc_dropped = evaluate(merged, test), evaluate(dropped, test)
    assert merged.config["hidden"] == [120, 40] == dropped.config["hidden"]
    assert acc_merged > acc_dropped + 0.02, (acc_merged, acc_dropped)


# ------------------------------------------------------------------ L1 filters

def test_l1_ranking_equals_brute_force_sort():
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(12, 5, 3, 3, generator=g)
    norms = [sum(abs(v) for v in weight[f].flatten().tolist()) for f in range(12)]
    torch.testing.assert_close(filter_l1(weight), torch.tensor(norms))
    by_norm = sorted(range(12), key=lambda f: norms[f])
    keep = L1Filter(fraction=0.25).keep(weight, "any")
    assert keep.tolist() == sorted(by_norm[3:])


@pytest.mark.parametrize("arch", ["vgg_small", "resnet20", "lenet5"])
def test_l1_filter_keeps_the_largest_filters_and_their_inputs(arch):
    model = untrained(arch, seed=7)
    pruned = L1Filter(fraction=0.4, epochs=0).apply(model)
    groups = L1Filter().groups(model)
    kept = {}
    for g in groups:
        w = model.get_submodule(g.name).weight.detach()
        norms = [w[f].abs().sum().item() for f in range(len(w))]
        n_keep = len(w) - round(0.4 * len(w))
        kept[g.name] = sorted(sorted(range(len(w)), key=lambda f: -norms[f])[:n_keep])
    first = groups[0]
    assert torch.equal(pruned.get_submodule(first.name).weight,
                       model.get_submodule(first.name).weight[kept[first.name]])
    for g in groups:
        consumer = pruned.get_submodule(g.consumer).weight
        if consumer.dim() == 4:    # the consumer lost exactly the removed input channels
            expected = model.get_submodule(g.consumer).weight.detach()[:, kept[g.name]]
            if g.consumer in kept:                 # and its own removed filters
                expected = expected[kept[g.consumer]]
            assert torch.equal(consumer, expected), g.name
    if arch == "resnet20":   # residual-aware: block outputs (the shortcut's width) untouched
        for s, stage in enumerate(pruned.stages):
            for block in stage:
                assert block.conv2.out_channels == 16 * 2 ** s
        assert torch.equal(pruned.stem[0].weight, model.stem[0].weight)


def test_l1_filter_layer_fractions_round_to_and_greedy():
    model = untrained("vgg_small", seed=8)
    pruned = L1Filter(fraction=0.3, layer_fractions={"features.0": 0.5}, round_to=8,
                      epochs=0).apply(model)
    assert pruned.config["channels"] == [16, 24, 48, 48, 88, 88]   # 22->24, 45->48, 90->88
    with pytest.raises(ValueError, match="features.99"):
        L1Filter(layer_fractions={"features.99": 0.5}, epochs=0).apply(model)
    with pytest.raises(ValueError, match="layer_fractions"):
        L1Filter(layer_fractions={"features.0": 1.5})
    lenet = untrained("lenet5", seed=8)
    greedy = L1Filter(fraction=0.5, strategy="greedy", epochs=0).apply(lenet)
    first = L1Filter(fraction=0.5).keep(lenet.features[0].weight, "features.0")
    second = lenet.features[2].weight.detach()[:, first]    # ranked without removed inputs
    expected = L1Filter(fraction=0.5).keep(second, "features.2")
    assert torch.equal(greedy.features[2].weight, second[expected])


def test_l1_filter_removes_zero_filters_without_changing_outputs():
    model = untrained("vgg_small", seed=9)
    for g in channel_groups(model):
        silence(model, g, torch.arange(1, g.width(model), 4))
    pruned = L1Filter(fraction=0.25, epochs=0).apply(model)
    x = sample_input(model)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-5, atol=1e-5)


def test_finetuning_needs_data():
    with pytest.raises(ValueError, match="needs data"):
        L1Filter(epochs=1).apply(untrained("lenet5"))


def test_l1_filter_needs_data_only_when_it_retrains():
    assert L1Filter(epochs=1).tags().needs_data
    assert not L1Filter(epochs=0).tags().needs_data
    model = untrained("lenet5", seed=1)
    pruned = L1Filter(fraction=0.5, epochs=0).apply(model)       # no data at all
    assert pruned.config["channels"] == [10, 25]
    # the methods that measure activations or costs need data even without fine-tuning
    for method in (APoZ(epochs=0), Activity(epochs=0), LayerRemoval(epochs=0)):
        assert method.tags().needs_data, method.id
        with pytest.raises(ValueError, match="needs data"):
            method.apply(untrained("resnet20"))
    assert not Merge().tags().needs_data


def test_unknown_layer_is_reported_before_any_work(monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("compress ran")
    monkeypatch.setattr(L1Filter, "compress", no_work)
    with pytest.raises(ValueError, match="features.99"):
        L1Filter(layer_fractions={"features.99": 0.5}, epochs=1).apply(untrained("vgg_small"))
    # a conv that is not a group's producer (a block's conv2 keeps the shortcut's width)
    with pytest.raises(ValueError, match="stages.0.0.conv2"):
        L1Filter(layer_fractions={"stages.0.0.conv2": 0.5}).apply(untrained("resnet20"))


# ------------------------------------------------------------------ what a network supports


class TwoConvs(nn.Module):
    """A network the zoo does not know: conv-ReLU-conv-ReLU, a hidden Linear, a Linear, with
    its channel groups declared, so channel pruning applies to it."""
    input_shape = (3, 8, 8)

    def __init__(self, channels=(6, 8), hidden: int = 12):
        super().__init__()
        self.config = {"channels": list(channels), "hidden": hidden}
        c1, c2 = channels
        self.body = nn.Sequential(nn.Conv2d(3, c1, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Flatten(), nn.Linear(c2 * 16, hidden), nn.ReLU(),
                                  nn.Linear(hidden, 10))

    def forward(self, x):
        return self.body(x)

    def channel_groups(self):
        return [ChannelGroup("body.0", None, "body.2", 1, ("channels", 0)),
                ChannelGroup("body.2", None, "body.5", 16, ("channels", 1)),
                ChannelGroup("body.5", None, "body.7", 1, ("hidden", None))]


def test_channel_pruning_applies_to_a_network_that_declares_its_groups():
    torch.manual_seed(0)
    model = TwoConvs().eval()
    for method in (APoZ(), Activity(), L1Filter(), Merge()):
        assert method.supports(model), method.id
    assert not LayerRemoval().supports(model)
    assert relu_site(model, channel_groups(model)[0]) == ("body.1", False)
    pruned = L1Filter(fraction=0.5, epochs=0).apply(model)
    assert type(pruned) is TwoConvs and pruned.config == {"channels": [3, 4], "hidden": 12}
    merged = Merge(fraction=0.5).apply(model)
    assert merged.config["hidden"] == 6
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert pruned(x).shape == merged(x).shape == (2, 10)
    ds = data.Dataset("cifar10", "train", torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8),
                      torch.arange(16) % 10)
    smaller = Activity(fraction=0.5, epochs=0, images=16).apply(model, ds)
    assert smaller.config == {"channels": [3, 4], "hidden": 6}


class Plain(nn.Module):
    """Conv and Linear layers but no declared channel groups."""
    input_shape = (3, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 36, 10)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


@pytest.mark.parametrize("method", [APoZ(), Activity(), L1Filter(epochs=0), Merge(),
                                    LayerRemoval()], ids=lambda m: m.id)
def test_without_channel_groups_nothing_is_supported(method):
    assert not method.supports(Plain())
    with pytest.raises(ValueError, match="needs"):
        method.apply(Plain(), random_dataset("cifar10", 8))


def test_supports_follows_structure_on_the_zoo():
    zoo_nets = {a: untrained(a) for a in ("lenet300", "lenet5", "vgg_small", "resnet20")}
    supported = {cls.__name__: sorted(a for a, m in zoo_nets.items() if cls().supports(m))
                 for cls in (APoZ, Activity, Merge, L1Filter, LayerRemoval)}
    assert supported == {"APoZ": ["lenet300", "lenet5", "resnet20", "vgg_small"],
                         "Activity": ["lenet300", "lenet5", "resnet20", "vgg_small"],
                         "Merge": ["lenet300", "lenet5"],
                         "L1Filter": ["lenet5", "resnet20", "vgg_small"],
                         "LayerRemoval": ["resnet20"]}


def test_a_deeper_resnet_has_more_removable_blocks():
    """Layer removal reads the stages, not a zoo name: a ResNet-32-like net (5 blocks per
    stage) has 12 removable blocks, and a pruned one with a single block per stage none."""
    deep = models.ResNet20(blocks_per_stage=5).eval()
    assert len(removable_blocks(deep)) == 12 and LayerRemoval().supports(deep)
    shallow = models.ResNet20(blocks_per_stage=[1, 1, 1], inner=[16, 32, 64])
    assert removable_blocks(shallow) == [] and not LayerRemoval().supports(shallow)
    ds = random_dataset("cifar10", 8)
    with quiet():
        out = LayerRemoval(blocks=3, images=8, epochs=0).apply(deep, ds)
    assert sum(out.config["blocks_per_stage"]) == 12 and type(out) is models.ResNet20


# ------------------------------------------------------------------ layer removal

def test_removing_an_identity_block_keeps_outputs():
    model = untrained("resnet20", seed=10)
    block = model.stages[1][2]
    with torch.no_grad():     # residual branch outputs 0: the block is relu(x) = x
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    smaller = without_block(model, 1, 2)
    assert smaller.config["blocks_per_stage"] == [3, 2, 3]
    assert len(smaller.config["inner"]) == 8
    x = sample_input(model)
    with torch.no_grad():
        torch.testing.assert_close(smaller(x), model(x))
    assert torch.equal(smaller.stages[2][0].conv1.weight, model.stages[2][0].conv1.weight)


def test_greedy_block_removal_takes_the_cheapest_block_each_time():
    model = untrained("resnet20", seed=11)
    ds = random_dataset("cifar10", 16)
    batches = list(ds.loader(8))
    assert removable_blocks(model) == [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]
    costs = {sb: subset_cost(without_block(model, *sb), batches, "loss")
             for sb in removable_blocks(model)}
    smaller, path = greedy_block_removal(model, batches, 2)
    first = min(costs, key=costs.get)
    assert path[1]["removed"] == f"stages.{first[0]}.{first[1]}"
    assert path[1]["cost"] == pytest.approx(costs[first])
    assert [p["depth"] for p in path] == [20, 18, 16]
    assert sum(smaller.config["blocks_per_stage"]) == 7
    every = LayerRemoval(blocks=6, images=16, epochs=0).apply(model, ds)
    assert every.config["blocks_per_stage"] == [1, 1, 1]    # first blocks always stay


# ------------------------------------------------------------------ smaller, and it decodes

@pytest.mark.parametrize("method, arch", [
    (APoZ(epochs=0, images=16), "lenet300"),
    (APoZ(epochs=0, images=16), "resnet20"),
    (Activity(fraction=0.5, epochs=0, images=16), "lenet5"),
    (Merge(fraction=0.5), "lenet300"),
    (L1Filter(fraction=0.5, epochs=0), "vgg_small"),
    (LayerRemoval(blocks=2, images=16, epochs=0), "resnet20"),
], ids=lambda v: v if isinstance(v, str) else v.id)
def test_output_is_physically_smaller_and_decodes(method, arch):
    model = untrained(arch, seed=12)
    ds = random_dataset(zoo.dataset_of(arch), 16)
    pruned = method.apply(model, ds)
    big, small = measure.report(model, latency=False), measure.report(pruned, latency=False)
    assert small.params < big.params and small.macs < big.macs and small.bytes < big.bytes
    x = sample_input(model)
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(pruned))(x), pruned(x))
