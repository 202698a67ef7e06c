"""prune.winograd: F(2x2, 3x3) against F.conv2d, pruning in the Winograd domain, and the count
of the multiplications really performed."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import sample_input, untrained
from torch.nn.utils import prune

from workbench import codec, data, measure, models
from workbench.prune import winograd as wg
from workbench.prune.magnitude import magnitude_mask
from workbench.prune.winograd import Winograd, WinogradConv2d


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_one_dimensional_f23_is_a_correlation():
    """Lavin & Gray's F(2, 3): y = A^T [(G g) * (B^T d)] gives y_i = sum_k d_(i+k) g_k."""
    d, g = rand(4, seed=1), rand(3, seed=2)
    y = wg.A_T @ ((wg.G @ g) * (wg.B_T @ d))
    assert torch.allclose(y, torch.stack([d[i:i + 3] @ g for i in range(2)]), atol=1e-14)


@pytest.mark.parametrize("n, c, k, h, w", [(2, 3, 5, 8, 8), (2, 3, 4, 7, 9), (1, 2, 3, 1, 1),
                                           (3, 1, 2, 2, 5), (1, 4, 4, 6, 3)])
def test_winograd_conv2d_equals_conv2d_float64(n, c, k, h, w):
    x, weight, bias = rand(n, c, h, w, seed=1), rand(k, c, 3, 3, seed=2), rand(k, seed=3)
    u = wg.winograd_weights(weight)
    assert u.shape == (k, c, 4, 4)
    out = wg.winograd_conv2d(x, u, bias)
    ref = F.conv2d(x, weight, bias, padding=1)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    assert torch.allclose(wg.winograd_conv2d(x, u), F.conv2d(x, weight, padding=1), atol=1e-12)


def test_float32_and_gradients_match_conv2d():
    """Training through the Winograd layer: d loss / d w via U = G w G^T equals conv2d's."""
    x = rand(2, 3, 9, 6, seed=4).requires_grad_()
    w = rand(4, 3, 3, 3, seed=5).requires_grad_()
    target = rand(2, 4, 9, 6, seed=6)
    (wg.winograd_conv2d(x, wg.winograd_weights(w)) * target).sum().backward()
    grads = x.grad.clone(), w.grad.clone()
    x.grad, w.grad = None, None
    (F.conv2d(x, w, padding=1) * target).sum().backward()
    assert torch.allclose(grads[0], x.grad, atol=1e-12)
    assert torch.allclose(grads[1], w.grad, atol=1e-12)
    x32, w32 = x.detach().float(), w.detach().float()
    assert torch.allclose(wg.winograd_conv2d(x32, wg.winograd_weights(w32)),
                          F.conv2d(x32, w32, padding=1), atol=1e-5)


def test_gradcheck_through_u():
    x, u = rand(1, 2, 5, 4, seed=7), rand(3, 2, 4, 4, seed=8).requires_grad_()
    assert torch.autograd.gradcheck(lambda u: wg.winograd_conv2d(x, u), (u,))


def test_sparse_elementwise_counts_the_multiplications_it_performs():
    x = rand(2, 3, 7, 8, seed=9)
    u = wg.winograd_weights(rand(5, 3, 3, 3, seed=10))
    u = u * magnitude_mask(u, 0.6)
    v, (th, tw) = wg.transform_input(x)
    assert v.shape == (16, 3, 2 * th * tw) and (th, tw) == (4, 4)
    dense = wg.elementwise(u, v)
    m, count = wg.sparse_elementwise(u, v)
    assert torch.allclose(m, dense, atol=1e-12)
    # brute force: one multiplication per nonzero U entry per tile, over both images
    assert count == sum(1 for value in u.flatten() if value != 0) * 2 * th * tw
    layer = WinogradConv2d(3, 5)
    with torch.no_grad():
        layer.U.copy_(u)
    y = layer(x.float())
    counts = layer.mac_counts((x.float(),), y)
    assert counts["effective_macs"] * 2 == count
    assert counts["macs"] == 5 * 3 * 16 * th * tw


def test_spatial_zeros_are_filled_in_by_the_transform():
    """The reason to prune in the Winograd domain: one nonzero in a corner of g becomes 9 in
    U, the centre one 4, and a 70%-sparse kernel set gives a mostly dense U."""
    corner, centre = torch.zeros(1, 1, 3, 3, dtype=torch.float64), torch.zeros(1, 1, 3, 3,
                                                                                dtype=torch.float64)
    corner[..., 0, 0], centre[..., 1, 1] = 1, 1
    assert int(wg.winograd_weights(corner).count_nonzero()) == 9
    assert int(wg.winograd_weights(centre).count_nonzero()) == 4
    w = rand(16, 16, 3, 3, seed=11)
    u = wg.winograd_weights(w * magnitude_mask(w, 0.7))
    assert u.count_nonzero() / u.numel() > 0.5


def test_module_from_conv_and_its_counts():
    conv = torch.nn.Conv2d(3, 6, 3, padding=1, bias=True)
    layer = WinogradConv2d.from_conv(conv)
    assert layer.config == {"in_channels": 3, "out_channels": 6, "bias": True}
    x = rand(2, 3, 11, 10, dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(layer(x), conv(x), atol=1e-5)
    prune.custom_from_mask(layer, "U", magnitude_mask(layer.U.detach(), 0.75))
    counts = layer.mac_counts((x,), layer(x))
    tiles = 6 * 5
    assert counts == {"params": 6 * 3 * 16, "nonzeros": 6 * 3 * 4, "macs": 6 * 3 * 16 * tiles,
                      "effective_macs": 6 * 3 * 4 * tiles}


def test_eligible_convs_of_the_zoo_nets():
    assert len(wg.eligible_convs(models.build("vgg_small"))) == 6
    resnet = models.build("resnet20")
    names = wg.eligible_convs(resnet)
    assert len(names) == 17                       # 19 convs minus the two stride-2 ones
    assert "stages.1.0.conv1" not in names and "stages.2.0.conv1" not in names
    assert not wg.winograd_eligible(torch.nn.Conv2d(3, 3, 5, padding=2))
    assert not wg.winograd_eligible(torch.nn.Conv2d(3, 3, 3, padding=1, groups=3))


@pytest.mark.parametrize("arch", ["vgg_small", "resnet20"])
def test_unpruned_winograd_network_equals_the_original(arch):
    model = untrained(arch, seed=3)
    out = Winograd(sparsity=0.0).apply(model)
    converted = [n for n, m in out.named_modules() if isinstance(m, WinogradConv2d)]
    assert converted == wg.eligible_convs(model)
    x = sample_input(model)
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(out(x), ref, atol=1e-4 * ref.abs().max().item())


def test_winograd_domain_masks_are_pytorchs_l1_unstructured():
    model = untrained("resnet20", seed=4)
    pruned = Winograd(sparsity=0.7).apply(model)
    dense = Winograd(sparsity=0.0).apply(model)
    for name in wg.eligible_convs(model):
        oracle = dense.get_submodule(name)
        prune.l1_unstructured(oracle, "U", amount=0.7)
        layer = pruned.get_submodule(name)
        assert torch.equal(layer.U_mask, oracle.U_mask), name
        assert int((layer.U == 0).sum()) == round(0.7 * layer.U.numel())
    # the stride-2 convolutions are not Winograd layers and are left as they were
    assert torch.equal(pruned.stages[1][0].conv1.weight, model.stages[1][0].conv1.weight)


def test_spatial_domain_baseline_prunes_w_then_transforms():
    model = untrained("vgg_small", seed=5)
    out = Winograd(sparsity=0.7, domain="spatial").apply(model)
    for name in wg.eligible_convs(model):
        w = model.get_submodule(name).weight.detach()
        expected = wg.winograd_weights((w * magnitude_mask(w, 0.7)).double()).float()
        assert torch.allclose(out.get_submodule(name).U, expected, atol=1e-6)
    winograd = Winograd(sparsity=0.7, domain="winograd").apply(model)
    spatial_rows = wg.multiplications(out, model.input_shape)
    winograd_rows = wg.multiplications(winograd, model.input_shape)
    # at equal sparsity, only Winograd-domain zeros remove multiplications
    assert spatial_rows[-1]["sparse_winograd"] > 1.5 * winograd_rows[-1]["sparse_winograd"]
    assert winograd_rows[-1]["vs_winograd_x"] == pytest.approx(1 / 0.3, rel=1e-3)


def test_multiplication_counts_and_measure_agree():
    model = untrained("vgg_small", seed=6)
    out = Winograd(sparsity=0.8).apply(model)
    rows = wg.multiplications(out, model.input_shape)
    layers, total = rows[:-1], rows[-1]
    assert len(layers) == 6 and total["layer"] == "total"
    for r in layers:   # even sizes: dense Winograd does 4 multiplications per output, not 9
        assert r["spatial"] * 4 == r["winograd"] * 9
    table = {r["layer"]: r for r in measure.layer_table(out, model.input_shape)}
    for r in layers:
        assert table[r["layer"]]["type"] == "WinogradConv2d"
        assert table[r["layer"]]["effective_macs"] == r["sparse_winograd"]
    base = {r["layer"]: r for r in measure.layer_table(model, model.input_shape)}
    assert total["spatial"] == sum(base[r["layer"]]["macs"] for r in layers)
    assert total["vs_spatial_x"] == pytest.approx(9 / 4 / 0.2, rel=1e-3)


def test_codec_round_trip_of_a_pruned_winograd_network():
    model = untrained("resnet20", seed=7)
    out = Winograd(sparsity=0.8).apply(model).eval()
    blob = codec.encode(out)
    header = codec.read_header(blob)
    assert {m["type"] for m in header["modules"]} == {"WinogradConv2d"}
    back = codec.decode(blob)
    x = sample_input(model)
    with torch.no_grad():
        assert torch.equal(back(x), out(x))
    assert len(blob) < 0.5 * len(codec.encode(out, formats=("dense",)))


def test_retraining_in_the_winograd_domain_keeps_zeros_and_moves_u():
    torch.manual_seed(0)
    model = models.build("vgg_small", width=4).eval()
    train = data.cifar10("train").subset(64, seed=0)
    pruned = Winograd(sparsity=0.6).apply(model)
    method = Winograd(sparsity=0.6, epochs=1, batch_size=32, lr=0.05)
    tuned = method.apply(model, train)
    for name in wg.eligible_convs(model):
        before, after = pruned.get_submodule(name).U, tuned.get_submodule(name).U
        assert torch.equal(before == 0, after == 0), name
        assert not torch.allclose(before, after), name    # the gradient reached U itself
    torch.manual_seed(999)                                # the global RNG does not matter
    again = codec.plain_state_dict(method.apply(model, train))
    for key, value in codec.plain_state_dict(tuned).items():
        assert torch.equal(again[key], value), key


def test_validation():
    with pytest.raises(ValueError, match="epochs"):
        Winograd(epochs=1.5)
    with pytest.raises(ValueError, match="domain"):
        Winograd(domain="fourier")
    with pytest.raises(ValueError, match="sparsity"):
        Winograd(sparsity=1.5)
    with pytest.raises(ValueError, match="needs data"):
        Winograd(epochs=1).apply(models.build("vgg_small", width=4))
    assert "lr" not in Winograd().settings() and "lr" in Winograd(epochs=2).settings()


class Small(torch.nn.Module):
    """Not a zoo network: a 3x3 stride-1 conv (eligible), a 3x3 stride-2 conv (not), a Linear."""
    input_shape = (2, 8, 8)

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.b(torch.relu(self.a(x))).flatten(1))


def test_supports_any_network_with_a_3x3_stride_1_conv():
    torch.manual_seed(0)
    model = Small().eval()
    method = Winograd(sparsity=0.5)
    assert method.supports(model) and not method.tags().needs_data
    out = method.apply(model)
    assert isinstance(out.a, WinogradConv2d) and isinstance(out.b, torch.nn.Conv2d)
    assert int((out.a.U == 0).sum()) == 0.5 * out.a.U.numel()
    only_strided = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, stride=2, padding=1))
    for net in (only_strided, models.build("lenet5"), models.build("lenet300")):
        assert not method.supports(net)
    with pytest.raises(ValueError, match="3x3 stride-1"):
        method.apply(models.build("lenet5"))
    assert Winograd(epochs=1).tags().needs_data
