"""workbench.codec, the formats of shared and quantized weights: packed codebook indices for
any k, powers of two, int8 with scales and zero points, pruned-and-shared layers, and floats
stored in two bytes when that loses nothing. Exact round trips and exact byte counts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import sample_input, untrained, with_crc
from torch.nn.utils import parametrize

from workbench import codec
from workbench.codec import CodecError
from workbench.prune import prunable_layers


def round_trip(tensor, formats, hint=None):
    payload, entry = codec.encode_tensor(tensor, formats, hint=hint)
    back = codec.FORMATS[entry["format"]][1](payload, entry["shape"], entry["dtype"], entry)
    return payload, entry, back


def shared(shape, k, seed=0, density=1.0):
    gen = torch.Generator().manual_seed(seed)
    codebook = torch.randn(k, generator=gen)
    tensor = codebook[torch.randint(k, shape, generator=gen)]
    return tensor * (torch.rand(shape, generator=gen) < density)


@pytest.mark.parametrize("k", [2, 3, 5, 16, 17, 100, 256, 1000])
def test_radix_packing_is_as_tight_as_promised(k):
    g, bits = codec.radix_group(k)
    assert k ** g <= 2 ** bits and bits <= 32
    # no group size up to 32 bits does better
    assert all(math.ceil(h * math.log2(k) - 1e-9) / h >= bits / g - 1e-12
               for h in range(1, 33) if math.ceil(h * math.log2(k) - 1e-9) <= 32)
    symbols = np.random.default_rng(k).integers(0, k, 1001)
    packed = codec.pack_symbols(symbols, k)
    assert len(packed) == -(-(-(-1001 // g)) * bits // 8)
    assert np.array_equal(codec.unpack_symbols(packed, k, 1001), symbols)


def test_radix_packing_by_hand():
    g, bits = codec.radix_group(3)
    assert bits / g <= 8 / 5          # at least as tight as 5 trits a byte (1.6 bits, not 2)
    assert bits / g - math.log2(3) < 0.01
    assert codec.radix_group(16) == (1, 4)
    # 3 ternary digits 2, 0, 1 -> 2 + 0*3 + 1*9 = 11 in the first byte
    assert codec.pack_symbols(np.array([2, 0, 1]), 3)[0] == 11


@pytest.mark.parametrize("k", [2, 3, 16, 256])
def test_codebook_format_bytes_and_round_trip(k):
    tensor = shared((300, 784), k)
    payload, entry, back = round_trip(tensor, ("codebook",))
    assert torch.equal(back, tensor)
    g, bits = codec.radix_group(k)
    codebook_bytes = entry["k"] * (2 if entry.get("stored_dtype") else 4)
    assert len(payload) == codebook_bytes + -(-(-(-tensor.numel() // g)) * bits // 8)
    assert entry["k"] == len(torch.unique(tensor))


def test_fp16_exact_values_take_two_bytes_and_others_four():
    exact = torch.randn(64, 64).half().float()
    payload, entry, back = round_trip(exact, ("dense",))
    assert torch.equal(back, exact) and len(payload) == 2 * exact.numel()
    assert entry["stored_dtype"] == "float16"
    brain = (torch.randn(64, 64) * 1e6).bfloat16().float()          # beyond fp16's range
    payload, entry, back = round_trip(brain, ("dense",))
    assert torch.equal(back, brain) and entry["stored_dtype"] == "bfloat16"
    plain = torch.randn(64, 64)
    payload, entry, back = round_trip(plain, ("dense",))
    assert torch.equal(back, plain) and len(payload) == 4 * plain.numel()


def test_pow2_format_stores_sign_and_exponent_only():
    gen = torch.Generator().manual_seed(0)
    exponents = torch.randint(-8, -1, (200, 100), generator=gen)
    signs = torch.where(torch.rand(200, 100, generator=gen) < 0.5, -1.0, 1.0)
    tensor = signs * torch.pow(2.0, exponents.float())
    tensor[torch.rand(200, 100, generator=gen) < 0.3] = 0.0
    payload, entry, back = round_trip(tensor, ("pow2",))
    assert torch.equal(back, tensor)
    span = entry["span"]
    assert (entry["low_exponent"], span) == (int(torch.frexp(tensor[tensor != 0])[1].min()), 7)
    g, bits = codec.radix_group(2 * span + 1)
    assert len(payload) == -(-(-(-tensor.numel() // g)) * bits // 8)
    # a value that is not a power of two is refused, and the best format is then another one
    with pytest.raises(ValueError):
        codec.FORMATS["pow2"].encode(tensor + 0.3)


@pytest.mark.parametrize("half", [None, torch.bfloat16])
def test_sparse_codebook_is_deep_compressions_layer(half):
    tensor = shared((300, 784), 16, density=0.08)
    if half is not None:        # a codebook stored in two bytes
        tensor = tensor.to(half).float()
    payload, entry, back = round_trip(tensor, ("sparse_codebook",))
    assert torch.equal(back, tensor)
    # smaller than the same positions with fp32 values, and than the dense codebook
    assert len(payload) < len(codec.encode_tensor(tensor, ("sparse_rel",))[0])
    assert len(payload) < len(codec.encode_tensor(tensor, ("codebook",))[0])
    # bytes by hand: index bits per entry, then the codebook (with the zero) and packed indices
    entries, k = entry["entries"], entry["values"]["k"]
    g, bits = codec.radix_group(k)
    value_bytes = 2 if half is not None else 4
    expected = (-(-entries * entry["index_bits"] // 8) + value_bytes * k
                + -(-(-(-entries // g)) * bits // 8))
    assert len(payload) == expected


class Affine(torch.nn.Module):
    """A per-channel 8-bit quantizer as the quant methods write it."""

    def __init__(self, weight, bits=8):
        super().__init__()
        low, high = weight.amin(1).clamp(max=0), weight.amax(1).clamp(min=0)
        self.scale = ((high - low) / (2 ** bits - 1)).clamp(min=1e-8)
        self.zero_point = torch.round(-low / self.scale).to(torch.int64)
        self.bits = bits

    def forward(self, w):
        view = (-1,) + (1,) * (w.dim() - 1)
        s, z = self.scale.reshape(view), self.zero_point.reshape(view).float()
        q = torch.clamp(torch.round(w / s) + z, 0, 2 ** self.bits - 1)
        return (q - z) * s

    def codec_hint(self):
        return {"format": "affine", "scale": self.scale, "zero_point": self.zero_point,
                "bits": self.bits, "axis": 0}


def test_affine_format_matches_torch_fake_quantize_and_round_trips():
    weight = torch.randn(20, 50)
    quantizer = Affine(weight)
    fake = quantizer(weight)
    oracle = torch.fake_quantize_per_channel_affine(
        weight, quantizer.scale, quantizer.zero_point.int(), 0, 0, 255)
    torch.testing.assert_close(fake, oracle, atol=1e-6, rtol=0)
    payload, entry, back = round_trip(fake, ("dense", "affine"), quantizer.codec_hint())
    assert entry["format"] == "affine" and torch.equal(back, fake)
    assert len(payload) == 20 * 4 + 20 * 4 + 20 * 50      # scales, zero points, 8-bit ints
    # without the hint, or with a hint that does not describe the tensor, it is not used
    assert codec.encode_tensor(fake, ("dense", "affine"))[1]["format"] == "dense"
    wrong = {**quantizer.codec_hint(), "scale": quantizer.scale * 1.01}
    assert codec.encode_tensor(fake, ("dense", "affine"), hint=wrong)[1]["format"] == "dense"


def test_quantized_model_file_uses_hints_and_decodes_to_identical_outputs():
    model = untrained("lenet5", seed=1)
    for _, module in prunable_layers(model):
        parametrize.register_parametrization(module, "weight",
                                             Affine(module.weight.detach().flatten(1)))
    blob = codec.encode(model)
    formats = {t["name"]: t["format"] for t in codec.read_header(blob)["tensors"]}
    assert all(formats[f"{n}.weight"] == "affine" for n, _ in prunable_layers(model))
    x = sample_input(model)
    torch.testing.assert_close(codec.decode(blob)(x), model.eval()(x), atol=0, rtol=0)
    weights = sum(m.weight.numel() for _, m in prunable_layers(model))
    # one byte a weight, plus biases, scales, zero points and the header: about 4x smaller
    assert weights < len(blob) < 1.03 * weights


def test_shared_weights_model_is_about_log2k_bits_a_weight():
    model = untrained("lenet300", seed=2)
    with torch.no_grad():
        for _, module in prunable_layers(model):
            w = module.weight
            codebook = torch.linspace(float(w.min()), float(w.max()), 16)
            w.copy_(codebook[(w.unsqueeze(-1) - codebook).abs().argmin(-1)])
    blob = codec.encode(model)
    weights = sum(m.weight.numel() for _, m in prunable_layers(model))
    assert weights * 4 / 8 < len(blob) < weights * 4 / 8 + 5000
    x = sample_input(model)
    torch.testing.assert_close(codec.decode(blob)(x), model.eval()(x), atol=0, rtol=0)


def test_corrupt_codebook_index_is_named():
    tensor = shared((10, 10), 3)
    payload, entry = codec.encode_tensor(tensor, ("codebook",))
    broken = payload[:entry["codebook_nbytes"]] + b"\xff" * (len(payload) - entry["codebook_nbytes"])
    with pytest.raises(CodecError, match="corrupt packed indices"):
        codec.FORMATS["codebook"][1](broken, entry["shape"], entry["dtype"], entry)


def test_registered_format_is_tried_and_decoded():
    calls = []

    def encoder(tensor, dtype, hint=None):
        calls.append(hint)
        return codec.FORMATS["dense"].encode(tensor[:1])[0], {}

    def decoder(payload, shape, dtype, meta):
        first = codec.FORMATS["dense"].decode(payload, [1, *shape[1:]], dtype, meta)
        return first.expand(shape).clone()

    saved = dict(codec.FORMATS)          # the one registry: restoring it undoes everything
    try:
        codec.register_format("repeat_row", encoder, decoder, hinted=True)
        assert "repeat_row" in codec.DEFAULT_FORMATS
        tensor = torch.randn(1, 30).expand(40, 30).clone()
        _, entry, back = round_trip(tensor, None, {"format": "repeat_row"})
        assert entry["format"] == "repeat_row" and torch.equal(back, tensor)
        assert calls == [{"format": "repeat_row"}]
    finally:
        codec.FORMATS.clear()
        codec.FORMATS.update(saved)
    assert "repeat_row" not in codec.DEFAULT_FORMATS


def test_pow2_keeps_every_exponent_of_every_dtype():
    t = torch.tensor([2.0 ** -1074, 2.0 ** 1023, -1.0, 0.0], dtype=torch.float64)
    _, _, back = round_trip(t, ("pow2",))
    assert torch.equal(back, t)
    t32 = torch.tensor([2.0 ** -149, -(2.0 ** 127), 0.5])
    assert torch.equal(round_trip(t32, ("pow2",))[2], t32)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0,), (1,), (1, 1)])
@pytest.mark.parametrize("fmt", ["dense", "sparse_rel", "codebook", "sparse_codebook",
                                 "huffman_sparse", "huffman_codebook"])
def test_empty_and_single_element_tensors_round_trip(shape, fmt):
    t = torch.full(shape, 0.5)
    payload, entry = codec.encode_tensor(t, (fmt, "dense"))
    back = codec.FORMATS[entry["format"]][1](payload, entry["shape"], entry["dtype"], entry)
    assert torch.equal(back, t)


def test_a_single_value_costs_one_bit_per_32():
    t = torch.full((100,), 0.25)
    payload, entry = codec.encode_tensor(t, ("codebook",))
    assert len(payload) == 2 + 1 and entry["k"] == 1        # fp16 codebook, 4 bits padded


def test_formats_that_hold_nothing_say_so():
    with pytest.raises(ValueError, match="add 'dense'"):
        codec.encode_tensor(torch.randn(8, 8), ("pow2",))
    with pytest.raises(ValueError, match="tuple of format names"):
        codec.encode_tensor(torch.randn(8, 8), "dense")


def test_corrupt_payload_with_a_valid_crc_is_a_codec_error_or_decodes():
    """Damage that the CRC cannot see (the CRC recomputed) never ends in another exception."""
    model = untrained("lenet300", seed=9)
    with torch.no_grad():
        for layer in (model.net[1], model.net[3]):
            layer.weight.copy_(shared(tuple(layer.weight.shape), 8, seed=2, density=0.1))
    blob = codec.encode(model, formats=codec.DEFAULT_FORMATS + codec.ENTROPY_FORMATS)
    start = codec.read_header(blob)["_payload_start"]
    rng = np.random.default_rng(0)
    refused = 0
    for position in rng.integers(start, len(blob) - 4, 40):
        body = bytearray(blob[:-4])
        body[position] ^= 0xFF
        try:
            codec.decode(with_crc(bytes(body)))
        except CodecError:
            refused += 1
    assert refused > 0
    # a header that lies about a payload's size or count is refused by name
    raw = codec.read_header(blob)
    del raw["_payload_start"]
    coded = [t for t in raw["tensors"] if t["format"] == "huffman_sparse"]
    assert coded
    coded[0]["indices"]["count"] = 10
    body = codec.header_block(raw) + blob[start:-4]
    with pytest.raises(CodecError):
        codec.decode(with_crc(body))
