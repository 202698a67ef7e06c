"""workbench.codec: exact round trips, exact byte counts, and clear errors on damaged files."""
from __future__ import annotations

import struct
import zlib

import pytest
import torch
from conftest import as_version_1, sample_input, untrained, with_crc

from workbench import codec, measure, models
from workbench.codec import CodecError
from workbench.codec.container import MAX_HEADER
from workbench.prune import Magnitude

ARCHS = list(models.ARCHITECTURES)


@pytest.fixture(scope="module")
def lenet300_blob():
    model = untrained("lenet300")
    return model, codec.encode(model)


def expected_length(model, header: dict, itemsize_of=None) -> int:
    """4 magic + 1 version + 4 header length + header + payloads + 4 CRC, payloads recomputed
    from the model itself (numel x itemsize), not from the header's own byte counts."""
    header_len = header["_payload_start"] - 9
    payload = sum(t.numel() * (itemsize_of(t) if itemsize_of else t.element_size())
                  for t in codec.plain_state_dict(model).values())
    return 4 + 1 + 4 + header_len + payload + 4


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_identical_outputs_and_exact_length(arch):
    model = untrained(arch, seed=3)
    blob = codec.encode(model)
    assert blob[:4] == b"WBNC" and blob[4] == codec.VERSION
    header = codec.read_header(blob)
    assert len(blob) == expected_length(model, header)
    assert header["arch"] == arch
    back = codec.decode(blob)
    assert type(back) is type(model) and not back.training
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    x = sample_input(model)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_round_trip_keeps_config():
    model = models.build("lenet300", hidden=(40, 20)).eval()
    back = codec.decode(codec.encode(model))
    assert back.config == model.config
    assert back.net[1].weight.shape == (40, 784)


@pytest.mark.parametrize("arch", ["lenet5", "resnet20"])
def test_round_trip_of_pruned_model(arch):
    model = untrained(arch, seed=1)
    pruned = Magnitude(sparsity=0.7).apply(model).eval()
    dense_blob = codec.encode(pruned, formats=("dense",))
    assert len(dense_blob) == expected_length(pruned, codec.read_header(dense_blob))
    plain = codec.encode(model)             # dense: pruning saves no payload bytes
    assert len(dense_blob) - codec.read_header(dense_blob)["_payload_start"] \
        == len(plain) - codec.read_header(plain)["_payload_start"]
    blob = codec.encode(pruned)                           # best format: it does
    assert len(blob) < 0.6 * len(dense_blob)
    back = codec.decode(blob)
    x = sample_input(model)
    with torch.no_grad():
        assert torch.equal(back(x), pruned(x))
    assert not any(k.endswith(("_orig", "_mask")) for k in back.state_dict())


def test_plain_state_dict_folds_masks():
    model = untrained("lenet5")
    pruned = Magnitude(sparsity=0.6).apply(model)
    raw = pruned.state_dict()
    plain = codec.plain_state_dict(pruned)
    assert not any(k.endswith(("_orig", "_mask")) for k in plain)
    assert set(plain) == set(model.state_dict())
    for key in plain:
        if key + "_orig" in raw:
            assert torch.equal(plain[key], raw[key + "_orig"] * raw[key + "_mask"])
            assert (plain[key] == 0).float().mean().item() == pytest.approx(0.6, abs=1e-3)
        else:
            assert torch.equal(plain[key], raw[key])
        assert not plain[key].requires_grad


def test_plain_state_dict_of_parametrized_weight():
    from torch.nn.utils import parametrize

    class Double(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    model = untrained("lenet300")
    before = model.net[1].weight.detach().clone()
    parametrize.register_parametrization(model.net[1], "weight", Double())
    plain = codec.plain_state_dict(model)
    assert torch.equal(plain["net.1.weight"], 2 * before)
    assert set(plain) == set(models.build("lenet300").state_dict())


@pytest.mark.parametrize("dtype, tol", [("float16", 1e-2), ("bfloat16", 5e-2)])
def test_half_precision_halves_float_payload(dtype, tol):
    model = untrained("resnet20", seed=2)
    full, half = codec.encode(model), codec.encode(model, dtype=dtype)
    h_full, h_half = codec.read_header(full), codec.read_header(half)
    for a, b in zip(h_full["tensors"], h_half["tensors"]):
        assert a["name"] == b["name"] and a["dtype"] == b["dtype"]
        if a["dtype"] == "float32":
            assert b["nbytes"] * 2 == a["nbytes"]
        else:                                   # num_batches_tracked stays int64
            assert b["nbytes"] == a["nbytes"]
    itemsize = torch.empty(0, dtype=getattr(torch, dtype)).element_size()
    assert len(half) == expected_length(
        model, h_half, lambda t: itemsize if t.is_floating_point() else t.element_size())
    back = codec.decode(half)
    for key, value in model.state_dict().items():
        assert back.state_dict()[key].dtype == value.dtype
        assert torch.equal(back.state_dict()[key], value.to(getattr(torch, dtype)).to(value.dtype))
    x = sample_input(model)
    with torch.no_grad():
        ref, out = model(x), back(x)
    assert not torch.equal(out, ref)
    assert torch.allclose(out, ref, rtol=tol, atol=tol * ref.abs().max().item())


def test_the_naive_fp32_file_is_the_default_file_of_a_dense_fp32_model():
    # Every compression ratio divides by "the dense file", which the benches spell either way:
    # naming a tensor's own dtype must add nothing to the header. (A tensor whose values all
    # fit float16, such as a zero bias, is stored in 2 bytes by default; none here.)
    model = untrained("lenet5", seed=3)
    assert all(codec.narrowest_float(t) is None for t in codec.plain_state_dict(model).values())
    assert codec.encode(model, formats=("dense",), dtype="float32") == codec.encode(model)


def test_a_named_dtype_still_sets_the_width_of_a_codebook():
    # Values exact in float16 take 2 bytes each by default; dtype="float32" keeps them 4 wide.
    # The header need not say so: float32 is the tensor's own dtype, the decoders' default.
    codebook = torch.tensor([-0.5, 0.25, 0.75, 1.0])
    tensor = codebook[torch.arange(64) % 4].reshape(8, 8)
    short, _ = codec.encode_tensor(tensor, ("codebook",))
    wide, meta = codec.encode_tensor(tensor, ("codebook",), dtype="float32")
    assert len(wide) - len(short) == 2 * len(codebook) and "stored_dtype" not in meta
    back = codec.FORMATS["codebook"].decode(wide, [8, 8], "float32", meta)
    assert torch.equal(back, tensor)


# ---------------------------------------------------------------- damaged files

def test_truncated_blob_raises_at_every_sampled_cut(lenet300_blob):
    _, blob = lenet300_blob
    header_end = codec.read_header(blob)["_payload_start"]
    cuts = sorted({0, 1, 4, 5, 8, 9, 12, 13, 20, header_end - 1, header_end, header_end + 1,
                   header_end + 4, len(blob) // 2, len(blob) - 5, len(blob) - 4, len(blob) - 1,
                   *range(0, len(blob), len(blob) // 25)})
    for cut in cuts:
        with pytest.raises(CodecError, match="truncated"):
            codec.decode(blob[:cut])


def test_padded_blob_raises(lenet300_blob):
    _, blob = lenet300_blob
    with pytest.raises(CodecError, match="padded"):
        codec.decode(blob + b"\x00")


def test_flipped_payload_byte_fails_crc(lenet300_blob):
    _, blob = lenet300_blob
    start = codec.read_header(blob)["_payload_start"]
    for pos in (start, start + 1000, (start + len(blob)) // 2, len(blob) - 5):
        bad = bytearray(blob)
        bad[pos] ^= 0x10
        with pytest.raises(CodecError, match="CRC32"):
            codec.decode(bytes(bad))
    bad = bytearray(blob)
    bad[-1] ^= 0x01                                 # the checksum itself
    with pytest.raises(CodecError, match="CRC32"):
        codec.decode(bytes(bad))


def test_wrong_magic_and_version(lenet300_blob):
    _, blob = lenet300_blob
    with pytest.raises(CodecError, match="not a workbench model file"):
        codec.decode(b"PK\x03\x04" + blob[4:])
    with pytest.raises(CodecError, match=r"version 3.*versions 1, 2"):
        codec.decode(blob[:4] + bytes([3]) + blob[5:])
    with pytest.raises(CodecError, match="expected bytes"):
        codec.decode("WBNC")


def test_a_version_1_file_with_a_plain_header_still_decodes(lenet300_blob):
    model, blob = lenet300_blob
    old = as_version_1(blob)
    assert len(old) > len(blob)            # the deflated header is the smaller
    x = torch.randn(4, *model.input_shape)
    assert torch.equal(codec.decode(old)(x), codec.decode(blob)(x))


def _with_header(packed: bytes, payloads: bytes) -> bytes:
    """A file whose header field holds ``packed`` as it is, its CRC right."""
    return with_crc(struct.pack("<4sBI", b"WBNC", codec.VERSION, len(packed)) + packed
                     + payloads)


@pytest.mark.parametrize("packed, says", [
    (zlib.compress(b" " * (MAX_HEADER + 1), 9), "inflates past"),     # about a kilobyte
    (zlib.compress(b'{"arch":"lenet300"}', 9)[:-3], "cut short"),
    (zlib.compress(b'{"arch":"lenet300"}', 9) + b"xx", "stray bytes"),
    (b"not deflated at all", "does not inflate"),
    (zlib.compress(b"[" * 200_000, 9), "RecursionError"),              # nested past Python's stack
    (zlib.compress(b'{"tensors":[{"nbytes":1e400}]}', 9), "OverflowError"),
], ids=["bomb", "cut", "stray", "garbage", "deep", "huge-size"])
def test_a_hostile_deflated_header_is_refused_by_name(lenet300_blob, packed, says):
    _, blob = lenet300_blob
    start = codec.read_header(blob)["_payload_start"]
    with pytest.raises(CodecError, match=says):
        codec.decode(_with_header(packed, blob[start:-4]))


def test_a_header_past_the_limit_is_not_written(monkeypatch):
    monkeypatch.setattr(codec.container, "MAX_HEADER", 100)
    with pytest.raises(ValueError, match="at most 100"):
        codec.encode(untrained("lenet300"))


def test_a_header_of_exactly_the_limit_inflates(monkeypatch):
    text = b'{"a":"' + b"x" * 20 + b'"}'
    monkeypatch.setattr(codec.container, "MAX_HEADER", len(text))
    assert codec.container._inflate(zlib.compress(text)) == text
    monkeypatch.setattr(codec.container, "MAX_HEADER", len(text) - 1)
    with pytest.raises(ValueError, match="inflates past"):
        codec.container._inflate(zlib.compress(text))


def test_unknown_tensor_format_is_named(lenet300_blob):
    _, blob = lenet300_blob
    header = codec.read_header(blob)
    start = header.pop("_payload_start")
    header["tensors"][0]["format"] = "zstd"
    forged = with_crc(codec.header_block(header) + blob[start:-4])
    with pytest.raises(CodecError, match="zstd"):
        codec.decode(forged)


def header_positions(blob: bytes) -> list[int]:
    return list(range(9, codec.read_header(blob)["_payload_start"]))


def test_flipped_header_byte_raises_codec_error(lenet300_blob):
    _, blob = lenet300_blob
    failures = []
    for pos in header_positions(blob):
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        try:
            codec.decode(bytes(bad))
            failures.append((pos, "decoded"))
        except CodecError:
            pass
        except Exception as err:                   # noqa: BLE001 - that is the finding
            failures.append((pos, type(err).__name__))
    assert not failures, failures[:5]


def test_gzip_size_is_real_and_deterministic(lenet300_blob):
    import gzip
    _, blob = lenet300_blob
    assert codec.gzip_size(blob) == codec.gzip_size(blob)
    assert gzip.decompress(gzip.compress(blob, 9, mtime=0)) == blob
    assert codec.gzip_size(blob) == len(gzip.compress(blob, compresslevel=9, mtime=0))
    assert codec.gzip_size(bytes(100000)) < 1000


# ------------------------------------------------------------ sparse formats (Deep Compression)

def test_pack_bits_round_trip_and_size():
    rng = torch.Generator().manual_seed(0)
    for bits in (1, 3, 5, 8, 13, 16, 32):
        values = torch.randint(0, 2 ** min(bits, 31), (1001,), generator=rng).numpy()
        packed = codec.pack_bits(values, bits)
        assert len(packed) == -(-1001 * bits // 8)
        assert (codec.unpack_bits(packed, bits, 1001) == values).all()
    with pytest.raises(ValueError, match="bits=3"):
        codec.pack_bits([8], 3)
    with pytest.raises(CodecError, match="truncated"):
        codec.unpack_bits(b"\x00", 5, 4)


def test_relative_gaps_with_filler_zeros_by_hand():
    # 3-bit gaps: at most 7 zeros skipped per entry; a filler skips 7 zeros and holds a zero.
    positions = torch.tensor([2, 3, 20]).numpy()
    stored, filler = codec.relative_gaps(positions, 3)
    # 2 zeros then value; 0 zeros then value; 16 zeros = filler (8 positions) + filler
    # (8 positions) + 0 zeros then value.
    assert stored.tolist() == [2, 0, 7, 7, 0]
    assert filler.tolist() == [False, False, True, True, False]
    positions_back = (stored + 1).cumsum() - 1
    assert positions_back[~filler].tolist() == [2, 3, 20]


@pytest.mark.parametrize("fmt", ["dense", "csr32", "sparse_rel"])
@pytest.mark.parametrize("shape", [(300, 784), (50, 20, 5, 5), (10,), (3, 0)])
@pytest.mark.parametrize("density", [0.0, 0.002, 0.1, 1.0])
def test_every_format_round_trips_exactly(fmt, shape, density):
    gen = torch.Generator().manual_seed(1)
    tensor = torch.randn(shape, generator=gen) * (torch.rand(shape, generator=gen) < density)
    payload, entry = codec.encode_tensor(tensor, (fmt,))
    back = codec.FORMATS[entry["format"]][1](payload, entry["shape"], entry["dtype"], entry)
    assert torch.equal(back, tensor)


def test_sparse_sizes_by_hand():
    gen = torch.Generator().manual_seed(2)
    tensor = torch.randn(100, 300, generator=gen) * (torch.rand(100, 300, generator=gen) < 0.05)
    nnz = int(tensor.count_nonzero())
    csr, _ = codec.encode_tensor(tensor, ("csr32",))
    assert len(csr) == 4 * (100 + 1) + 4 * nnz + 4 * nnz       # pointers, columns, values
    rel, entry = codec.encode_tensor(tensor, ("sparse_rel",))
    entries, bits = entry["entries"], entry["index_bits"]
    assert entries == nnz + entry["fillers"]
    assert len(rel) == -(-entries * bits // 8) + 4 * entries
    # the chosen bit-width is the best of all widths for that order
    for other in range(1, 17):
        p, _ = codec.FORMATS["sparse_rel"].encode(tensor, None, order=entry["order"],
                                                   index_bits=other)
        assert len(rel) <= len(p)


def test_best_format_is_chosen_per_tensor():
    model = untrained("lenet300")
    pruned = Magnitude(sparsity=0.9).apply(model)
    formats = {t["name"]: t["format"] for t in codec.read_header(codec.encode(pruned))["tensors"]}
    assert formats["net.1.weight"] == "sparse_rel"      # 90% zeros
    assert formats["net.1.bias"] == "dense"             # biases are never pruned
    # the best file is no larger than any single format for every tensor
    best = len(codec.encode(pruned))
    for fmt in ("dense", "csr32"):
        assert best <= len(codec.encode(pruned, formats=(fmt,)))
    with pytest.raises(ValueError, match="allowed"):
        codec.encode(pruned, formats=("zip",))


class ScaledLinear(torch.nn.Module):
    """A stand-in for a method's own module: a linear layer times a learned scale."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.config = {"n_in": n_in, "n_out": n_out}
        self.inner = torch.nn.Linear(n_in, n_out)
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.inner(x) * self.scale

    def mac_counts(self, inputs, output):
        w = self.inner.weight
        return {"params": w.numel() + 1, "nonzeros": int(w.count_nonzero()) + 1,
                "macs": w.numel() + output.shape[-1], "effective_macs": w.numel()}


def test_custom_modules_are_rebuilt_and_count_their_own_macs(monkeypatch):
    monkeypatch.setitem(models.CUSTOM_MODULES, "ScaledLinear", ScaledLinear)
    model = untrained("lenet300")
    models.replace_module(model, "net.5", ScaledLinear(100, 10))
    blob = codec.encode(model)
    assert codec.read_header(blob)["modules"] == [
        {"path": "net.5", "type": "ScaledLinear", "config": {"n_in": 100, "n_out": 10}}]
    back = codec.decode(blob)
    x = sample_input(model)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    rows = {r["layer"]: r for r in measure.layer_table(model, model.input_shape)}
    assert rows["net.5"]["macs"] == 1010 and "net.5.inner" not in rows
    monkeypatch.delitem(models.CUSTOM_MODULES, "ScaledLinear")
    with pytest.raises(CodecError, match="ScaledLinear"):
        codec.decode(blob)
