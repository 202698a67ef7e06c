"""OBD and OBS against oracles: torch.autograd.functional.hessian and jacobian for the Hessian
diagonals, brute-force least squares for the surgeon's choice and correction."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import untrained
from torch import nn
from torch.func import functional_call

from workbench import train, zoo
from workbench.prune import Magnitude, prunable_layers
from workbench.prune.hessian import (OBD, OBS, dampened_inverse, ggn_diagonal,
                                     hutchinson_diagonal, layer_hessian, obd_saliency,
                                     obs_prune, obs_saliency)

# ------------------------------------------------------------------ tiny models and oracles


def tiny_model(act: type[nn.Module], conv: bool = False) -> nn.Module:
    torch.manual_seed(0)
    if conv:
        model = nn.Sequential(nn.Conv2d(2, 3, 3), act(), nn.Flatten(), nn.Linear(48, 4))
    else:
        model = nn.Sequential(nn.Linear(5, 4), act(), nn.Linear(4, 3))
    return model.double().eval()


def tiny_batch(conv: bool = False, n: int = 16):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, *((2, 6, 6) if conv else (5,)), generator=g, dtype=torch.float64)
    return x, torch.randint(0, 4 if conv else 3, (n,), generator=g)


def weight_names(model):
    return [n for n, _ in prunable_layers(model)]


def as_function(model, x, of_logits: bool = False):
    """The mean cross-entropy (or the logits) as a function of the flattened weights."""
    names = weight_names(model)
    shapes = [model.get_submodule(n).weight.shape for n in names]
    sizes = [s.numel() for s in shapes]

    def f(flat, y=None):
        params = {f"{n}.weight": p.view(s)
                  for n, p, s in zip(names, torch.split(flat, sizes), shapes)}
        logits = functional_call(model, params, (x,))
        return logits if of_logits else F.cross_entropy(logits, y)
    flat = torch.cat([model.get_submodule(n).weight.detach().flatten() for n in names])
    return f, flat


def exact_hessian(model, x, y):
    f, flat = as_function(model, x)
    return torch.autograd.functional.hessian(lambda w: f(w, y), flat)


def exact_ggn(model, x):
    """mean_n J_n^T (diag p_n - p_n p_n^T) J_n, with J from torch.autograd.functional.jacobian."""
    f, flat = as_function(model, x, of_logits=True)
    jac = torch.autograd.functional.jacobian(f, flat)                   # (n, classes, params)
    p = f(flat).softmax(1)
    middle = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("nkp,nkl,nlq->pq", jac, middle, jac) / len(x)


def flat(diag: dict) -> torch.Tensor:
    return torch.cat([d.flatten() for d in diag.values()])


# ------------------------------------------------------------------ OBD


@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
def test_ggn_diagonal_is_the_exact_gauss_newton_diagonal(conv):
    model, (x, y) = tiny_model(nn.Tanh, conv), tiny_batch(conv)
    mine = flat(ggn_diagonal(model, x, chunk=5))       # chunks of 5: batching is exact too
    torch.testing.assert_close(mine, exact_ggn(model, x).diagonal(), rtol=1e-10, atol=1e-12)


def test_smooth_nets_hessian_diagonal_differs_from_ggn_relu_nets_it_does_not():
    """The Hessian diagonal has a second-derivative term J'' dL/df; for a ReLU net the logits
    are linear in each single weight, so it vanishes and the two diagonals are equal."""
    x, y = tiny_batch()
    smooth = tiny_model(nn.Tanh)
    gap = exact_hessian(smooth, x, y).diagonal() - exact_ggn(smooth, x).diagonal()
    assert gap.abs().max() > 1e-3
    relu = tiny_model(nn.ReLU)
    torch.testing.assert_close(exact_hessian(relu, x, y).diagonal(), exact_ggn(relu, x).diagonal())


@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
def test_hutchinson_converges_to_the_exact_hessian_diagonal(conv):
    model, (x, y) = tiny_model(nn.Tanh, conv), tiny_batch(conv)
    hessian = exact_hessian(model, x, y)
    exact = hessian.diagonal()
    # Standard error of each entry: sqrt(sum_{j != i} H_ij^2 / samples).
    spread = ((hessian ** 2).sum(1) - exact ** 2).sqrt()
    errors = {}
    for samples in (100, 3000):
        est = flat(hutchinson_diagonal(model, x, y, samples, torch.Generator().manual_seed(0),
                                       chunk=7))
        assert ((est - exact).abs() <= 5 * spread / samples ** 0.5 + 1e-12).all()
        errors[samples] = (est - exact).norm()
        assert errors[samples] < 2 * spread.norm() / samples ** 0.5    # its expected size
    assert errors[3000] < 0.35 * errors[100]        # ~ 1/sqrt(30) = 0.18 expected


def test_obd_saliency_formula():
    w, h = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([4.0, 0.5, 8.0])
    assert obd_saliency(w, h).tolist() == [2.0, 1.0, 1.0]


@pytest.fixture(scope="module")
def lenet300():
    if "lenet300" not in zoo.manifest():
        pytest.skip("no lenet300 checkpoint")
    return zoo.pretrained("lenet300")


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_obd_prunes_the_lowest_saliency(scope, mnist_train_small):
    model = untrained("lenet5", seed=3)
    method = OBD(sparsity=0.6, images=64, scope=scope)
    sal = method.saliencies(model, mnist_train_small)
    pruned = method.apply(model, mnist_train_small)
    kept, dropped = [], []
    for name, m in prunable_layers(pruned):
        mask = m.weight_mask.bool()
        if scope == "layer":
            assert (~mask).sum() == round(0.6 * mask.numel())
            assert sal[name][mask].min() >= sal[name][~mask].max()
        kept.append(sal[name][mask])
        dropped.append(sal[name][~mask])
    kept, dropped = torch.cat(kept), torch.cat(dropped)
    if scope == "global":   # one threshold for the whole network
        assert len(dropped) == round(0.6 * (len(kept) + len(dropped)))
        assert kept.min() >= dropped.max()


def test_obd_ordering_differs_from_magnitude_and_costs_less_loss(lenet300, mnist_train_small):
    """At moderate sparsity the saliency (a predicted loss increase) picks other weights than
    |w| does, and the loss on the images it measured grows less."""
    x, y = mnist_train_small.tensors()
    obd = OBD(sparsity=0.5, images=512, scope="global").apply(lenet300, mnist_train_small)
    mag = Magnitude(sparsity=0.5, scope="global").apply(lenet300)
    obd_mask = torch.cat([m.weight_mask.flatten() for _, m in prunable_layers(obd)])
    mag_mask = torch.cat([m.weight_mask.flatten() for _, m in prunable_layers(mag)])
    assert obd_mask.sum() == mag_mask.sum()
    agree = (obd_mask * mag_mask).sum() / mag_mask.sum()
    assert agree < 0.9
    with torch.no_grad():
        losses = {k: F.cross_entropy(m(x), y).item() - F.cross_entropy(lenet300(x), y).item()
                  for k, m in (("obd", obd), ("magnitude", mag))}
    assert losses["obd"] < losses["magnitude"]


def test_obd_validates():
    with pytest.raises(ValueError, match="estimator"):
        OBD(estimator="exact")
    with pytest.raises(ValueError, match="samples"):
        OBD(samples=2.5)
    with pytest.raises(ValueError, match="data"):
        OBD().apply(untrained("lenet300"))
    assert "samples" not in OBD().settings() and "samples" in OBD(estimator="hutchinson").settings()


# ------------------------------------------------------------------ OBS


def least_squares(x, w, support):
    """The best weights on ``support`` for reproducing x @ w, and their squared error / n."""
    sol = torch.linalg.lstsq(x[:, support], x @ w).solution
    best = torch.zeros_like(w)
    best[support] = sol
    return best, ((x @ (best - w)) ** 2).sum() / len(x)


def correlated_inputs(n=60, d=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mix


@pytest.mark.parametrize("seed", range(5))
def test_obs_single_removal_is_the_brute_force_optimum(seed):
    x = correlated_inputs(seed=seed)
    w = torch.randn(1, 7, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
    h_inv = torch.linalg.inv(2 * x.T @ x / len(x))
    trials = [least_squares(x, w[0], [j for j in range(7) if j != q]) for q in range(7)]
    errors = torch.stack([e for _, e in trials])
    best = int(errors.argmin())
    # The saliency w_q^2 / (2 [H^-1]_qq) is the loss of the best correction, for every q.
    torch.testing.assert_close(obs_saliency(w[0], h_inv.diagonal()), errors)
    new, mask = obs_prune(w, h_inv, 1)
    assert mask[0].tolist() == [float(j != best) for j in range(7)]
    torch.testing.assert_close(new[0], trials[best][0])


def test_obs_one_at_a_time_is_greedy_brute_force_and_ends_least_squares_optimal():
    x = correlated_inputs(d=8, seed=3)
    w = torch.randn(3, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    h_inv = torch.linalg.inv(2 * x.T @ x / len(x))
    new, mask = obs_prune(w, h_inv, 5, step=0.0)
    for r in range(3):
        alive = list(range(8))
        for _ in range(5):                      # brute-force greedy backward elimination
            errs = [least_squares(x, w[r], [j for j in alive if j != q])[1] for q in alive]
            alive.remove(alive[int(torch.stack(errs).argmin())])
        assert mask[r].nonzero().flatten().tolist() == alive
        torch.testing.assert_close(new[r], least_squares(x, w[r], alive)[0])


def test_obs_several_at_a_time_still_corrects_exactly():
    """Removing a set jointly uses the exact joint correction: the survivors end at the least
    squares optimum of their support, whatever the support is; a protected bias column is
    corrected but never removed."""
    x = torch.cat([correlated_inputs(n=80, d=12, seed=5), torch.ones(80, 1, dtype=torch.float64)],
                  1)
    w = torch.randn(4, 13, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    h_inv = torch.linalg.inv(2 * x.T @ x / len(x))
    new, mask = obs_prune(w, h_inv, 9, step=0.3, protected=1)
    assert (mask[:, :-1].sum(1) == 3).all() and (mask[:, -1] == 1).all()
    assert (new[mask == 0] == 0).all()
    for r in range(4):
        torch.testing.assert_close(new[r], least_squares(x, w[r], mask[r].nonzero().flatten())[0])


def test_obs_conv_layer_uses_the_unfolded_inputs():
    """A pruned convolution's output error is the least-squares minimum on its support,
    computed here by F.conv2d against explicit patches, with the bias corrected too."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    inputs = torch.randn(6, 2, 5, 5, dtype=torch.float64)
    method = OBS(sparsity=0.5, damp=0.0)
    target = conv(inputs).detach()
    weight, mask = method.prune_layer(conv, inputs)
    assert (mask.flatten(1).sum(1) == 9).all() and (weight[mask == 0] == 0).all()
    patches = F.unfold(inputs, 3, padding=1).transpose(1, 2).reshape(-1, 18)
    patches = torch.cat([patches, torch.ones(len(patches), 1, dtype=torch.float64)], 1)
    out = F.conv2d(inputs, weight, conv.bias, padding=1)
    for o in range(3):
        support = torch.cat([mask[o].flatten().nonzero().flatten(), torch.tensor([18])])
        sol = torch.linalg.lstsq(patches[:, support], target[:, o].flatten()).solution
        best = patches[:, support] @ sol
        torch.testing.assert_close(out[:, o].flatten(), best)
    h = layer_hessian(conv, inputs)
    torch.testing.assert_close(h, 2 * patches.T @ patches / len(patches))


def test_dampening_makes_a_singular_hessian_invertible():
    x = torch.cat([torch.randn(20, 3, dtype=torch.float64), torch.zeros(20, 1,
                                                                        dtype=torch.float64)], 1)
    h = 2 * x.T @ x / 20
    inv = dampened_inverse(h, 0.01)
    assert torch.isfinite(inv).all()
    lam = 0.01 * h.diagonal().mean()
    torch.testing.assert_close(inv @ (h + lam * torch.eye(4, dtype=torch.float64)),
                               torch.eye(4, dtype=torch.float64))


def relative_error(module, pruned_module, x):
    with torch.no_grad():
        y = module(x)
        return ((pruned_module(x) - y).pow(2).sum() / y.pow(2).sum()).item()


def test_obs_beats_magnitude_and_obd_before_retraining(lenet300, mnist_train_small,
                                                       mnist_test_small):
    """LeNet-300-100 at 90 %: the first layer reproduces its outputs better (on test images)
    and the whole network classifies better, with no retraining at all."""
    obs = OBS(sparsity=0.9, images=512, step=0.1).apply(lenet300, mnist_train_small)
    mag = Magnitude(sparsity=0.9).apply(lenet300)
    obd = OBD(sparsity=0.9, images=512).apply(lenet300, mnist_train_small)
    x = mnist_test_small.tensors()[0].flatten(1)
    errors = {k: relative_error(lenet300.net[1], m.net[1], x)
              for k, m in (("obs", obs), ("magnitude", mag), ("obd", obd))}
    assert errors["obs"] < 0.5 * min(errors["magnitude"], errors["obd"])
    acc = {k: train.evaluate(m, mnist_test_small)
           for k, m in (("obs", obs), ("magnitude", mag), ("obd", obd))}
    assert acc["obs"] > max(acc["magnitude"], acc["obd"]) + 0.05
    assert acc["obs"] > 0.95
    for _, m in prunable_layers(obs):
        rows = m.weight_mask.flatten(1)
        assert (rows.sum(1) == rows.shape[1] - round(0.9 * rows.shape[1])).all()


def test_obs_validates_and_needs_data():
    with pytest.raises(ValueError, match="step"):
        OBS(step=1.5)
    with pytest.raises(ValueError, match="data"):
        OBS().apply(untrained("lenet300"))


def test_obs_prune_leaves_its_arguments_alone():
    x = correlated_inputs(d=6, seed=8)
    w = torch.randn(2, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    h_inv = torch.linalg.inv(2 * x.T @ x / len(x))
    w0, h0 = w.clone(), h_inv.clone()
    obs_prune(w, h_inv, 3, step=0.0)
    assert torch.equal(w, w0) and torch.equal(h_inv, h0)


def test_obs_and_obd_need_no_zoo_network(mnist_train_small):
    """Any network of Conv2d / Linear layers: the layer sizes come from the data's shape, not
    from a zoo attribute such as input_shape."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 20), nn.ReLU(), nn.Linear(20, 10))
    assert not hasattr(model, "input_shape")
    for method in (OBS(sparsity=0.5, images=64, step=0.5), OBD(sparsity=0.5, images=16)):
        assert method.supports(model) and method.tags().needs_data
        pruned = method.apply(model, mnist_train_small)
        for _, m in prunable_layers(pruned):
            assert int((m.weight_mask == 0).sum()) == m.weight.numel() // 2
