"""The ``affine`` format: integers of b bits with a scale and zero point per channel, the form
of 8-bit quantization. Hinted: the scales come from the layer's quantizer (``codec_hint()``),
and the tensor is stored this way only when the round trip is bit-exact."""
from __future__ import annotations

import numpy as np
import torch

from .bits import pack_bits, unpack_bits
from .dense import decode_dense, encode_dense
from .formats import Format, register


def encode_affine(tensor: torch.Tensor, dtype: str | None = None, hint: dict | None = None
                  ) -> tuple[bytes, dict]:
    """Integers ``q`` of ``bits`` bits with a scale and zero point per slice of ``axis``
    (per channel) or one of each (per tensor): the value is ``(q - zero_point) * scale``."""
    if "bits" not in hint or "scale" not in hint or "zero_point" not in hint:
        raise ValueError("an affine hint needs 'scale', 'zero_point' and 'bits'")
    scale = torch.as_tensor(hint["scale"]).detach().float().reshape(-1)
    zero = torch.as_tensor(hint["zero_point"]).reshape(-1)
    bits, axis = int(hint["bits"]), int(hint.get("axis", 0))
    if not 0 <= axis < max(tensor.dim(), 1) or len(zero) != len(scale) \
            or len(scale) not in (1, tensor.shape[axis] if tensor.dim() else 1):
        raise ValueError(f"affine hint: {len(scale)} scales and {len(zero)} zero points for "
                         f"axis {axis} of a tensor of shape {list(tensor.shape)}")
    view = [1] * tensor.dim()
    if len(scale) > 1:
        view[axis] = len(scale)
    s, z = scale.reshape(view), zero.to(torch.float32).reshape(view)
    q = torch.round(tensor.detach() / s + z)
    low = int(q.min())
    if int(q.max()) - low >= 1 << bits:
        raise ValueError(f"integers span more than {bits} bits")
    payload = (encode_dense(scale)[0] + encode_dense(zero.to(torch.int32))[0]
               + pack_bits((q - low).flatten().to(torch.int64).numpy(), bits))
    return payload, {"bits": bits, "axis": axis, "channels": len(scale), "low": low}


def decode_affine(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    c, bits, axis = meta["channels"], meta["bits"], meta["axis"]
    scale = decode_dense(payload[:4 * c], [c], "float32", {})
    zero = decode_dense(payload[4 * c:8 * c], [c], "int32", {})
    count = int(np.prod(shape, dtype=np.int64))
    q = torch.from_numpy(unpack_bits(payload[8 * c:], bits, count).astype(np.int64))
    view = [1] * len(shape)
    if c > 1:
        view[axis] = c
    q = (q + meta["low"]).to(torch.float32).reshape(shape)
    # The same expression, in the same order, as the quantizers compute: bit-exact.
    return ((q - zero.to(torch.float32).reshape(view)) * scale.reshape(view)).to(getattr(torch, dtype))


register(Format("affine", encode_affine, decode_affine, kind="hinted"))
