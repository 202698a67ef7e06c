"""The codec's binary and ternary formats on real layers of zoo models: bit-exact round trips,
the real file of a binary LeNet-300-100 against the dense one, refusals and hostile payloads."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import sample_input, with_crc
from torch import nn

from workbench import codec, zoo
from workbench.binary.core import binarize, end_layers, sign
from workbench.codec import FORMATS, CodecError
from workbench.codec.dense import encode_dense

LAYERS = [("lenet300", "net.1"), ("lenet300", "net.5"), ("vgg_small", "features.3"),
          ("resnet20", "stem.0"), ("resnet20", "stages.1.0.conv1")]


def weight(arch, layer):
    return zoo.pretrained(arch).get_submodule(layer).weight.detach().clone()


def ternarize(w, per_channel=False, two_scales=False):
    """TWN: threshold 0.7 mean|W|, scale the mean |W| above it (per layer or per channel);
    ``two_scales``: TTQ's form, a positive and a negative scale per layer."""
    dims = list(range(1, w.dim())) if per_channel else list(range(w.dim()))
    delta = 0.7 * w.abs().mean(dim=dims, keepdim=True)
    pos, neg = w > delta, w < -delta
    if two_scales:
        return torch.where(pos, w[pos].mean(), torch.where(neg, w[neg].mean(), 0.0))
    keep = (pos | neg).float()
    a = (w.abs() * keep).sum(dim=dims, keepdim=True) / keep.sum(dim=dims, keepdim=True)
    return torch.where(pos, a, torch.where(neg, -a, torch.zeros_like(w)))


def round_trip(tensor, formats=None):
    payload, entry = codec.encode_tensor(tensor, formats)
    back = FORMATS[entry["format"]].decode(payload, entry["shape"], entry["dtype"], entry)
    return payload, entry, back


def bit_equal(a, b):
    return a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("arch,layer", LAYERS)
@pytest.mark.parametrize("per_channel", [True, False])
def test_binarized_real_layers_round_trip_bit_exact_in_signs(arch, layer, per_channel):
    w = binarize(weight(arch, layer), per_channel)
    payload, entry, back = round_trip(w)
    assert entry["format"] == "signs" and bit_equal(back, w)
    rows = w.shape[0]
    scales = rows if per_channel else 1
    scale_bytes = scales * (2 if "stored_dtype" in entry and entry["stored_dtype"] != "float32"
                            else 4)
    assert entry["scales"] == ("channel" if per_channel else "layer")
    assert len(payload) == math.ceil(w.numel() / 8) + scale_bytes
    # the two-value codebook holds a per-layer tensor too, with one more value; per channel
    # it needs 2C values and log2(2C) bits per weight
    shared, _ = codec.encode_tensor(w, ("codebook",))
    assert len(payload) < len(shared)
    if per_channel:
        assert len(shared) > 4 * len(payload) // 2


@pytest.mark.parametrize("arch,layer", LAYERS)
@pytest.mark.parametrize("form", ["twn_layer", "twn_channel", "ttq"])
def test_ternarized_real_layers_round_trip_bit_exact_in_ternary(arch, layer, form):
    w = ternarize(weight(arch, layer), per_channel=form == "twn_channel", two_scales=form == "ttq")
    assert 0 < (w == 0).float().mean() < 1
    payload, entry, back = round_trip(w)
    assert entry["format"] == "ternary" and bit_equal(back, w)
    assert entry["scales"] == {"twn_layer": "layer", "twn_channel": "channel",
                               "ttq": "layer"}[form]
    assert entry["packing"] == "base3"            # 17 digits in 27 bits: 1.59 bits each
    symbols = math.ceil(math.ceil(w.numel() / 17) * 27 / 8)
    assert len(payload) == symbols + entry["scale_nbytes"]
    two_bit, _ = codec.encode_tensor(w, ("codebook",))
    assert len(payload) < len(two_bit)


def test_asymmetric_ternary_per_channel_and_tiny_tensors_use_two_bits():
    w = weight("resnet20", "stem.0")
    rows = torch.arange(1, w.shape[0] + 1, dtype=torch.float32).view(-1, 1, 1, 1)
    t = torch.where(w > 0.05, rows, torch.where(w < -0.05, -2 * rows, 0.0))
    _, entry, back = round_trip(t)
    assert entry["format"] == "ternary" and entry["scales"] == "channel2"
    assert torch.equal(back, t)
    tiny = torch.tensor([0.5, 0.0, -0.25])          # 27 bits of base 3 > 6 bits of 2-bit
    payload, entry, back = round_trip(tiny, ("ternary",))
    assert entry["packing"] == "2bit" and torch.equal(back, tiny)
    assert len(payload) == 1 + entry["scale_nbytes"]          # 3 x 2 bits in one byte


def test_tensors_without_the_structure_are_refused():
    w = weight("lenet300", "net.3")
    for encoder in (codec.encode_signs, codec.encode_ternary):
        with pytest.raises(ValueError, match="signs|ternary"):
            encoder(w)
    b = binarize(w)
    with pytest.raises(ValueError, match="-a or \\+a"):
        codec.encode_signs(torch.where(torch.arange(b.numel()).view(b.shape) == 7, 0.0, b))
    three = ternarize(w).clone()
    three[0, three[0] > 0] *= torch.linspace(1, 2, int((three[0] > 0).sum()))
    with pytest.raises(ValueError, match="more than one positive"):
        codec.encode_ternary(three)
    with pytest.raises(ValueError, match="NaN"):
        codec.encode_ternary(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError):
        codec.encode_signs(torch.tensor([1.0, float("nan")]))
    # a tensor without the structure is stored as before, exactly
    _, entry, back = round_trip(w)
    assert entry["format"] == "dense" and torch.equal(back, w)
    assert codec.weight_structure(w) is None
    assert codec.weight_structure(b) == "signs" and codec.weight_structure(ternarize(w)) == \
        "ternary"


def binarized_lenet300():
    model = zoo.pretrained("lenet300")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(binarize(m.weight, per_channel=True))
    return model


def test_binary_lenet300_file_is_at_most_a_25th_of_the_dense_file():
    dense = len(codec.encode(zoo.pretrained("lenet300"), formats=("dense",), dtype="float32"))
    model = binarized_lenet300()
    blob = codec.encode(model)
    # issue target: <= 1/25 (1/32 of the weights, plus 410 scales, float biases and header)
    assert dense / len(blob) >= 25, dense / len(blob)
    header = codec.read_header(blob)
    weights = [t for t in header["tensors"] if t["name"].endswith("weight")]
    assert [t["format"] for t in weights] == ["signs"] * 3
    signs = sum(math.ceil(math.prod(t["shape"]) / 8) for t in weights)
    biases = sum(4 * math.prod(t["shape"]) for t in header["tensors"] if t["name"].endswith("bias"))
    assert len(blob) <= signs + 4 * (300 + 100 + 10) + biases + 2000     # + header, CRC
    back = codec.decode(blob)
    x = sample_input(model)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor)


@pytest.mark.parametrize("arch", ["vgg_small", "resnet20", "lenet5"])
def test_binary_and_ternary_zoo_models_round_trip(arch):
    for make in (lambda w: binarize(w, True), lambda w: ternarize(w, True)):
        model = zoo.pretrained(arch)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.copy_(make(m.weight))
        blob = codec.encode(model)
        formats = {t["format"] for t in codec.read_header(blob)["tensors"]
                   if t["name"].endswith("weight") and len(t["shape"]) > 1}
        assert formats <= {"signs", "ternary"}, formats
        back = codec.decode(blob)
        for name, tensor in model.state_dict().items():
            assert torch.equal(back.state_dict()[name], tensor), name


@pytest.mark.parametrize("fmt,make", [("signs", lambda w: binarize(w, True)),
                                      ("ternary", lambda w: ternarize(w, True))])
def test_truncated_padded_and_hostile_payloads_give_codec_errors(fmt, make):
    w = make(weight("lenet300", "net.3"))
    payload, entry = codec.encode_tensor(w, (fmt,))
    decode = FORMATS[fmt].decode
    with pytest.raises(CodecError, match="truncated"):
        decode(payload[:-1], entry["shape"], "float32", entry)
    with pytest.raises(CodecError, match="padded"):
        decode(payload + b"\0", entry["shape"], "float32", entry)
    with pytest.raises(CodecError, match="scales"):
        decode(payload, entry["shape"], "float32", {**entry, "scales": "block"})
    with pytest.raises(CodecError):
        decode(payload, entry["shape"], "float32", {**entry, "scale_nbytes": len(payload) + 9})
    with pytest.raises(CodecError):     # scales of the wrong length
        decode(payload, entry["shape"], "float32", {**entry, "scale_nbytes": 3})


def test_two_bit_symbol_three_is_corrupt():
    tiny = torch.tensor([0.5, 0.0, -0.25])
    payload, entry = codec.encode_tensor(tiny, ("ternary",))
    bad = payload[:-1] + bytes([payload[-1] | 0b11])
    with pytest.raises(CodecError, match="reads 3"):
        FORMATS["ternary"].decode(bad, entry["shape"], "float32", entry)


def test_a_file_whose_header_lies_about_a_signs_payload_is_refused():
    blob = codec.encode(binarized_lenet300())
    header = codec.read_header(blob)
    start = header.pop("_payload_start")
    payloads = blob[start:-4]
    entry = next(t for t in header["tensors"] if t["name"] == "net.3.weight")
    entry["scale_nbytes"] -= 2          # claims the scales are shorter: the bits are "padded"
    body = codec.header_block(header) + payloads
    with pytest.raises(CodecError, match="corrupt"):
        codec.decode(with_crc(body))


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_m_binary_bases_are_stored_in_m_bits_by_the_codebook(m):
    """A per-layer sum of M binary tensors with scales has at most 2^M distinct values: the
    existing codebook stores it in M bits per weight (no format of its own needed)."""
    w = weight("lenet300", "net.1")
    residual, approx = w.clone(), torch.zeros_like(w)
    for _ in range(m):                  # greedy residual bases (network sketching, HORQ)
        b = sign(residual)
        a = residual.abs().mean()
        approx, residual = approx + a * b, residual - a * b
    k = len(torch.unique(approx))
    assert 2 ** (m - 1) < k <= 2 ** m       # (at M = 4 a few sign patterns never occur)
    payload, entry, back = round_trip(approx)
    assert entry["format"] == ("signs" if m == 1 else "codebook") and torch.equal(back, approx)
    bits = 8 * len(payload) / w.numel()
    assert math.log2(k) <= bits <= m + 0.01, bits
    # ABC-Net's bases are thresholds of one tensor at shifted means: nested signs give only
    # M + 1 distinct values, log2(M + 1) bits per weight in the codebook's base-k packing
    shifts = torch.linspace(-1, 1, m) if m > 1 else torch.zeros(1)
    bases = torch.stack([sign(w - w.mean() + u * w.std()) for u in shifts]).reshape(m, -1)
    alpha = torch.linalg.lstsq(bases.T, w.reshape(-1, 1)).solution.flatten()
    abc = (alpha.reshape(-1, 1) * bases).sum(0).reshape(w.shape)
    assert len(torch.unique(abc)) <= m + 1
    payload, entry, back = round_trip(abc)
    assert torch.equal(back, abc)
    assert 8 * len(payload) / w.numel() <= math.log2(m + 1) + 0.1


def test_weight_structure_says_what_measure_counts():
    w = weight("vgg_small", "features.3")
    assert codec.weight_structure(binarize(w, True)) == "signs"
    assert codec.weight_structure(ternarize(w, two_scales=True)) == "ternary"
    zero_row = binarize(w, True)
    zero_row[0] = 0.0        # a row of zeros is stored by signs (a = 0) but has no operations
    assert codec.weight_structure(zero_row) == "ternary"
    _, _, back = round_trip(zero_row, ("signs",))
    assert torch.equal(back, zero_row)
    assert codec.weight_structure(torch.zeros(3, 4)) == "ternary"
    assert codec.weight_structure(w) is None and codec.weight_structure(torch.ones(3)) == "signs"
    assert codec.weight_structure(torch.arange(4)) is None                # integers


# ---------------------------------------------------------------- row_codebook: sketched layers

def sketched(arch, m):
    """The zoo model with network sketching's M binary tensors per output filter (refined)."""
    from workbench import METHODS
    return METHODS["binary.sketch"](tensors=m).apply(zoo.pretrained(arch))


def row_codebook_bytes(w, k):
    """The format's size from its definition: k_r - 1 per row and every index base-k packed,
    each row's distinct values in 4 bytes (a sum of float64 products is no float16)."""
    matrix = w.reshape(w.shape[0], -1)
    distinct = sum(len(torch.unique(row)) for row in matrix)
    g, bits = codec.radix_group(k)
    packed = lambda n: math.ceil(math.ceil(n / g) * bits / 8)
    return packed(matrix.shape[0]) + 4 * distinct + packed(w.numel())


@pytest.mark.parametrize("arch,m", [("lenet300", 2), ("lenet300", 3), ("vgg_small", 3)])
def test_sketched_models_store_each_row_codebook_in_about_m_bits_bit_exact(arch, m):
    model = sketched(arch, m)
    blob = codec.encode(model)
    back = codec.decode(blob)
    for name, tensor in model.state_dict().items():
        assert bit_equal(back.state_dict()[name], tensor) if tensor.is_floating_point() \
            else torch.equal(back.state_dict()[name], tensor), name
    header = {t["name"]: t for t in codec.read_header(blob)["tensors"]}
    ends = {f"{name}.weight" for name in end_layers(zoo.pretrained(arch))}
    sketched_weights = [n for n, t in header.items() if n.endswith("weight")
                        and len(t["shape"]) > 1 and n not in ends]      # ends stay float
    assert sketched_weights
    for name in sketched_weights:
        w, entry = model.state_dict()[name], header[name]
        n = w[0].numel()
        assert entry["format"] == "row_codebook" and entry["k"] == 2 ** m, (name, entry)
        assert entry["nbytes"] == row_codebook_bytes(w, entry["k"])
        bits = 8 * entry["nbytes"] / w.numel()
        # M bits of index, 2^M float32 values per row of n weights, the row sizes
        assert m <= bits <= m + 32 * 2 ** m / n + 0.05, (name, bits)
        # the per-layer codebook needs log2 of thousands of values per weight
        layer_book, _ = codec.encode_tensor(w, ("codebook",))
        assert 8 * len(layer_book) / w.numel() > bits + 4


def test_row_codebook_takes_nothing_an_existing_format_stores_smaller():
    w = weight("lenet300", "net.3")
    book = torch.linspace(float(w.min()), float(w.max()), 16)
    per_layer = book[(w.unsqueeze(-1) - book).abs().argmin(-1)]        # 16 values per layer
    for tensor, fmt in [(w, "dense"), (binarize(w, True), "signs"), (binarize(w), "signs"),
                        (ternarize(w, True), "ternary"), (per_layer, "codebook")]:
        _, entry, back = round_trip(tensor)
        assert entry["format"] == fmt and torch.equal(back, tensor)
        others = [f for f in codec.DEFAULT_FORMATS if f != "row_codebook"]
        assert len(round_trip(tensor, others)[0]) == entry["nbytes"]
    with pytest.raises(ValueError, match="most values of a row are distinct"):
        codec.FORMATS["row_codebook"].encode(w)
    late = torch.cat([binarize(w[1:], True), w[:1]])     # the first row passes, the last not
    with pytest.raises(ValueError, match="most values of a row are distinct"):
        codec.FORMATS["row_codebook"].encode(late)
    # registered after every format of the codec (a family's hinted ones may follow): no tie
    names = list(FORMATS)
    assert all(names.index(f) < names.index("row_codebook") for f in
               ("dense", "sparse_rel", "codebook", "sparse_codebook", "pow2", "signs", "ternary"))


def test_row_codebook_hostile_and_truncated_payloads_give_codec_errors():
    # row 0 has one value, row 1 two, row 2 three: k = 3, indices base 3
    t = torch.tensor([[0.5] * 8, [1.0, -1.0] * 4, [0.25, 0.0, -3.0] + [0.0] * 5])
    payload, entry = codec.encode_tensor(t, ("row_codebook",))
    decode = FORMATS["row_codebook"].decode
    assert torch.equal(decode(payload, [3, 8], "float32", entry), t) and entry["k"] == 3
    assert entry["stored_dtype"] == "float16" and entry["values"] == 6
    with pytest.raises(CodecError, match="truncated"):
        decode(payload[:-1], [3, 8], "float32", entry)
    with pytest.raises(CodecError, match="truncated"):
        decode(b"", [3, 8], "float32", entry)
    with pytest.raises(CodecError, match="padded"):
        decode(payload + b"\0", [3, 8], "float32", entry)
    for k in (0, 9, 2 ** 40, "3", None):
        with pytest.raises(CodecError, match="k="):
            decode(payload, [3, 8], "float32", {**entry, "k": k})
    with pytest.raises(CodecError, match="add up to"):
        decode(payload, [3, 8], "float32", {**entry, "values": 7})
    # the row sizes claim more values than the payload holds
    g, bits = codec.radix_group(3)
    head = math.ceil(math.ceil(3 / g) * bits / 8)
    sizes = codec.pack_symbols(torch.tensor([2, 2, 2]).numpy(), 3)
    with pytest.raises(CodecError, match="truncated"):
        decode(sizes + payload[head:], [3, 8], "float32", {**entry, "values": 9})
    # row 0 (one value) given index 2: beyond its row's values
    values_end = head + 6 * (2 if entry["stored_dtype"] == "float16" else 4)
    indices = codec.unpack_symbols(payload[values_end:], 3, 24)
    indices[1] = 2
    bad = payload[:values_end] + codec.pack_symbols(indices, 3)
    with pytest.raises(CodecError, match="beyond its row"):
        decode(bad, [3, 8], "float32", entry)


@pytest.mark.parametrize("count", [1, 3, 4, 16, 17, 18, 34, 100, 1001])
def test_ternary_packing_chosen_from_the_count_is_the_smaller_one(count):
    t = torch.tensor([0.5, 0.0, -0.5])[torch.arange(count) % 3]
    payload, entry = codec.encode_tensor(t, ("ternary",))
    symbols = (t > 0).long() + 2 * (t < 0).long()
    sizes = {"base3": len(codec.pack_symbols(symbols.numpy(), 3)),
             "2bit": len(codec.pack_bits(symbols.numpy(), 2))}
    best = min(("base3", "2bit"), key=sizes.get)
    assert entry["packing"] == best and len(payload) == sizes[best] + entry["scale_nbytes"]
    assert torch.equal(FORMATS["ternary"].decode(payload, [count], "float32", entry), t)


def test_row_codebook_with_one_value_a_row_decodes_without_unpacking_a_bomb():
    import tracemalloc
    decode = FORMATS["row_codebook"].decode
    t = torch.tensor([[0.5] * 40, [-2.0] * 40, [0.0] * 40])
    payload, entry = FORMATS["row_codebook"].encode(t)
    assert entry["k"] == 1 and torch.equal(decode(payload, [3, 40], "float32", entry), t)
    # hostile: a well-formed k=1 payload of 64 KB of zero indices declaring 2^22 values
    n = 1 << 22
    head = math.ceil(1 / codec.radix_group(1)[0] / 8)
    hostile = bytes(head) + encode_dense(torch.tensor([0.5]), "float16")[0] + bytes(n // 256)
    meta = {"k": 1, "values": 1, "stored_dtype": "float16"}
    tracemalloc.start()
    out = decode(hostile, [1, n], "float32", meta)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # numpy's unpacking of 2^22 uint64 digits would peak at 64 MB and more: nothing here
    assert peak < 1 << 20, peak
    assert out.shape == (1, n) and bool((out == 0.5).all())
    # the same shape declared over too few bytes: an error before any allocation
    tracemalloc.start()
    with pytest.raises(CodecError, match="truncated"):
        decode(hostile[:100], [1, 1 << 30], "float32", meta)
    assert tracemalloc.get_traced_memory()[1] < 1 << 20
    tracemalloc.stop()
    # a nonzero index bit, or a header count that is not one value a row
    with pytest.raises(CodecError, match="beyond its row"):
        decode(hostile[:-1] + b"\x01", [1, n], "float32", meta)
    with pytest.raises(CodecError, match="k=1"):
        decode(hostile, [1, n], "float32", {**meta, "values": 2})
