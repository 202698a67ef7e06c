"""The plain format: raw little-endian values of the tensor's dtype (or of the dtype asked
for). It holds any tensor, so it is the fallback of every choice, and the other formats use it
for their own value tables (codebooks, scales, sparse values)."""
from __future__ import annotations

import numpy as np
import torch

from .formats import CodecError, Format, register


def encode_dense(tensor: torch.Tensor, dtype: str | None = None) -> tuple[bytes, dict]:
    target = getattr(torch, dtype) if dtype else tensor.dtype
    array = tensor.detach().to(target).contiguous().cpu()
    if target == torch.bfloat16:  # numpy has no bfloat16: store its 16 bits
        array = array.view(torch.int16)
    return array.numpy().astype(array.numpy().dtype.newbyteorder("<")).tobytes(), {}


def decode_dense(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    stored = getattr(torch, meta.get("stored_dtype", dtype))
    numpy_type = torch.empty(0, dtype=torch.int16 if stored == torch.bfloat16 else stored).numpy().dtype
    expected = int(np.prod(shape, dtype=np.int64)) * numpy_type.itemsize
    if len(payload) != expected:
        raise CodecError(f"corrupt dense payload: {len(payload)} bytes, {list(shape)} values of "
                         f"{numpy_type.itemsize} bytes need {expected}")
    array = np.frombuffer(payload, dtype=numpy_type.newbyteorder("<")).astype(numpy_type)
    tensor = torch.from_numpy(array.copy())
    if stored == torch.bfloat16:
        tensor = tensor.view(torch.bfloat16)
    return tensor.reshape(shape).to(getattr(torch, dtype))


register(Format("dense", encode_dense, decode_dense, kind="dense"))
