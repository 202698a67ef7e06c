"""``arch.regularizers``: dropout and DropConnect while training only, PReLU for ReLU, and the
activation sparsity they leave (``workbench.arch.regularizers``)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench import METHODS, codec, data, train, zoo
from workbench.arch.regularizers import (DropConnectMask, activation_macs, relus_to_prelus,
                                         training_regularizers)
from workbench.method import clone_model

Regularizers = METHODS["arch.regularizers"]


@pytest.fixture(scope="module")
def lenet300():
    return zoo.pretrained("lenet300")


@pytest.fixture(scope="module")
def mnist_test():
    return data.mnist("test").subset(500, seed=0)


def test_dropconnect_masks_a_share_p_of_the_weights_and_scales_the_rest():
    weight = torch.randn(400, 300)
    mask = DropConnectMask(0.3).train()
    out = mask(weight)
    dropped = (out == 0).float().mean().item()
    assert dropped == pytest.approx(0.3, abs=0.01)
    kept = out != 0
    assert torch.allclose(out[kept], weight[kept] / 0.7)
    assert not torch.equal(mask(weight), out)               # a new mask every pass
    assert torch.equal(mask.eval()(weight), weight)        # the mean network at test time


def test_regularizers_act_in_train_mode_only_and_leave_nothing_behind(lenet300):
    model = clone_model(lenet300)
    keys = list(model.state_dict())
    seen = {}
    first = model.net[1]
    x = torch.rand(64, 1, 28, 28) + 0.1                      # no zero pixels
    with training_regularizers(model, dropout=0.5, dropconnect=0.4):
        # runs after the dropout hook (hooks run in the order they were registered)
        spy = first.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
        model.train()
        model(x)
        share = (seen["x"] == 0).float().mean().item()
        assert share == pytest.approx(0.5, abs=0.02)           # dropout on the layer's input
        masked = first.weight                                  # DropConnect on its weights
        assert (masked == 0).float().mean().item() == pytest.approx(0.4, abs=0.01)
        model.eval()
        model(x)
        assert (seen["x"] == 0).sum() == 0                     # nothing dropped in eval mode
        spy.remove()
    assert list(model.state_dict()) == keys                    # no parametrization left
    for key, value in lenet300.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_dropconnect_gradients_reach_only_the_kept_weights(lenet300):
    model = clone_model(lenet300).train()
    layer = model.net[1]
    with training_regularizers(model, dropout=0.0, dropconnect=0.5):
        x = torch.randn(8, 1, 28, 28)
        torch.manual_seed(0)                    # the first random draw is net.1's mask
        model(x).sum().backward()
        torch.manual_seed(0)                    # the same mask again, to read it
        mask = DropConnectMask(0.5).train()(torch.ones_like(layer.parametrizations.weight.original)) != 0
        grad = layer.parametrizations.weight.original.grad
    assert torch.all(grad[~mask] == 0) and grad[mask].abs().sum() > 0


def test_a_prelu_of_slope_zero_is_the_relu_network(lenet300):
    model = clone_model(lenet300)
    assert relus_to_prelus(model, init=0.0) == 2
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), lenet300(x), atol=1e-6)
        decoded = codec.decode(codec.encode(model))            # the file keeps the PReLUs
        assert torch.equal(decoded(x), model(x))


def test_activation_sparsity_is_the_share_of_zero_relu_outputs(lenet300, mnist_test):
    rows = {r["layer"]: r for r in activation_macs(lenet300, mnist_test, images=500)}
    # the oracle: the first hidden layer's ReLU outputs, computed by hand
    x = mnist_test.normalize(mnist_test.images).flatten(1)
    hidden = torch.relu(lenet300.net[1](x))
    expected = (hidden == 0).float().mean().item()
    row = rows["net.3"]
    assert row["zero_inputs"] == pytest.approx(expected, abs=1e-4)
    assert row["macs"] == 300 * 100
    assert row["macs_skipping_zeros"] == pytest.approx(row["macs"] * (1 - expected), abs=1)


def test_prelu_training_gives_up_the_zeros_relu_training_keeps(lenet300, mnist_test):
    small = data.mnist("train").subset(512, seed=0)
    with train.quiet():
        relu = Regularizers(epochs=1, dropout=0.5).apply(lenet300, small)
        prelu = Regularizers(epochs=1, dropout=0.0, activation="prelu").apply(lenet300, small)
    share = lambda net: activation_macs(net, mnist_test, images=200)[1]["zero_inputs"]
    assert share(relu) > 0.3 and share(prelu) == 0.0
    assert any(isinstance(m, nn.PReLU) for m in prelu.modules())


def test_settings_that_cannot_regularize_are_refused(lenet300):
    with pytest.raises(ValueError, match="epochs=0"):
        Regularizers(epochs=0)
    resnet = zoo.pretrained("resnet20")      # its blocks call F.relu: a module swap misses them
    assert not Regularizers(activation="prelu").supports(resnet)
    assert Regularizers().supports(resnet)
    assert Regularizers(activation="prelu").supports(zoo.pretrained("vgg_small"))
