"""workbench.quantize.core: the straight-through estimator, shared weights whose centroid
gradient is the sum of its weights' gradients, and folding a copy without harming the original."""
from __future__ import annotations

import torch
from conftest import sample_input, untrained

from workbench.method import clone_model
from workbench.quantize import SharedWeights, fold, quantizable_layers, quantize_weights, round_ste


def test_round_ste_rounds_forward_and_passes_gradients():
    x = torch.tensor([0.2, 1.7, -2.5], requires_grad=True)
    y = round_ste(x)
    assert torch.equal(y, x.detach().round())
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(3))


def test_shared_weights_gradient_is_summed_per_centroid():
    layer = torch.nn.Linear(5, 3)
    codebook = torch.tensor([-0.3, 0.1, 0.4])
    indices = (layer.weight.detach().unsqueeze(-1) - codebook).abs().argmin(-1)
    quantize_weights(torch.nn.Sequential(layer), lambda n, m: SharedWeights(indices, codebook))
    assert torch.equal(layer.weight, codebook[indices])
    x = torch.randn(4, 5)
    layer(x).pow(2).sum().backward()
    book = layer.parametrizations.weight.original
    # the gradient of each weight, by hand: d/dW sum((xW^T + b)^2) = 2 (xW^T + b)^T x
    grad_w = 2 * (x @ layer.weight.detach().T + layer.bias.detach()).T @ x
    by_hand = torch.zeros(3).index_add_(0, indices.flatten(), grad_w.flatten())
    torch.testing.assert_close(book.grad, by_hand)


def test_fold_of_a_copy_leaves_the_original_working():
    model = untrained("lenet5", seed=3)
    quantize_weights(model, lambda n, m: SharedWeights(
        torch.zeros_like(m.weight, dtype=torch.int64), torch.tensor([0.01])))
    x = sample_input(model)
    before = model(x)
    folded = fold(clone_model(model))
    assert all(not hasattr(m, "parametrizations") for _, m in quantizable_layers(folded))
    torch.testing.assert_close(model(x), before, atol=0, rtol=0)
    torch.testing.assert_close(folded(x), before, atol=0, rtol=0)


def test_parameters_of_a_parametrized_model_are_those_it_computes():
    from workbench import measure
    model = untrained("lenet300", seed=4)
    shared = clone_model(model)
    quantize_weights(shared, lambda n, m: SharedWeights(
        (m.weight.detach() > 0).long(), torch.tensor([0.0, 0.02])))
    params, nonzero = measure.count_params(shared)
    assert params == measure.count_params(model)[0]
    folded = fold(clone_model(shared))
    assert (params, nonzero) == measure.count_params(folded)
