"""workbench.codec's formats: the bytes of file format version 1 are pinned (version 2 is
version 1 with the header deflated), and a format is one registered object whose attributes
alone decide when it is tried."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from conftest import as_version_1, sample_input, untrained
from torch.nn.utils import prune

from workbench import codec, zoo

# ---------------------------------------------------------------- file format version 1

# These digests pin the file format version 1: the bytes that workbench/codec.py wrote before
# the codec became a package (computed with that code). A change of any of them means files
# written earlier may no longer read the same: bump codec.VERSION instead.
MODEL_DIGESTS = {
    "lenet300_pruned": "5da435984989fd5b5d64718e14dd1d44f521f4f0b5cb22a922a274f3b5042ac3",
    "lenet300_pruned_csr32": "dc710bc0cbf1f745cc60c68e21c201f85f79e6ba1e3d3235cce8f745df62e2a6",
    "lenet5_shared": "4d094c06e71a5fe6267fabc33e6f2ea1c9d5eb61d69fd99a58650727a47e32bd",
    "lenet300_pruned_shared_huffman":
        "ee1b5c5ebf04bb4475f09268dc4e5b04d1b0170ba62fc12997c161e5a8c76544",
    "lenet300_float16": "d7152ad4e8651e06b342bc58d638ee415471e9d622290ba1833fdb4180215af0",
    "resnet20": "6c7c024c1b5dc34d8d02eeaeb3f0f445f3064860c21877c80ee0f491aed32856",
}
# payload + JSON of the header entry of one deterministic tensor per format (same version 1)
TENSOR_DIGESTS = {
    "pow2": "70a804824d62e716a8b95577e58abf8472974e4331de8f5d2f5bb6750566b88f",
    "codebook": "efaf3735d0cccb74074dee076e6c71dd5024d8d91dfe545276528b01288b7a2f",
    "sparse_codebook": "b477e0adeee0e0498fdf41955b897876f91012289fe943229f47b58c45c2cdb9",
    "sparse_rel_col5": "3a2c67945378e789c86cd5353d31f95d2241e96c3c7758ea9018ded8d5c00dbe",
    "huffman_codebook": "1a634bb936c353db592695b0c4387d44f23adbdd02b58f5fb557da2543466e60",
    "huffman_sparse": "958761355f512184351716186eaf61aa05a1bad9b6969d6310b1cbac8e85bc6d",
    "affine": "e8ba894f500549a553262856e26e4e9174b90212dc01f15c8f7e26f50e5768db",
    "default_mixed": "56227628688c33cf2b36ab80b3f644344d9da87c6a5e0ea70df5be940a4d6965",
}


def pruned_lenet300():
    """The trained LeNet-300-100 with 90% of each layer's weights masked (torch's own masks):
    no method of the workbench involved, so only the codec can change these bytes."""
    model = zoo.pretrained("lenet300")
    for layer in (model.net[1], model.net[3], model.net[5]):
        w = layer.weight.detach().abs().flatten()
        threshold = w.kthvalue(int(0.9 * w.numel())).values
        prune.custom_from_mask(layer, "weight", layer.weight.detach().abs() > threshold)
    return model


def shared(model, k=16):
    """Every conv / linear weight replaced by the nearest of k evenly spaced values."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                w = getattr(m, "weight_orig", m.weight)     # a pruned layer: its kept values
                book = torch.linspace(float(w.min()), float(w.max()), k)
                near = book[(w.unsqueeze(-1) - book).abs().argmin(-1)]
                w.copy_(torch.where(w == 0, 0.0, near))
    return model


MODEL_FILES = {
    "lenet300_pruned": lambda: codec.encode(pruned_lenet300()),
    "lenet300_pruned_csr32": lambda: codec.encode(pruned_lenet300(), formats=("dense", "csr32")),
    "lenet5_shared": lambda: codec.encode(shared(zoo.pretrained("lenet5"))),
    "lenet300_pruned_shared_huffman": lambda: codec.encode(
        shared(pruned_lenet300()), formats=codec.DEFAULT_FORMATS + codec.ENTROPY_FORMATS),
    "lenet300_float16": lambda: codec.encode(zoo.pretrained("lenet300"), dtype="float16"),
    "resnet20": lambda: codec.encode(zoo.pretrained("resnet20")),
}


@pytest.mark.parametrize("case", MODEL_DIGESTS)
def test_model_files_hold_the_bytes_of_version_1(case):
    # the deflated bytes themselves are not pinned: another zlib may deflate the same text
    # otherwise
    assert hashlib.sha256(as_version_1(MODEL_FILES[case]())).hexdigest() == MODEL_DIGESTS[case]


def tensor_cases():
    """One deterministic tensor (no random numbers) per format, the formats, the hint."""
    i = torch.arange(600, dtype=torch.float32).reshape(20, 30)
    wave = torch.sin(i * 0.37) * torch.cos(i * 0.011)
    pow2 = torch.where(wave.abs() < 0.3, 0.0, torch.sign(wave) * 2.0 ** torch.round(wave * 4 - 3))
    few = torch.round(wave * 3) / 8
    scale = torch.linspace(0.01, 0.03, 20)[:, None]
    q = torch.round(wave / scale).clamp(-128, 127)
    hint = {"format": "affine", "bits": 8, "axis": 0, "scale": scale.flatten(),
            "zero_point": torch.zeros(20, dtype=torch.int32)}
    return {
        "pow2": (pow2, ("pow2",), None),
        "codebook": (few, ("codebook",), None),
        "sparse_codebook": (few, ("sparse_codebook",), None),
        "sparse_rel_col5": (few, ("sparse_rel",), None),
        "huffman_codebook": (few, ("huffman_codebook",), None),
        "huffman_sparse": (few, ("huffman_sparse",), None),
        "affine": (q * scale, ("dense", "affine"), hint),
        "default_mixed": (torch.cat([few, pow2]), None, None),
    }


@pytest.mark.parametrize("case", TENSOR_DIGESTS)
def test_tensor_payloads_are_byte_identical_to_version_1(case):
    tensor, formats, hint = tensor_cases()[case]
    layout = {"order": "col", "index_bits": 5} if case.endswith("col5") else None
    payload, entry = codec.encode_tensor(tensor, formats, hint=hint, layout=layout)
    assert entry["format"] == case.removesuffix("_col5").replace("default_mixed",
                                                                 "sparse_codebook")
    digest = hashlib.sha256(payload + json.dumps(entry).encode()).hexdigest()
    assert digest == TENSOR_DIGESTS[case]


# ---------------------------------------------------------------- the Format object

def test_registry_attributes_give_the_format_sets():
    assert codec.DEFAULT_FORMATS == tuple(n for n, f in codec.FORMATS.items() if f.default)
    assert codec.DEFAULT_FORMATS[:6] == ("dense", "sparse_rel", "codebook", "sparse_codebook",
                                         "pow2", "affine")
    assert codec.ENTROPY_FORMATS == ("huffman_codebook", "huffman_sparse")
    assert all("entropy" in codec.FORMATS[n].kind and not codec.FORMATS[n].default
               for n in codec.ENTROPY_FORMATS)
    assert codec.FORMATS["sparse_codebook"].kind == {"sparse", "shared"}
    # the old (encoder, decoder) pair still reads from a Format
    assert codec.FORMATS["dense"][1] is codec.FORMATS["dense"].decode


def test_bad_kind_is_named():
    with pytest.raises(ValueError, match="kind.*allowed.*dense"):
        codec.Format("x", None, None, kind="fancy")


@pytest.fixture
def registry():
    """The registry as it was, restored after the test."""
    saved = dict(codec.FORMATS)
    yield codec.FORMATS
    codec.FORMATS.clear()
    codec.FORMATS.update(saved)


def encode_constant(tensor, dtype=None):
    if not bool((tensor == tensor.flatten()[0]).all()):
        raise ValueError("not a constant tensor")
    return codec.FORMATS["dense"].encode(tensor.flatten()[:1], dtype)[0], {}


def decode_constant(payload, shape, dtype, meta):
    return codec.FORMATS["dense"].decode(payload, [1], dtype, meta).expand(shape).clone()


def test_a_registered_format_is_chosen_and_stored_without_touching_the_rest(registry):
    codec.register(codec.Format("constant", encode_constant, decode_constant, kind="structured"))
    assert "constant" in codec.DEFAULT_FORMATS
    tensor = torch.full((50, 20), 0.25)
    payload, entry = codec.encode_tensor(tensor)
    assert entry["format"] == "constant" and len(payload) == 2       # one float16 value
    model = untrained("lenet300", seed=2)
    with torch.no_grad():
        model.net[3].weight.fill_(0.125)
    blob = codec.encode(model)
    entries = {t["name"]: t for t in codec.read_header(blob)["tensors"]}
    assert entries["net.3.weight"]["format"] == "constant"
    x = sample_input(model)
    assert torch.equal(codec.decode(blob)(x), model(x))
    with pytest.raises(ValueError, match="exists already"):
        codec.register(codec.Format("constant", encode_dense_copy, decode_constant,
                                    kind="structured"))


def encode_dense_copy(tensor, dtype=None):
    return codec.FORMATS["dense"].encode(tensor, dtype)


def test_choice_follows_the_attributes_not_the_names(registry):
    calls = []

    def spy(tensor, dtype=None, **options):
        calls.append(options)
        return codec.FORMATS["dense"].encode(tensor, dtype)

    # sparse: gets the layout, is skipped on a tensor without zeros
    codec.register(codec.Format("spy_sparse", spy, codec.FORMATS["dense"].decode, kind="sparse",
                                default=False))
    with_zeros = torch.tensor([[0.0, 1.5], [2.5, 0.0]])
    codec.encode_tensor(with_zeros, ("spy_sparse",), layout={"order": "col"})
    assert calls == [{"order": "col"}]
    codec.encode_tensor(with_zeros + 1, ("dense", "spy_sparse"), layout={"order": "col"})
    assert len(calls) == 1
    # a lower bound that cannot win: never encoded once a smaller payload is known
    # (structured formats are tried first: this one is sparse, tried after dense)
    codec.register(codec.Format("spy_big", spy, codec.FORMATS["dense"].decode, kind="sparse",
                                default=False, lower_bound=lambda nnz, rows, vb: 10 ** 9))
    codec.encode_tensor(with_zeros, ("dense", "spy_big"))
    assert len(calls) == 1
    # not default: only when asked for by name
    assert "spy_sparse" not in codec.DEFAULT_FORMATS
    codec.encode_tensor(with_zeros)
    assert len(calls) == 1


def test_the_choice_is_the_smallest_payload_whatever_order_formats_are_tried_in():
    """Structured formats are tried first so that lower bounds can skip the costly ones; the
    result must still be what trying every format gives: the smallest, the earlier on a tie."""
    from workbench import zoo
    from workbench.binary import core
    w = zoo.pretrained("lenet300").net[3].weight.detach() if "lenet300" in zoo.manifest() \
        else torch.randn(100, 300)
    alpha = w.abs().mean()
    pruned = w * (w.abs() > w.abs().quantile(0.9))
    tensors = {"float": w, "binary": core.binarize(w), "pruned": pruned,
               "pruned fp16": pruned.half().float(),
               "ternary": alpha * ((w > 0.7 * alpha).float() - (w < -0.7 * alpha).float())}
    names = list(codec.FORMATS)
    for label, t in tensors.items():
        sizes = {}
        for name in codec.DEFAULT_FORMATS:
            if "hinted" in codec.FORMATS[name].kind:
                continue
            try:
                sizes[name] = codec.encode_tensor(t, (name,))[1]["nbytes"]
            except ValueError:
                pass
        expected = min(sizes, key=lambda n: (sizes[n], names.index(n)))
        assert codec.encode_tensor(t)[1]["format"] == expected, label
