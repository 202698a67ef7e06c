"""Compressors made of other compressors (catalogue section G).

``Hybrid`` is a list of methods applied in order, each to the previous one's output: e.g.
distill, then prune, then quantize. ``DeepCompression`` (Han, Mao, Dally 2016) is its flagship
instance: iterative magnitude pruning with retraining (Han et al. 2015), then k-means weight
sharing per layer with the centroids fine-tuned (conv and fc layers with their own number of
bits), then Huffman coding of the weight indices and of the sparse relative positions. The
first two stages change the network; the third (``encode.huffman``) is lossless and lives in
the file format: the network it returns carries its encoding, so ``codec.encode`` and
``measure.report`` give the Huffman-coded bytes (see ``workbench.huffman``).

``stages(model, data)`` returns the network after every step, so a lesson or the ``reproduce``
command can show the bytes and the accuracy stage by stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .method import Method, clone_model

def build_steps(steps) -> list[Method]:
    """The method objects of ``steps`` = [(catalogue id, settings dict), ...]."""
    from . import METHODS
    out = []
    for position, step in enumerate(steps):
        if not (isinstance(step, (tuple, list)) and len(step) == 2 and isinstance(step[1], dict)):
            raise ValueError(f"Hybrid.steps[{position}]={step!r}: allowed is a pair "
                             "(catalogue id, dict of settings)")
        method_id, settings = step
        if method_id not in METHODS or method_id.startswith("pipeline."):
            raise ValueError(f"Hybrid.steps[{position}]: {method_id!r} is not a method here; "
                             f"allowed: the ids of workbench.METHODS outside pipeline.*")
        try:
            out.append(METHODS[method_id](**settings))
        except TypeError as err:
            raise ValueError(f"Hybrid.steps[{position}] ({method_id}): {err}") from err
    return out


@dataclass
class Hybrid(Method):
    """Any chain of methods as one compressor (seed 004's "future directions": combining the
    families). ``data`` goes to the steps that need it."""
    id = "pipeline.hybrid"
    reference = "Combining compression families, as the surveys suggest (seed 004)"
    needs_data = True
    smoke = {"steps": (("prune.magnitude", {"sparsity": 0.8}),
                       ("quant.kmeans", {"k": 4}))}

    steps: tuple = (("prune.magnitude", {"sparsity": 0.9}), ("quant.kmeans", {"k": 16}))

    def validate(self):
        if not isinstance(self.steps, (tuple, list)) or not self.steps:
            raise ValueError(f"Hybrid.steps={self.steps!r}: allowed is a non-empty list of "
                             "(catalogue id, settings) pairs")
        build_steps(self.steps)

    def methods(self) -> list[Method]:
        return build_steps(self.steps)

    def stages(self, model: nn.Module, data=None, progress: bool = True
               ) -> list[tuple[str, nn.Module]]:
        """[(method id, network after it), ...], the input first as ("base", model).
        ``progress=False`` silences the training bars of the steps."""
        out, current = [("base", model)], model
        for method in self.methods():
            method.progress = progress
            if method.needs_data and data is None:
                raise ValueError(f"{type(self).__name__}.apply needs data: step {method.id} "
                                 "trains or samples")
            current = method.apply(current, data if method.needs_data else None)
            out.append((method.id, current))
        return out

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        return self.stages(clone_model(model), data)[-1][1]

    def bits_per_weight(self) -> float | None:
        """The bits of the last step that sets them (lossless encodings keep them)."""
        for method in reversed(self.methods()):
            bits = method.bits_per_weight() if hasattr(method, "bits_per_weight") else None
            if bits is not None:
                return bits
        return None


@dataclass
class DeepCompression(Hybrid):
    """Prune, share, Huffman-code (Han, Mao, Dally 2016).

    ``prune``: settings of ``prune.iterative`` (per-layer shares, rounds, epochs); then
    ``quant.trained_kmeans`` with ``2**fc_bits - 1`` shared weights per fully connected layer
    and ``2**conv_bits - 1`` per convolution, the last of the ``2**bits`` codes being the zero of
    the pruned weights (the paper: 8 bits for conv, 5 for fc layers on AlexNet),
    for ``quant_epochs`` epochs (zeros stay zero); then ``encode.huffman``.
    """
    id = "pipeline.deep_compression"
    reference = ("Han, Mao, Dally 2016, Deep Compression: Compressing Deep Neural Networks "
                 "with Pruning, Trained Quantization and Huffman Coding")
    sliders = {"fc_bits": (2, 8, 1), "conv_bits": (2, 8, 1)}
    archs = ("lenet300", "lenet5", "vgg_small", "resnet20")
    smoke = {"prune": {"rounds": 1, "epochs": 1}, "quant_epochs": 1}

    prune: dict = field(default_factory=dict)
    fc_bits: int = 5
    conv_bits: int = 8
    quant_epochs: int = 3
    quant_lr: float = 1e-4
    steps: tuple = ()          # built from the fields above; leave empty

    def validate(self):
        for name in ("fc_bits", "conv_bits"):
            self._check_int(name, 2, 16)
        if not isinstance(self.prune, dict):
            raise ValueError(f"DeepCompression.prune={self.prune!r}: allowed is a dict of "
                             "prune.iterative settings")
        if self.steps:
            raise ValueError("DeepCompression.steps is built from prune, fc_bits, conv_bits "
                             "and quant_epochs; leave it empty")
        build_steps(self.chain())

    def chain(self) -> tuple:
        # b bits index 2**b symbols: 2**b - 1 shared weights and the zero of pruned weights
        # (and of the sparse format's filler entries).
        return (("prune.iterative", dict(self.prune)),
                ("quant.trained_kmeans", {"k": 2 ** int(self.fc_bits) - 1,
                                          "conv_k": 2 ** int(self.conv_bits) - 1,
                                          "epochs": int(self.quant_epochs),
                                          "lr": self.quant_lr}),
                ("encode.huffman", {}))

    def methods(self) -> list[Method]:
        return build_steps(self.chain())

    def settings(self) -> dict:
        return {k: v for k, v in self.params().items() if k != "steps"}

    def bits_per_weight(self) -> float:
        return float(self.fc_bits)


METHODS = (Hybrid, DeepCompression)
