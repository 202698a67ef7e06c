"""The real byte format of a compressed model: ``encode(model) -> bytes``, ``decode(bytes)``.

``encode`` stores every tensor in the smallest of the formats allowed, so the bytes of a
compressed model are the real length of the best file. Float values are stored exactly (up to
the sign of a zero): in two bytes when every value is a float16 or bfloat16 number.
Reversible compression (pruning masks, fake quantization) is folded into plain weights
before encoding, so ``decode(encode(m))`` is a plain network with the same outputs as ``m``.

The package::

    container.py  the file: framing, header, CRC32; encode / decode of a model, read_header
    formats.py    the Format object, the registry (FORMATS, register) and the choice of format
    bits.py       bit packing, and base-k digits packed several to a group
    dense.py      dense: raw values (holds any tensor)
    sparse.py     sparse_rel (Deep Compression's relative indices), csr32
    shared.py     codebook, sparse_codebook, pow2: few distinct values
    affine.py     affine: b-bit integers with scales, hinted by 8-bit quantizers
    entropy.py    huffman_codebook, huffman_sparse: Deep Compression's Huffman stage
    binary.py     signs, ternary: binary and ternary weights, bit-packed, with their scales;
                  row_codebook: few values per row (network sketching)

A family adds a format with ``register(Format(name, encode, decode, kind=...))`` (see
``Format`` and ``KINDS``), or ``register_format`` for a hinted one; nothing else changes.
"""
# Each module registers its formats on import, in this order: the registry's order is the
# order of DEFAULT_FORMATS, and the earlier format wins a tie in size.
# binary comes last: a new format must not take a tie from the formats of version-1 files.
from . import dense, sparse, shared, affine, entropy, binary  # noqa: F401
from .binary import (decode_row_codebook, decode_signs, decode_ternary, encode_row_codebook,
                     encode_signs, encode_ternary, weight_structure)
from .bits import pack_bits, pack_symbols, radix_group, unpack_bits, unpack_symbols
from .container import (MAGIC, VERSION, codec_hints, decode, encode, gzip_size,
                        header_block, plain_state_dict, read_header)
from .entropy import deep_compression_streams
from .formats import (FLOAT_DTYPES, FORMATS, KINDS, MAX_CODEBOOK, CodecError, Format,
                      default_formats, encode_tensor, entropy_formats, narrowest_float, register,
                      register_format)
from .sparse import as_matrix, relative_gaps, sparse_entries


def __getattr__(name: str):
    # Computed on each use: a format registered later (product quantization's "pq" when
    # workbench.quantize is imported) is in them too.
    if name == "DEFAULT_FORMATS":
        return default_formats()
    if name == "ENTROPY_FORMATS":      # asked for by name: Deep Compression's last stage
        return entropy_formats()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CodecError", "DEFAULT_FORMATS", "ENTROPY_FORMATS", "FLOAT_DTYPES", "FORMATS", "Format",
           "KINDS", "MAGIC", "MAX_CODEBOOK", "VERSION", "as_matrix", "codec_hints", "decode",
           "decode_row_codebook", "decode_signs", "decode_ternary", "deep_compression_streams",
           "default_formats", "encode", "encode_row_codebook", "encode_signs", "encode_tensor",
           "encode_ternary", "entropy_formats", "gzip_size", "header_block", "narrowest_float",
           "pack_bits", "pack_symbols", "plain_state_dict", "radix_group", "read_header",
           "register", "register_format", "relative_gaps", "sparse_entries", "unpack_bits",
           "unpack_symbols", "weight_structure"]
