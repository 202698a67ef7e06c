"""workbench.prune.group_lasso: the penalty's gradient against its closed form (autograd as the
oracle), the groups it reads, and that training with it zeroes whole groups that are then
removed physically without changing the outputs."""
from __future__ import annotations

import pytest
import torch
from conftest import sample_input, untrained

from workbench import codec, data, measure, models, zoo
from workbench.method import clone_model
from workbench.prune.group_lasso import (GroupLasso, channel_group, filter_group, group_norms,
                                         group_lasso_penalty, kept_channels)
from workbench.prune.surgery import channel_groups


def unit(rows: torch.Tensor) -> torch.Tensor:
    """Each row divided by its L2 norm: the gradient of sum_g ||W_g|| with respect to W_g."""
    return rows / rows.norm(dim=1, keepdim=True)


def test_penalty_gradient_is_lambda_w_over_norm_on_fc_layers():
    torch.manual_seed(0)
    model = models.build("lenet300", hidden=[5, 4])
    lam = 0.3
    (lam * group_lasso_penalty(model)).backward()
    l1, l2, l3 = model.net[1], model.net[3], model.net[5]
    with torch.no_grad():
        # producer rows (weights and bias together) of both hidden layers
        row1 = unit(torch.cat([l1.weight, l1.bias[:, None]], 1))
        row2 = unit(torch.cat([l2.weight, l2.bias[:, None]], 1))
        # consumer columns: net.3 reads hidden 1, net.5 reads hidden 2
        col2, col3 = unit(l2.weight.T).T, unit(l3.weight.T).T
    torch.testing.assert_close(l1.weight.grad, lam * row1[:, :-1])
    torch.testing.assert_close(l1.bias.grad, lam * row1[:, -1])
    torch.testing.assert_close(l2.weight.grad, lam * (row2[:, :-1] + col2))   # both groups
    torch.testing.assert_close(l2.bias.grad, lam * row2[:, -1])
    torch.testing.assert_close(l3.weight.grad, lam * col3)
    assert l3.bias.grad is None          # the output layer's bias is in no group


def test_penalty_gradient_on_a_conv_with_batchnorm():
    torch.manual_seed(1)
    model = models.build("vgg_small", width=2)
    (0.5 * group_lasso_penalty(model, ("filters",))).backward()
    conv, bn = model.features[0], model.features[1]
    with torch.no_grad():
        rows = unit(torch.cat([conv.weight.flatten(1), bn.weight[:, None], bn.bias[:, None]], 1))
    torch.testing.assert_close(conv.weight.grad, 0.5 * rows[:, :-2].view_as(conv.weight))
    torch.testing.assert_close(bn.weight.grad, 0.5 * rows[:, -2])
    torch.testing.assert_close(bn.bias.grad, 0.5 * rows[:, -1])
    assert model.features[3].weight.grad is not None and model.classifier[1].weight.grad is None


def test_groups_read_the_right_weights():
    model = untrained("lenet5")
    g = {x.name: x for x in channel_groups(model)}
    fc_in = model.classifier[1].weight
    cols = channel_group(model, g["features.2"])           # 16 inputs per channel (Flatten)
    assert cols.shape == (50, 500 * 16)
    assert torch.equal(cols[7], fc_in[:, 7 * 16:8 * 16].flatten())
    conv_cols = channel_group(model, g["features.0"])
    assert torch.equal(conv_cols[3], model.features[2].weight[:, 3].flatten())
    rows = filter_group(model, g["features.0"])
    assert torch.equal(rows[3], torch.cat([model.features[0].weight[3].flatten(),
                                           model.features[0].bias[3:4]]))
    resnet = untrained("resnet20")
    assert set(group_norms(resnet)) == {x.name for x in channel_groups(resnet)}  # inner only


def test_kept_channels_need_every_group_above_threshold():
    norms = {"filters": torch.tensor([1.0, 1e-6, 0.5, 0.2]),
             "channels": torch.tensor([0.3, 0.7, 1e-5, 0.4])}
    assert kept_channels(norms, 1e-3).tolist() == [0, 3]
    assert kept_channels(norms, 5.0).tolist() == [0]     # never an empty layer: the strongest


@pytest.fixture(scope="module")
def mnist_train_2k():
    return data.mnist("train").subset(2048, seed=0)


def zero_groups(model, threshold=1e-3) -> int:
    return sum(int((n < threshold).sum()) for per in group_norms(model).values()
               for n in per.values())


def test_training_with_the_penalty_zeroes_whole_groups(mnist_train_2k):
    base = zoo.pretrained("lenet300")
    with_penalty = GroupLasso(lam=0.05, lr=0.05, epochs=3).train(clone_model(base),
                                                                 mnist_train_2k)
    without = GroupLasso(lam=0.0, lr=0.05, epochs=3).train(clone_model(base), mnist_train_2k)
    with torch.no_grad():
        zeroed, baseline = zero_groups(with_penalty), zero_groups(without)
    assert baseline == 0 and zeroed >= 30, (zeroed, baseline)


def test_apply_removes_the_zeroed_groups_physically_and_exactly(mnist_train_2k):
    base = zoo.pretrained("lenet300")
    method = GroupLasso(lam=0.05, lr=0.05, epochs=3, threshold=1e-3, finetune_epochs=0)
    trained = method.train(clone_model(base), mnist_train_2k)
    pruned = method.apply(base, mnist_train_2k)
    assert pruned.config["hidden"][0] < 300 and pruned.config["hidden"][1] < 100
    x = mnist_train_2k.tensors()[0][:256]
    with torch.no_grad():   # removed groups had norms < 1e-3: the logits move by about that
        torch.testing.assert_close(pruned(x), trained(x), rtol=0, atol=1e-2)
        assert torch.equal(pruned(x).argmax(1), trained(x).argmax(1))
    big, small = measure.report(base, latency=False), measure.report(pruned, latency=False)
    assert small.params < big.params and small.macs < big.macs
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(pruned))(x), pruned(x))


def test_residual_nets_lose_only_inner_channels_and_zero_groups_exactly():
    model = untrained("resnet20", seed=3)
    with torch.no_grad():     # zero the filter groups (conv1 rows, bn1 scale and shift)
        for stage in model.stages:
            for block in stage:
                for t in (block.conv1.weight, block.bn1.weight, block.bn1.bias):
                    t[::4] = 0
    ds = data.cifar10("train").subset(16, seed=0)
    pruned = GroupLasso(epochs=0, groups="filters", finetune_epochs=0).apply(model, ds)
    assert pruned.config["blocks_per_stage"] == [3, 3, 3]
    assert pruned.config["inner"] == [12] * 3 + [24] * 3 + [48] * 3
    for s, stage in enumerate(pruned.stages):
        assert all(block.conv2.out_channels == 16 * 2 ** s for block in stage)
    x = sample_input(model)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=1e-5, atol=1e-5)


def test_needs_data_only_when_it_trains():
    assert GroupLasso(epochs=0, finetune_epochs=0).tags().needs_data is False
    assert GroupLasso(epochs=0, finetune_epochs=1).tags().needs_data
    assert GroupLasso(epochs=1, finetune_epochs=0).tags().needs_data
    model = untrained("lenet300", seed=4)
    with torch.no_grad():     # zero the producer rows of 20 neurons: removed without data
        model.net[1].weight[:20] = 0
        model.net[1].bias[:20] = 0
    pruned = GroupLasso(epochs=0, finetune_epochs=0, groups="filters").apply(model)
    assert pruned.config["hidden"] == [280, 100]
    assert "lr" not in GroupLasso(epochs=0, finetune_epochs=0).settings()
    with pytest.raises(ValueError, match="needs data"):
        GroupLasso(epochs=0, finetune_epochs=1).apply(model)
