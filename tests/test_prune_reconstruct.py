"""Channel pruning with reconstruction (He et al. 2017 LASSO, ThiNet, DCP): the sampled
regression against F.conv2d, the selections against brute force and sklearn's Lasso, the
reconstructions against torch.linalg.lstsq and against naive removal on held-out maps."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import sample_input, untrained
from sklearn.linear_model import Lasso
from torch import nn

from workbench import codec, data, measure, zoo
from workbench.prune import reconstruct as rc
from workbench.prune.surgery import channel_groups, layer_io, shrink

METHODS = [rc.ChannelLasso, rc.ThiNet, rc.DCP]
SMALL = {"images": 128, "positions": 8}
DCP_SMALL = {"aux_images": 32, "head_epochs": 1, "steps": 1}


def small(cls, **kw):
    return cls(**{**SMALL, **(DCP_SMALL if cls is rc.DCP else {}), **kw})


def contributions(patches, weight):
    """z (m*O, C): each channel's share of every sampled output, spelled out."""
    return torch.einsum("mck,ock->moc", patches.double(), weight.double()).reshape(-1,
                                                                              patches.shape[1])


def tiny_layer(seed=0, c_in=5, c_out=3, n=6):
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        conv.bias.copy_(torch.randn(c_out, generator=g))
    x = torch.randn(n, c_in, 9, 9, generator=g)
    return conv, x, g


def sampled(conv, x, g, positions=7):
    with torch.no_grad():
        y = conv(x)
    rows, cols = rc.sample_positions(len(x), y.shape[2], y.shape[3], positions, g)
    return rc.conv_patches(x, conv, rows, cols), y, rows, cols


# ----------------------------------------------------------------- sampled regression


@pytest.mark.parametrize("stride, padding, dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2)])
def test_patches_times_weights_equal_conv2d_at_sampled_positions(stride, padding, dilation):
    g = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, stride, padding, dilation)
    x = torch.randn(5, 4, 11, 10, generator=g)
    with torch.no_grad():
        y = F.conv2d(x, conv.weight, None, stride, padding, dilation)
    rows, cols = rc.sample_positions(5, y.shape[2], y.shape[3], 9, g)
    patches = rc.conv_patches(x, conv, rows, cols)
    mine = torch.einsum("mck,ock->mo", patches, rc.weight_per_channel(conv, 4))
    torch.testing.assert_close(mine, y[torch.arange(5)[:, None], :, rows, cols].reshape(-1, 6))
    assert len(set(zip((rows * 100 + cols).flatten().tolist(),
                       torch.arange(5).repeat_interleave(9).tolist()))) == 45   # distinct


def test_gram_of_contributions_equals_channel_ablation():
    """z_c is what the layer outputs when only channel c is fed (F.conv2d, bias off)."""
    conv, x, g = tiny_layer()
    patches, _, rows, cols = sampled(conv, x, g)
    z = []
    for c in range(x.shape[1]):
        only = torch.zeros_like(x)
        only[:, c] = x[:, c]
        out = F.conv2d(only, conv.weight.detach(), None, conv.stride, conv.padding)
        z.append(out[torch.arange(len(x))[:, None], :, rows, cols].reshape(-1).double())
    z = torch.stack(z, 1)
    y = torch.randn(len(patches), 3, generator=g)
    gram, zy = rc.contribution_gram(patches, rc.weight_per_channel(conv, 5), y, chunk=5)
    torch.testing.assert_close(gram, z.T @ z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zy, z.T @ y.double().flatten(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------- selection


def test_lasso_path_choice_is_sklearn_lasso_at_the_smallest_alpha():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(200, 8, generator=g, dtype=torch.float64) * torch.linspace(0.3, 2, 8)
    y = z @ torch.randn(8, generator=g, dtype=torch.float64) + 0.1 * torch.randn(200, generator=g,
                                                                                dtype=torch.float64)
    for count in (2, 4, 6):
        keep, alpha = rc.lasso_select(z.T @ z, z.T @ y, 200, count, return_alpha=True)
        assert len(keep) == count
        fit = lambda a: Lasso(alpha=a, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(
            z.numpy(), y.numpy()).coef_
        assert sorted((fit(alpha * 1.001) != 0).nonzero()[0].tolist()) == keep
        assert (fit(alpha * 0.99) != 0).sum() > count      # a smaller alpha keeps more


def test_lasso_on_a_forced_problem_equals_brute_force():
    """Orthogonal contributions: the best subset is known by exhaustive search."""
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(50, 6, generator=g, dtype=torch.float64))
    z = q * torch.tensor([0.5, 3.0, 1.0, 2.5, 0.2, 1.7], dtype=torch.float64)
    y = z.sum(1)
    for count in (1, 2, 3, 4):
        best = min(itertools.combinations(range(6), count),
                   key=lambda s: (y - z[:, list(s)] @ torch.linalg.lstsq(
                       z[:, list(s)], y[:, None]).solution[:, 0]).pow(2).sum())
        assert rc.lasso_select(z.T @ z, z.T @ y, 50, count) == sorted(best)
        assert rc.thinet_select(z.T @ z, count) == sorted(best)


@pytest.mark.parametrize("seed", range(4))
def test_thinet_removing_one_channel_is_the_exhaustive_best(seed):
    """Zero each input channel of a real conv in turn: the greedy choice is the best one."""
    conv, x, g = tiny_layer(seed)
    patches, y, rows, cols = sampled(conv, x, g)
    errors = []
    for c in range(5):
        dropped = x.clone()
        dropped[:, c] = 0
        with torch.no_grad():
            out = conv(dropped)
        errors.append((out - y)[torch.arange(len(x))[:, None], :, rows, cols].pow(2).sum())
    gram, _ = rc.contribution_gram(patches, rc.weight_per_channel(conv, 5),
                                   torch.zeros(len(patches), 3))
    removed = set(range(5)) - set(rc.thinet_select(gram, 4))
    assert removed == {int(torch.stack(errors).argmin())}


def test_thinet_greedy_objective_is_the_sum_of_removed_contributions():
    conv, x, g = tiny_layer(5, c_in=7)
    patches, y, _, _ = sampled(conv, x, g)
    z = contributions(patches, rc.weight_per_channel(conv, 7))
    keep = rc.thinet_select(z.T @ z, 3)
    removed = [c for c in range(7) if c not in keep]
    value = z[:, removed].sum(1).pow(2).sum()
    # Greedy is not exhaustive, but never worse than removing the 4 weakest channels alone.
    weakest = z.pow(2).sum(0).argsort()[:4].tolist()
    assert value <= z[:, weakest].sum(1).pow(2).sum() + 1e-9


# ----------------------------------------------------------------- reconstruction


def held_out_error(conv, keep, weight, bias, seed=99):
    """Squared error of the pruned layer vs the original on fresh inputs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(20, conv.in_channels, 9, 9, generator=g)
    x[:, 1] = x[:, 0] * 0.8 + 0.2 * x[:, 1]      # the correlated channels of tiny_correlated
    with torch.no_grad():
        full = conv(x)
        part = F.conv2d(x[:, keep], weight.reshape(conv.out_channels, len(keep), 3, 3), bias,
                        conv.stride, conv.padding)
    return (part - full).pow(2).sum().item()


def tiny_correlated():
    """Channel 1 mostly copies channel 0: dropping one, the other can stand in for it."""
    conv, _, g = tiny_layer(7)
    x = torch.randn(40, 5, 9, 9, generator=g)
    x[:, 1] = x[:, 0] * 0.8 + 0.2 * x[:, 1]
    return conv, x, g


def test_reconstruct_weights_is_lstsq_and_beats_removal_on_held_out_maps():
    conv, x, g = tiny_correlated()
    patches, _, _, _ = sampled(conv, x, g, positions=12)
    keep, w0 = [0, 2, 3, 4], rc.weight_per_channel(conv, 5)
    targets = (torch.einsum("mck,ock->mo", patches, w0) + conv.bias).detach()
    weight, bias = rc.reconstruct_weights(patches, targets, keep, w0, conv.bias.detach())
    a = torch.cat([patches[:, keep].reshape(len(patches), -1), torch.ones(len(patches), 1)], 1)
    oracle = torch.linalg.lstsq(a.double(), targets.double()).solution.float().T
    torch.testing.assert_close(weight.reshape(3, -1), oracle[:, :-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(bias, oracle[:, -1], atol=1e-4, rtol=1e-4)
    # Channel 1 mostly copies channel 0, so refitting recovers most of what was lost.
    naive = held_out_error(conv, keep, w0[:, keep], conv.bias.detach())
    assert held_out_error(conv, keep, weight, bias) < 0.2 * naive
    # A huge ridge pulls the solution back onto the original weights.
    far, _ = rc.reconstruct_weights(patches, targets, keep, w0, conv.bias.detach(), ridge=1e9)
    torch.testing.assert_close(far, w0[:, keep], atol=1e-3, rtol=1e-3)


def test_thinet_scale_is_lstsq_and_beats_removal_on_held_out_maps():
    """Channels 0 and 1 have equal filters and correlated maps: scaling 0 stands in for 1."""
    conv, x, g = tiny_correlated()
    with torch.no_grad():
        conv.weight[:, 1] = conv.weight[:, 0]
    patches, _, _, _ = sampled(conv, x, g, positions=12)
    w0 = rc.weight_per_channel(conv, 5)
    z = contributions(patches, w0)
    y = z.sum(1)
    keep = [0, 2, 3, 4]
    gram, zy = rc.contribution_gram(patches, w0, z.sum(1).reshape(len(patches), 3).float())
    scale = rc.thinet_scale(gram, zy, keep)
    torch.testing.assert_close(scale, torch.linalg.lstsq(z[:, keep], y[:, None]).solution[:, 0])
    scaled = (w0[:, keep] * scale.float()[None, :, None]).detach()
    bias = conv.bias.detach()
    naive = held_out_error(conv, keep, w0[:, keep], bias)
    assert held_out_error(conv, keep, scaled, bias) < 0.5 * naive


# ----------------------------------------------------------------- DCP


def test_dcp_first_pick_without_discrimination_has_the_largest_gradient():
    """From W = 0 the gradient for channel c is -2 y' P_c / ||y||^2: brute force the norms."""
    conv, x, g = tiny_layer(8, c_in=6)
    patches, _, _, _ = sampled(conv, x, g)
    w0 = rc.weight_per_channel(conv, 6).detach()
    y = torch.einsum("mck,ock->mo", patches, w0)
    norms = [torch.linalg.matrix_norm(y.T @ patches[:, c]) for c in range(6)]
    keep, weight = rc.dcp_select(patches, y, w0, 1, None, None, None, None, 0.0, steps=0)
    assert keep == [int(torch.stack(norms).argmax())]
    oracle = torch.linalg.lstsq(patches[:, keep].reshape(len(y), -1), y).solution.T
    torch.testing.assert_close(weight.reshape(3, -1), oracle, atol=1e-4, rtol=1e-4)


def test_dcp_discrimination_picks_the_channel_that_carries_the_label():
    """Channel 0 carries the label with little energy, channel 1 much energy and no label."""
    g = torch.Generator().manual_seed(9)
    labels = torch.randint(0, 2, (200,), generator=g)
    x = torch.randn(200, 3, generator=g) * torch.tensor([0.1, 3.0, 0.5])
    x[:, 0] += 0.3 * (2 * labels - 1)
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.5, 0.2], [-1.0, 0.5, -0.2]]))
    patches = x[:, :, None]
    y = layer(x).detach()
    w0 = rc.weight_per_channel(layer, 3).detach()
    pick = lambda lam: rc.dcp_select(patches, y, w0, 1, rc.consumer_function(layer), x, labels,
                                     nn.Identity(), lam, steps=0)[0]
    assert pick(0.0) == [1]           # reconstruction alone wants the loud channel
    assert pick(100.0) == [0]         # the discriminative loss wants the informative one


def test_auxiliary_head_learns_and_leaves_the_network_alone(mnist_train_small):
    model = zoo.pretrained("lenet5") if "lenet5" in zoo.manifest() else untrained("lenet5")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    group = channel_groups(model)[1]           # the head reads fc1's 500 outputs
    method = rc.DCP(images=256, head_epochs=3)
    head = method.head(group, model, mnist_train_small)
    aux = rc.AuxiliaryClassifier(model, group.consumer, head).eval()
    x, y = mnist_train_small.tensors()
    with torch.no_grad():
        accuracy = (aux(x).argmax(1) == y).float().mean()
    assert accuracy > 0.5                      # ten classes: chance is 0.1
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


# ----------------------------------------------------------------- whole networks


def consumer_error(model, pruned, group, dataset):
    """Output error of the group's consumer on held-out images (not those sampled)."""
    name = group.consumer
    want = layer_io(model, dataset, [name], 200, seed=123)[name]["output"]
    got = layer_io(pruned, dataset, [name], 200, seed=123)[name]["output"]
    return (got - want).pow(2).sum().item()


@pytest.mark.parametrize("index", [0, 1], ids=["conv-consumer", "linear-consumer"])
@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.id)
def test_reconstruction_beats_naive_removal_on_held_out_images(cls, index, mnist_train_small):
    model = zoo.pretrained("lenet5") if "lenet5" in zoo.manifest() else untrained("lenet5")
    held_out = data.mnist("test")
    method = small(cls, keep=0.4)
    reference = model.eval()
    group = channel_groups(model)[index]       # conv1 -> conv2, conv2 -> fc1 (via Flatten)
    pruned = method.prune_group(model, reference, group, mnist_train_small, index)
    assert group.width(pruned) == round(0.4 * group.width(model))
    # Same channels, original weights: what plain removal would give.
    weight = pruned.get_submodule(group.name).weight
    original = model.get_submodule(group.name).weight
    keep = [int((original - w).flatten(1).abs().sum(1).argmin()) for w in weight]
    naive = shrink(model, {group.name: torch.tensor(keep)})
    assert consumer_error(model, pruned, group, held_out) < \
        0.7 * consumer_error(model, naive, group, held_out)


@pytest.mark.parametrize("cls, arch", [(c, "lenet5") for c in METHODS]
                         + [(rc.ChannelLasso, "resnet20")], ids=lambda v: getattr(v, "id", v))
def test_physically_smaller_residual_aware_and_round_trips(cls, arch):
    model = untrained(arch, seed=3)
    train = data.load(zoo.dataset_of(arch), "train").subset(48, seed=0)
    out = small(cls, keep=0.5, images=48).apply(model, train)
    widths = [g.width(out) for g in channel_groups(out)]
    assert widths == [max(1, round(0.5 * g.width(model))) for g in channel_groups(model)]
    if arch == "resnet20":   # only inner channels: block outputs (the shortcut) keep their width
        for a, b in zip(out.modules(), model.modules()):
            if hasattr(a, "conv2"):
                assert a.conv2.out_channels == b.conv2.out_channels
    big, little = measure.report(model, latency=False), measure.report(out, latency=False)
    assert little.params < big.params and little.macs < big.macs
    x = sample_input(model)
    out.eval()
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(out))(x), out(x))


@pytest.mark.parametrize("cls", [rc.ChannelLasso, rc.ThiNet], ids=lambda c: c.id)
def test_keeping_every_channel_changes_nothing(cls, mnist_train_small, mnist_test_small):
    """All channels kept: LASSO keeps all, ThiNet's scales are 1, the refits are exact."""
    model = zoo.pretrained("lenet5") if "lenet5" in zoo.manifest() else untrained("lenet5")
    out = small(cls, keep=1.0, images=256).apply(model, mnist_train_small)
    assert out.config == model.config
    x, _ = mnist_test_small.tensors()
    with torch.no_grad():
        want, got = model(x), out(x)
    assert (got - want).pow(2).sum() < 1e-3 * want.pow(2).sum()


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.id)
def test_bad_values_and_missing_data_raise(cls):
    for field, value in [("keep", 0.0), ("keep", 1.5), ("images", 0), ("positions", 0)]:
        with pytest.raises(ValueError, match=field):
            cls(**{field: value})
    with pytest.raises(ValueError, match="needs data"):
        cls().apply(untrained("lenet300"))
    assert cls().tags().needs_data            # it samples feature maps whatever its settings
    if cls is not rc.ThiNet:   # ThiNet only rescales: it has no ridge
        with pytest.raises(ValueError, match="ridge"):
            cls(ridge=-1.0)
    if cls is rc.DCP:
        with pytest.raises(ValueError, match="discrimination"):
            cls(discrimination=-1.0)
        assert "steps" not in cls(discrimination=0.0).settings()


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.id)
def test_supports_a_network_by_its_declared_channel_groups(cls):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(784, 20), nn.ReLU(), nn.Linear(20, 10))
    assert not cls().supports(plain)         # no channel groups declared
    with pytest.raises(ValueError, match="channel_groups"):
        cls().apply(plain, data.mnist("train").subset(32, seed=0))
    assert all(cls().supports(untrained(a)) for a in ("lenet300", "lenet5", "vgg_small",
                                                       "resnet20"))


def test_dcp_head_leaves_the_global_random_state_alone(mnist_train_small):
    model = untrained("lenet5", seed=2)
    group = channel_groups(model)[0]
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    head = rc.DCP(images=32, head_epochs=1).head(group, model, mnist_train_small)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = rc.DCP(images=32, head_epochs=1).head(group, model, mnist_train_small)
    for a, b in zip(head.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
