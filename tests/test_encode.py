"""workbench.encode: the lossless encodings leave every weight alone, change the file the way
their names say, and travel with the network through later methods."""
from __future__ import annotations

import pytest
import torch
from conftest import sample_input, untrained

from workbench import codec, encode
from workbench.prune import Magnitude


@pytest.fixture(scope="module")
def pruned_shared():
    model = Magnitude(sparsity=0.9).apply(untrained("lenet300", seed=7))
    with torch.no_grad():      # 15 shared values and the zero, as after trained k-means
        for layer in (model.net[1], model.net[3], model.net[5]):
            w = layer.weight
            book = torch.linspace(-0.1, 0.1, 15)
            shared = book[(w.unsqueeze(-1) - book).abs().argmin(-1)]
            layer.weight_orig.copy_(torch.where(w == 0, 0.0, shared))
    return model


def formats_of(blob):
    return {t["name"]: t for t in codec.read_header(blob)["tensors"]}


def test_sparse_format_fixed_index_bits_and_order(pruned_shared):
    out = encode.SparseFormat(index_bits=5, order="col").apply(pruned_shared)
    entries = formats_of(codec.encode(out))
    assert entries["net.1.weight"]["format"] in ("sparse_codebook", "sparse_rel")
    assert entries["net.1.weight"]["index_bits"] == 5 and entries["net.1.weight"]["order"] == "col"
    best = formats_of(codec.encode(encode.SparseFormat().apply(pruned_shared)))
    assert best["net.1.weight"]["nbytes"] <= entries["net.1.weight"]["nbytes"]


def test_huffman_is_lossless_smaller_and_travels_with_the_network(pruned_shared):
    coded = encode.Huffman().apply(pruned_shared)
    assert not hasattr(pruned_shared, "codec_options")           # the input is untouched
    blob = codec.encode(coded)
    assert formats_of(blob)["net.1.weight"]["format"] == "huffman_sparse"
    assert len(blob) < len(codec.encode(pruned_shared))
    x = sample_input(pruned_shared)
    torch.testing.assert_close(codec.decode(blob)(x), pruned_shared(x), atol=0, rtol=0)
    # a later method keeps the encoding: pruning more still gives a Huffman-coded file
    further = Magnitude(sparsity=0.95).apply(coded)
    assert formats_of(codec.encode(further))["net.1.weight"]["format"] == "huffman_sparse"


@pytest.mark.parametrize("cls,kwargs,match", [
    (encode.SparseFormat, {"index_bits": 17}, "index_bits"),
    (encode.SparseFormat, {"index_bits": 2.5}, "whole number"),
    (encode.SparseFormat, {"order": "diagonal"}, "order"),
    (encode.Huffman, {"index_bits": 11}, "0 to 10"),
])
def test_bad_settings_are_named(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_sparse_encoding_keeps_a_quantized_layers_own_format():
    from test_codec_quantized import Affine
    from torch.nn.utils import parametrize
    model = untrained("lenet300", seed=8)
    for layer in (model.net[1], model.net[3], model.net[5]):
        parametrize.register_parametrization(layer, "weight", Affine(layer.weight.detach()))
    # the tensors, not the whole file: the file also carries the encoding's attachment
    plain = formats_of(codec.encode(model))
    for method in (encode.SparseFormat(), encode.Huffman()):
        coded = formats_of(codec.encode(method.apply(model)))
        for name in ("net.1.weight", "net.3.weight", "net.5.weight"):
            assert coded[name]["format"] == plain[name]["format"] == "affine"
        assert sum(t["nbytes"] for t in coded.values()) <= sum(t["nbytes"] for t in plain.values())
