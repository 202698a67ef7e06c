"""One network switchable between bit-widths, the lower widths distilled from the highest."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import sample_input, untrained

from workbench import codec, models, train, zoo
from workbench.method import clone_model
from workbench.distill.losses import kd_loss
from workbench.quantize.multibit import (Distill, MultiBit, accuracy_per_width, distinct_values,
                                         run_bits, set_bits, switches)


@pytest.fixture(scope="module")
def trained(mnist_train_small):
    """LeNet-300-100 from the zoo, trained jointly at 8/4/2 bits on 512 images, 2 epochs."""
    method = MultiBit(widths=(8, 4, 2), run_bits=4, epochs=2, lr=0.01)   # 8 steps only
    base = zoo.pretrained("lenet300")
    with train.quiet():
        return method.apply(base, mnist_train_small), base


def test_switching_sets_the_number_of_distinct_weight_values(trained):
    model, _ = trained
    assert run_bits(model) == 4 and len(switches(model)) == 3
    seen = []
    for bits in (1, 2, 4, 8):
        counts = distinct_values(set_bits(model, bits))
        assert all(n <= 2 ** bits for n in counts.values())
        # every value is one of the 2^bits levels scale * (2 i / (2^bits - 1) - 1) ...
        for layer in (model.net[1], model.net[3], model.net[5]):
            scale = layer.parametrizations.weight[0].scale
            levels = 2 * torch.arange(2 ** bits) / max(2 ** bits - 1, 1) - 1
            grid = levels * scale if bits > 1 else torch.tensor([-1.0, 1.0]) * scale
            assert torch.isin(layer.weight.detach().unique(), grid.to(layer.weight.dtype)).all()
        # ... and the large 784x300 layer uses all of them (but maybe an extreme one) up to
        # 4 bits; at 8 bits the tails of tanh leave some of the 256 levels empty
        assert counts["net.1"] >= (2 ** bits - 1 if bits <= 4 else 150)
        seen.append(counts["net.1"])
    assert seen == sorted(seen) and len(set(seen)) == 4
    set_bits(model, 4)


def test_switching_keeps_the_shadow_weights_and_the_file_stores_the_current_width(trained):
    model, _ = trained
    shadow = model.net[1].parametrizations.weight.original.detach().clone()
    x = sample_input(model)
    outputs = {}
    for bits in (2, 8, 4):
        set_bits(model, bits)
        with torch.no_grad():
            outputs[bits] = model(x)
            assert torch.equal(codec.decode(codec.encode(model))(x), outputs[bits])
    assert torch.equal(model.net[1].parametrizations.weight.original, shadow)
    assert not torch.equal(outputs[2], outputs[8])


def test_each_width_reaches_its_accuracy(trained, mnist_test_small):
    model, base = trained
    scores = accuracy_per_width(model, mnist_test_small, (8, 4, 2))
    assert run_bits(model) == 4
    from workbench.train import evaluate
    fp32 = evaluate(base, mnist_test_small)
    assert scores[8] >= fp32 - 0.02 and scores[4] >= fp32 - 0.02
    assert scores[2] >= fp32 - 0.06


def test_distill_hook_adds_kl_of_each_lower_width_to_the_top_width(trained):
    model, _ = trained
    x = sample_input(model, n=8)
    y = torch.arange(8) % 10
    set_bits(model, 8)
    logits = model(x)
    ce = F.cross_entropy(logits, y)
    total = Distill((8, 4, 2), temperature=2.0).loss(model, x, y, logits, ce)
    assert run_bits(model) == 8          # the hook leaves the teacher width on
    expected = ce
    for bits in (4, 2):
        student = set_bits(model, bits)(x)
        p = F.softmax(logits.detach() / 2, 1)
        kl = (p * (p.log() - F.log_softmax(student / 2, 1))).sum(1).mean() * 4
        expected = expected + kl
        assert torch.isclose(kd_loss(student, logits, 2.0), kl, atol=1e-6)
    assert torch.isclose(total, expected, atol=1e-5)
    set_bits(model, 4)


@pytest.mark.parametrize("field, value", [("widths", (8, 8)), ("widths", (9,)),
                                          ("widths", (8, "a")), ("widths", "842"),
                                          ("widths", ()), ("run_bits", 0), ("run_bits", 2.5),
                                          ("temperature", 0.0)])
def test_bad_values_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        MultiBit(**{field: value})


def test_the_width_is_state_that_copies_and_the_file_keep(trained):
    """The run width lives in a buffer of each switchable layer, not in an attribute of the
    model: deep copies, clones and load_state_dict keep it; the file stores the weights at it."""
    model, _ = trained
    set_bits(model, 2)
    assert not hasattr(model, "run_bits")
    keys = [k for k in model.state_dict() if k.endswith(".bits")]
    assert len(keys) == 3 and all(int(model.state_dict()[k]) == 2 for k in keys)
    x = sample_input(model)
    with torch.no_grad():
        expected = model(x)
    for twin in (copy.deepcopy(model), clone_model(model)):
        assert run_bits(twin) == 2
        with torch.no_grad():
            assert torch.equal(twin(x), expected)
    other = set_bits(copy.deepcopy(model), 8)
    other.load_state_dict(model.state_dict())
    assert run_bits(other) == 2
    decoded = codec.decode(codec.encode(model))
    with torch.no_grad():
        assert torch.equal(decoded(x), expected)
    assert all(n <= 4 for n in distinct_values(decoded).values())
    set_bits(model, 8)                        # the copies are independent of the original
    assert run_bits(other) == 2
    set_bits(model, 4)


def test_supports_networks_without_batchnorm():
    method = MultiBit()
    assert method.supports(untrained("lenet300")) and method.supports(untrained("lenet5"))
    assert not method.supports(untrained("vgg_small"))
    assert not method.supports(untrained("resnet20"))
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
    assert method.supports(conv)
    assert not method.supports(torch.nn.Sequential(*conv, torch.nn.BatchNorm1d(2704)))
    with pytest.raises(ValueError, match="BatchNorm"):
        method.apply(untrained("resnet20"))


def test_tags_and_no_training_without_epochs():
    assert MultiBit(run_bits=2).tags().bits_per_weight == 2
    assert MultiBit().tags().needs_data and not MultiBit(epochs=0).tags().needs_data
    out = MultiBit(run_bits=3, epochs=0).apply(models.build("lenet300"))
    assert run_bits(out) == 3 and all(n <= 8 for n in distinct_values(out).values())
