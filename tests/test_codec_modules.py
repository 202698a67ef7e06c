"""Any registered workbench module can be stored, and attachments (state that must travel
with a network, like its chosen encoding) survive copies, load_state_dict and the file."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import sample_input, untrained
from torch import nn

from workbench import codec, encode, measure, models
from workbench.codec import CodecError
from workbench.method import clone_model
from workbench.prune import Magnitude


class TinyNet(nn.Module):
    """A network of the user's own: a convolution and a linear layer."""
    input_shape = (3, 8, 8)

    def __init__(self, width: int = 4, classes: int = 5):
        super().__init__()
        self.config = {"width": width, "classes": classes}
        self.conv = nn.Conv2d(3, width, 3)
        self.fc = nn.Linear(width * 6 * 6, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class NoConfigNet(TinyNet):
    def __init__(self):
        super().__init__()
        del self.config


@pytest.fixture
def registry(monkeypatch):
    """A registry of modules of this test's own, the real one untouched."""
    monkeypatch.setattr(models, "CUSTOM_MODULES", dict(models.CUSTOM_MODULES))
    return models.CUSTOM_MODULES


def test_a_registered_network_round_trips_and_is_measured(registry):
    models.register_module(TinyNet)
    torch.manual_seed(0)
    model = TinyNet(width=6).eval()
    blob = codec.encode(model)
    header = codec.read_header(blob)
    assert header["arch"] == "TinyNet" and header["config"] == {"width": 6, "classes": 5}
    back = codec.decode(blob)
    assert type(back) is TinyNet and back.conv.out_channels == 6
    x = sample_input(model)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    report = measure.report(model, latency=False)
    assert report.bytes == len(blob) and report.params == sum(p.numel() for p in model.parameters())
    assert report.macs == 6 * 27 * 36 + 6 * 36 * 5
    pruned = Magnitude(sparsity=0.5).apply(model)        # a method on it: stored smaller
    assert measure.report(pruned, latency=False).bytes < report.bytes


def test_a_network_that_cannot_be_rebuilt_is_refused_clearly(registry):
    with pytest.raises(ValueError, match=r"TinyNet.*not registered.*register_module.*config"):
        codec.encode(TinyNet())
    with pytest.raises(ValueError, match="not registered"):
        measure.report(TinyNet(), latency=False)
    models.register_module(NoConfigNet)
    with pytest.raises(ValueError, match="NoConfigNet.*config"):
        codec.encode(NoConfigNet())
    models.register_module(TinyNet)
    blob = codec.encode(TinyNet())
    del registry["TinyNet"]           # a workbench that does not know the class
    with pytest.raises(CodecError, match="TinyNet.*register_module"):
        codec.decode(blob)


def test_zoo_networks_keep_their_zoo_names_in_the_file():
    # files written before any network could be stored say "lenet300": they still read
    assert models.CUSTOM_MODULES["LeNet300"] is models.LeNet300
    blob = codec.encode(untrained("lenet300"))
    assert codec.read_header(blob)["arch"] == "lenet300"
    assert type(codec.decode(blob)) is models.LeNet300


# ---------------------------------------------------------------- attachments

def test_an_attachment_is_state_not_a_tensor_or_a_layer():
    model = untrained("lenet5")
    params, layers = measure.count_params(model), measure.layer_table(model, model.input_shape)
    models.attach(model, "notes", {"bits": (4, 8), "who": "test"})
    assert models.attached(model, "notes") == {"bits": [4, 8], "who": "test"}   # as JSON
    assert models.attached(model, "other") is None
    assert model.state_dict()["notes._extra_state"] == {"bits": [4, 8], "who": "test"}
    assert "notes._extra_state" not in codec.plain_state_dict(model)
    assert measure.count_params(model) == params
    assert measure.layer_table(model, model.input_shape) == layers
    fresh = untrained("lenet5", seed=1)
    models.attach(fresh, "notes", {})
    fresh.load_state_dict(model.state_dict())
    assert models.attached(fresh, "notes") == {"bits": [4, 8], "who": "test"}
    with pytest.raises(ValueError, match="JSON"):
        models.attach(model, "notes", {"tensor": torch.ones(2)})
    with pytest.raises(ValueError, match="not an attachment"):
        models.attach(model, "features", {})


@pytest.fixture(scope="module")
def coded():
    """A pruned, shared LeNet-300-100 that carries its encoding (Huffman, column order).

    Pruned by hand, not with masks: torch's masks put ``weight`` after ``bias`` in the state
    dict, so the file of a masked model lists its tensors in another order than the plain
    network decoded from it (the same tensors, other bytes)."""
    model = untrained("lenet300")
    with torch.no_grad():      # 90% zeros, and few distinct values as after weight sharing
        for layer in (model.net[1], model.net[3], model.net[5]):
            w = layer.weight
            w.copy_(torch.where(w.abs() < w.abs().quantile(0.9), 0.0, torch.round(w * 40) / 40))
    return encode.Huffman(order="col").apply(model)


def test_the_encoding_travels_through_copies(coded):
    options = models.attached(coded, "codec_options")
    assert options == {"entropy": True, "layout": {"order": "col"}}
    blob = codec.encode(coded)
    for copied in (copy.deepcopy(coded), clone_model(coded)):
        assert models.attached(copied, "codec_options") == options
        assert codec.encode(copied) == blob


def test_the_encoding_travels_through_the_file(coded):
    blob = codec.encode(coded)
    header = codec.read_header(blob)
    assert header["attachments"]["codec_options"] == models.attached(coded, "codec_options")
    assert {t["name"]: t["format"] for t in header["tensors"]}["net.1.weight"] == "huffman_sparse"
    back = codec.decode(blob)
    assert models.attached(back, "codec_options") == models.attached(coded, "codec_options")
    assert codec.encode(back) == blob                  # re-encoding gives the same bytes
    x = sample_input(coded)
    with torch.no_grad():
        assert torch.equal(back(x), coded(x))


def test_an_attachment_inside_the_network_travels_too():
    model = untrained("lenet300")
    models.attach(model.net[1], "run", {"bits": 4})
    back = codec.decode(codec.encode(model))
    assert models.attached(back.net[1], "run") == {"bits": 4}
