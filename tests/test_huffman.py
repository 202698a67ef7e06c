"""workbench.huffman and the Huffman-coded formats of the codec: optimal code lengths (the
textbook example), canonical codes, the entropy bound, exact round trips, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench import codec, huffman


def test_code_lengths_of_the_textbook_example():
    # Cormen et al., Introduction to Algorithms, 16.3: a:45 b:13 c:12 d:16 e:9 f:5 -> 224 bits
    counts = np.array([45, 13, 12, 16, 9, 5])
    lengths = huffman.code_lengths(counts)
    assert lengths.tolist() == [1, 3, 3, 3, 4, 4]
    assert int((counts * lengths).sum()) == 224


def test_canonical_codes_are_prefix_free_and_consecutive():
    lengths = np.array([2, 1, 3, 0, 3])
    codes = huffman.canonical_codes(lengths)
    as_text = {s: format(codes[s], f"0{lengths[s]}b") for s in np.flatnonzero(lengths)}
    assert as_text == {1: "0", 0: "10", 2: "110", 4: "111"}
    words = list(as_text.values())
    assert not any(a != b and b.startswith(a) for a in words for b in words)


@pytest.mark.parametrize("alphabet,skew", [(2, 0.9), (16, 0.5), (32, 0.2), (256, 0.05), (5, 1.0)])
def test_round_trip_and_within_one_bit_a_symbol_of_the_entropy(alphabet, skew):
    rng = np.random.default_rng(alphabet)
    p = (1 - skew) ** np.arange(alphabet) if skew < 1 else np.eye(alphabet)[0] + 1e-9
    symbols = rng.choice(alphabet, size=5000, p=p / p.sum())
    table, stream, bits = huffman.encode(symbols, alphabet)
    assert len(table) == alphabet and len(stream) == -(-bits // 8)
    assert np.array_equal(huffman.decode(table, stream, len(symbols)), symbols)
    bound = huffman.entropy_bits(symbols)
    assert bound <= bits <= bound + len(symbols)


def test_entropy_bits_by_hand():
    assert huffman.entropy_bits(np.array([0, 1, 0, 1])) == pytest.approx(4.0)
    assert huffman.entropy_bits(np.array([3, 3, 3])) == 0.0
    # a dyadic distribution is coded exactly at its entropy
    symbols = np.array([0] * 4 + [1] * 2 + [2, 3])
    assert huffman.encode(symbols, 4)[2] == huffman.entropy_bits(symbols) == 14


def test_truncated_stream_and_corrupt_table_are_named():
    symbols = np.random.default_rng(0).integers(0, 8, 400)
    table, stream, _ = huffman.encode(symbols, 8)
    with pytest.raises(huffman.HuffmanError, match="truncated"):
        huffman.decode(table, stream[: len(stream) // 2], len(symbols))
    broken = bytes([1] * 8)                     # eight 1-bit codes: not a prefix code
    with pytest.raises(huffman.HuffmanError, match="corrupt code table"):
        huffman.decode(broken, stream, len(symbols))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        huffman.encode(np.array([0, 9]), 8)


def pruned_shared(shape=(300, 784), k=32, density=0.08, seed=0):
    gen = torch.Generator().manual_seed(seed)
    codebook = torch.randn(k, generator=gen)
    # centroids near zero are more frequent, as in Han et al.'s fig. 5
    picks = torch.multinomial(torch.exp(-codebook.abs() * 2), shape[0] * shape[1], True, generator=gen)
    tensor = codebook[picks].reshape(shape)
    return tensor * (torch.rand(shape, generator=gen) < density)


@pytest.mark.parametrize("fmt", codec.ENTROPY_FORMATS)
def test_huffman_formats_round_trip_and_beat_fixed_length(fmt):
    tensor = pruned_shared()
    payload, entry = codec.encode_tensor(tensor, (fmt,))
    back = codec.FORMATS[fmt][1](payload, entry["shape"], entry["dtype"], entry)
    assert torch.equal(back, tensor)
    fixed = {"huffman_codebook": "codebook", "huffman_sparse": "sparse_codebook"}[fmt]
    assert len(payload) < len(codec.encode_tensor(tensor, (fixed,))[0])
    streams = [entry[s] for s in ("gaps", "indices") if s in entry]
    for stream in streams:   # Huffman is within one bit a symbol of the entropy bound ...
        assert stream["entropy_bits"] <= stream["stream_bits"] \
            <= stream["entropy_bits"] + stream["count"]
    if fmt == "huffman_sparse":
        # ... and on Deep Compression's streams, which have no symbol of probability near 1,
        # within 3% (the dense codebook stream of a 92%-zero layer is 1 bit a zero, far
        # above its entropy of about 0.6 bit: that is why the sparse format comes first).
        for stream in streams:
            assert stream["stream_bits"] <= 1.03 * stream["entropy_bits"]


def test_huffman_is_not_a_default_format_and_model_round_trips():
    assert not set(codec.ENTROPY_FORMATS) & set(codec.DEFAULT_FORMATS)
    from conftest import sample_input, untrained
    model = untrained("lenet300", seed=4)
    with torch.no_grad():
        for p in (model.net[1].weight, model.net[3].weight):
            p.copy_(pruned_shared(tuple(p.shape), seed=1))
    blob = codec.encode(model, formats=codec.DEFAULT_FORMATS + codec.ENTROPY_FORMATS)
    assert len(blob) < len(codec.encode(model))
    x = sample_input(model)
    torch.testing.assert_close(codec.decode(blob)(x), model.eval()(x), atol=0, rtol=0)


def test_stream_must_end_where_the_file_says():
    symbols = np.random.default_rng(1).integers(0, 6, 300)
    table, stream, bits = huffman.encode(symbols, 6)
    assert np.array_equal(huffman.decode(table, stream, 300, bits=bits), symbols)
    with pytest.raises(huffman.HuffmanError, match="end at bit"):
        huffman.decode(table, stream, 299, bits=bits)
    with pytest.raises(ValueError, match="integers"):
        huffman.encode(np.array([0.5, 1.7]), 4)
    one = huffman.encode(np.zeros(3, dtype=int), 2)          # a single 1-bit code "0"
    with pytest.raises(huffman.HuffmanError, match="match no code"):
        huffman.decode(one[0], b"\xff", 3)
