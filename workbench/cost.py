"""``cost.energy``: the energy of one inference (one image) from a per-operation table.

Han et al. (2015, "Learning both weights and connections for efficient neural networks",
Figure 1) argue from Horowitz's 45 nm table (Horowitz, "Computing's energy problem (and what
we can do about it)", ISSCC 2014) that reading a weight from off-chip DRAM costs hundreds of
times an arithmetic operation, so a network whose file fits in on-chip SRAM saves most of its
energy. This module makes that argument a number for any network of the workbench:

    energy = memory + arithmetic
    memory = ceil(file bytes / 4) 32-bit reads, each SRAM_READ_PJ if the file fits in
             ``sram_bytes`` of on-chip memory, else DRAM_READ_PJ
    arithmetic = float MACs x (3.7 + 0.9) + int8 MACs x (0.2 + 0.03)
                 + binary ops x ``binary_op_pj`` + additions x 0.9      (pJ)

What is charged, and why (the choices the issue left open):

- Weights: the REAL file, ``len(codec.encode(model))`` (header, indices, codebooks and
  Huffman streams included), read once per image as 32-bit words: what Deep Compression
  shrinks is exactly what is read. No reuse across images (batch 1, as EIE measures).
- Where the file lives: all of it on chip if it fits in ``sram_bytes``, else all of it in DRAM
  (no partial caching). The default, 128 KB, is the weight SRAM of ONE processing element of
  EIE (Han et al. 2016, "EIE: Efficient Inference Engine on Compressed Deep Neural Network",
  section VI: "The Spmat SRAM is 128KB storing the compressed weights and indices"; EIE has 64
  of them): a small on-chip memory that the dense fp32 LeNets (266,610 and 431,080 weights of
  4 bytes) miss and their Deep Compression files (27 KB and 44 KB in Han et al. 2016, tables 2
  and 3) fit. Like Han et al., one SRAM figure (5 pJ per 32-bit read) is used whatever the
  size; Horowitz's own table charges larger caches more per access, so the figure flatters
  big on-chip memories.
- Zeros: a layer whose weight the file stores in a sparse format (the positions of its
  nonzeros are in the file, as EIE reads them) is charged its effective MACs (zero weights are
  neither fetched nor multiplied); a layer stored dense is charged every MAC (an engine that
  streams a dense matrix multiplies its zeros). ``zeros="skipped"`` / ``"multiplied"``
  charge effective / dense MACs everywhere instead.
- Precision: a MAC is int8 when the layer's weights AND activations are 8-bit integers at
  inference: a layer of ``quant.int8`` (weights in its ``AffineWeight`` parametrization, at
  most 8 bits, with the calibrated uint8 range of its input beside them). It is charged the
  8-bit multiply and the 8-bit add of Horowitz's table, as the issue asks; a real int8 kernel
  accumulates in int32 (Jacob et al. 2018), whose add the same table puts at 0.1 pJ (not
  charged here). The file of such a network decodes to float weights (the activation ranges
  are not stored), so its decoded copy is charged as float. Every other layer's MACs are
  float32; binary operations and additions are those of ``measure.layer_table``.
- Binary operations (1-bit x 1-bit multiply-accumulates, an XNOR and a popcount) have no
  figure in Horowitz's table. ASSUMPTION: each is charged one bit of his 8-bit add,
  0.03 / 8 pJ: an XNOR gate plus about one full adder of the popcount (an adder tree that
  counts n bits has about n full adders), scaling his 8-bit add linearly with width (his 8-bit
  and 32-bit integer adds, 0.03 and 0.1 pJ, scale about so). ``binary_op_pj`` changes it.
- Additions (binary or ternary weights on real inputs): one float32 add each.
- Not counted: activations (their reads and writes depend on the dataflow of the hardware,
  which this model does not describe; they are the same for a network and its pruned or
  quantized self), biases, batch norm, scales, codebook look-ups and index decoding.

``report()`` fills ``energy_uj``, ``energy_memory_uj``, ``energy_compute_uj`` and
``weights_on_chip`` with the defaults; ``energy(report_or_model, **knobs)`` gives the whole
bill (``Bill``) at other settings.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

from torch import nn

from .domains import Choice, Int, Real, knob
from .method import check_fields

# Energy per operation, 45 nm, picojoules.
FLOAT32_MULT_PJ = 3.7   # Horowitz 2014 (ISSCC) table; Han et al. 2015, Figure 1 "32 bit float MULT"
FLOAT32_ADD_PJ = 0.9    # Horowitz 2014; Han et al. 2015, Figure 1 "32 bit float ADD"
INT8_MULT_PJ = 0.2      # Horowitz 2014 "8b Mult" (not in Han et al.'s Figure 1, which is 32-bit)
INT8_ADD_PJ = 0.03      # Horowitz 2014 "8b Add"
SRAM_READ_PJ = 5.0      # Han et al. 2015, Figure 1 "32 bit SRAM Cache" (from Horowitz 2014)
DRAM_READ_PJ = 640.0    # Han et al. 2015, Figure 1 "32 bit DRAM Memory" (from Horowitz 2014)
BINARY_OP_PJ = INT8_ADD_PJ / 8   # ASSUMPTION (module docstring): one bit of an 8-bit add

PJ_45NM = {"float32_mult": FLOAT32_MULT_PJ, "float32_add": FLOAT32_ADD_PJ,
           "int8_mult": INT8_MULT_PJ, "int8_add": INT8_ADD_PJ, "sram_read32": SRAM_READ_PJ,
           "dram_read32": DRAM_READ_PJ, "binary_op": BINARY_OP_PJ}

# One EIE processing element's weight SRAM (Han et al. 2016, EIE, section VI): 128 KB.
SRAM_BYTES = 128 * 1024
ZEROS = ("by_file", "skipped", "multiplied")
WORD_BYTES = 4


@dataclass
class Bill:
    """The energy of one inference (microjoules) and what it was charged for."""
    energy_uj: float
    memory_uj: float
    compute_uj: float
    on_chip: bool            # the whole file fits in the on-chip SRAM
    file_bytes: int
    words: int               # 32-bit reads of the file
    sram_bytes: int
    float_macs: int          # charged (effective where the zeros are skipped)
    int8_macs: int
    binary_ops: int
    add_ops: int

    @property
    def memory(self) -> str:
        return "sram" if self.on_chip else "dram"

    def row(self) -> dict:
        return {**asdict(self), "memory": self.memory}


@dataclass
class Energy:
    """The energy model of ``cost.energy`` (module docstring): knobs checked like a method's.

    ``Energy(**knobs)(report_or_model, data=None)`` returns a ``Bill``.
    """
    id: ClassVar[str] = "cost.energy"
    reference: ClassVar[str] = ("Horowitz 2014, Computing's energy problem (ISSCC); Han, Pool, "
                                "Tran, Dally 2015, Learning both weights and connections")

    sram_bytes: int = knob(SRAM_BYTES, Int(0, 2**50))      # on-chip memory for the file
    zeros: str = knob("by_file", Choice(ZEROS))           # which MACs at zero weights count
    binary_op_pj: float = knob(BINARY_OP_PJ, Real(0.0, 1000.0))

    def __post_init__(self):
        check_fields(self)

    def __call__(self, subject, data=None) -> Bill:
        from .measure import Report, report
        if isinstance(subject, nn.Module):
            subject = report(subject, data, latency=False)
        if not isinstance(subject, Report):
            raise ValueError(f"cost.energy of a {type(subject).__name__}: allowed is a "
                             "measure.Report or an nn.Module")
        if not subject.layers:
            raise ValueError(f"Report {subject.name!r} has no per-layer table (rebuilt from "
                             "saved fields?): allowed is a report() result, or the model")
        return self.bill(subject.layers, subject.bytes)

    def charged(self, row: dict) -> dict:
        """The operations of one layer row that are paid for, by precision."""
        skip = self.zeros == "skipped" or (self.zeros == "by_file" and row.get("stored_sparse"))
        # the effective count applies to a plain Conv2d / Linear, whose MACs are its weights'
        macs = row["effective_macs"] if skip and row.get("plain") else row["float_macs"]
        int8 = bool(row.get("int8"))
        return {"float_macs": 0 if int8 else macs, "int8_macs": macs if int8 else 0,
                "binary_ops": row["binary_ops"], "add_ops": row["add_ops"]}

    def bill(self, layers: list[dict], file_bytes: int) -> Bill:
        """The bill of a layer table (``measure.layer_table`` rows annotated by ``annotate``)
        and a file of ``file_bytes`` bytes."""
        ops = {key: 0 for key in ("float_macs", "int8_macs", "binary_ops", "add_ops")}
        for row in layers:
            for key, value in self.charged(row).items():
                ops[key] += value
        compute_pj = (ops["float_macs"] * (FLOAT32_MULT_PJ + FLOAT32_ADD_PJ)
                      + ops["int8_macs"] * (INT8_MULT_PJ + INT8_ADD_PJ)
                      + ops["binary_ops"] * self.binary_op_pj
                      + ops["add_ops"] * FLOAT32_ADD_PJ)
        words = math.ceil(file_bytes / WORD_BYTES)
        on_chip = file_bytes <= self.sram_bytes
        memory_pj = words * (SRAM_READ_PJ if on_chip else DRAM_READ_PJ)
        return Bill(energy_uj=(memory_pj + compute_pj) / 1e6, memory_uj=memory_pj / 1e6,
                    compute_uj=compute_pj / 1e6, on_chip=on_chip, file_bytes=file_bytes,
                    words=words, sram_bytes=self.sram_bytes, **ops)


def energy(subject, data=None, **knobs) -> Bill:
    """The energy bill of one inference of ``subject`` (a ``measure.Report`` or a model,
    measured with ``data`` if given) under ``Energy(**knobs)``."""
    return Energy(**knobs)(subject, data)


# ------------------------------------------------------------------ what each layer is

def is_int8_layer(module: nn.Module) -> bool:
    """Weights and activations 8-bit integers at inference: a ``quant.int8`` layer (its
    ``AffineWeight`` holds <= 8-bit weight integers and the uint8 range of its input)."""
    from .quantize.int8 import affine_parametrization
    p = affine_parametrization(module)
    return p is not None and (p.qmax - p.qmin).bit_length() <= 8


def annotate(layers: list[dict], model: nn.Module, header: dict) -> list[dict]:
    """Add to each ``measure.layer_table`` row what the bill needs: ``stored`` (the format of
    its weight in the file, None when the file has no tensor of that name), ``stored_sparse``
    (that format holds positions of nonzeros), ``int8`` and ``plain`` (a Conv2d / Linear that
    does not count itself)."""
    from .codec import FORMATS
    from .measure import _counts_itself
    formats = {entry["name"]: entry["format"] for entry in header["tensors"]}
    for row in layers:
        module = model.get_submodule(row["layer"])
        stored = formats.get(f"{row['layer']}.weight")
        row["stored"] = stored
        row["stored_sparse"] = stored in FORMATS and "sparse" in FORMATS[stored].kind
        row["int8"] = is_int8_layer(module)
        row["plain"] = isinstance(module, (nn.Conv2d, nn.Linear)) and not _counts_itself(module)
    return layers


ACCOUNTS = (Energy,)     # what measures a network without compressing it: id -> class
