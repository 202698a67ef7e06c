"""cost.energy against hand arithmetic: 45 nm pJ per operation, the file read as 32-bit words
from SRAM or DRAM, MACs by precision, zeros skipped where the file stores them sparse."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import untrained
from torch import nn

from workbench import METHODS, codec, cost, measure, models, zoo
from workbench.prune import Magnitude

FLOAT_MAC = 3.7 + 0.9          # Horowitz 2014 / Han et al. 2015, Figure 1
INT8_MAC = 0.2 + 0.03


def words(model) -> int:
    return math.ceil(len(codec.encode(model)) / 4)


def signs(rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    scale = torch.arange(1, rows + 1, dtype=torch.float32).view(-1, 1) / 4
    return torch.where(torch.randn(rows, cols, generator=g) >= 0, scale, -scale)


class Hand(nn.Module):
    """real x -> binary-weight conv (additions) -> sign -> binary-weight conv (binary ops)
    -> flatten -> float linear with 50 of 60 weights zero -> relu -> float linear."""
    input_shape = (1, 6, 6)

    def __init__(self):
        super().__init__()
        from workbench.binary.core import SignActivation
        self.config = {}
        self.conv1 = nn.Conv2d(1, 2, 3, bias=False)            # 6x6 -> 4x4
        self.sign = SignActivation()                           # sign(0) = +1: the probe is +-1
        self.conv2 = nn.Conv2d(2, 3, 3, bias=False)            # 4x4 -> 2x2
        self.fc1 = nn.Linear(12, 5)
        self.fc2 = nn.Linear(5, 2)
        with torch.no_grad():
            self.conv1.weight.copy_(signs(2, 9, 0).view(2, 1, 3, 3))
            self.conv2.weight.copy_(signs(3, 18, 1).view(3, 2, 3, 3))
            self.fc1.weight.view(-1)[10:] = 0                  # 10 nonzero weights of 60

    def forward(self, x):
        x = self.conv2(self.sign(self.conv1(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


@pytest.fixture
def hand(monkeypatch):
    monkeypatch.setitem(models.CUSTOM_MODULES, "Hand", Hand)     # the codec rebuilds it
    torch.manual_seed(0)
    return Hand().eval()


def test_tiny_network_by_hand_exact_picojoules(hand):
    header = codec.read_header(codec.encode(hand))
    formats = {e["name"]: e["format"] for e in header["tensors"]}
    assert "sparse" in codec.FORMATS[formats["fc1.weight"]].kind    # the premise of the skip
    assert "sparse" not in codec.FORMATS[formats["fc2.weight"]].kind
    bill = cost.energy(hand)
    adds, binary = 2 * 9 * 16, 3 * 18 * 4                        # conv1, conv2
    float_macs = 10 + 5 * 2                                      # fc1's nonzeros, fc2 dense
    assert (bill.add_ops, bill.binary_ops, bill.float_macs, bill.int8_macs) == \
        (adds, binary, float_macs, 0)
    compute_pj = adds * 0.9 + binary * 0.03 / 8 + float_macs * FLOAT_MAC
    assert bill.compute_uj * 1e6 == pytest.approx(compute_pj, rel=1e-12)
    assert bill.on_chip and bill.words == words(hand)            # a few hundred bytes: on chip
    assert bill.memory_uj * 1e6 == pytest.approx(words(hand) * 5.0, rel=1e-12)
    assert bill.energy_uj == pytest.approx(bill.memory_uj + bill.compute_uj, rel=1e-12)
    # the same network with zeros multiplied, in DRAM, and binary ops at another price
    other = cost.energy(hand, zeros="multiplied", sram_bytes=0, binary_op_pj=0.5)
    assert other.float_macs == 60 + 10 and not other.on_chip
    assert other.compute_uj * 1e6 == pytest.approx(adds * 0.9 + binary * 0.5 + 70 * FLOAT_MAC)
    assert other.memory_uj * 1e6 == pytest.approx(words(hand) * 640.0)


def test_report_carries_the_default_bill(hand):
    r = measure.report(hand, latency=False)
    bill = cost.energy(r)
    assert (r.energy_uj, r.energy_memory_uj, r.energy_compute_uj, r.weights_on_chip) == \
        (bill.energy_uj, bill.memory_uj, bill.compute_uj, bill.on_chip)
    assert {"energy_uj", "energy_memory_uj", "energy_compute_uj", "weights_on_chip"} <= \
        set(r.row())
    assert r.compare(r)["energy_x"] == 1.0


@pytest.fixture(scope="module")
def lenet300_dense_and_compressed():
    from workbench import data
    from workbench.train import quiet
    dense = zoo.pretrained("lenet300")
    method = METHODS["pipeline.deep_compression"](**METHODS["pipeline.deep_compression"].smoke)
    with quiet():
        small = method.apply(dense, data.mnist("train").subset(512, seed=0))
    return dense, small


def test_dense_lenet300_in_dram_its_deep_compression_file_in_sram(lenet300_dense_and_compressed):
    dense, small = lenet300_dense_and_compressed
    big, little = cost.energy(dense), cost.energy(small)
    # Han et al.'s point: the dense fp32 file (about 1 MB) misses the 128 KB on-chip memory,
    # the Deep Compression file fits, and every 32-bit word read costs 5 pJ instead of 640 pJ
    assert not big.on_chip and big.memory_uj * 1e6 == pytest.approx(words(dense) * 640.0)
    assert little.on_chip and little.memory_uj * 1e6 == pytest.approx(words(small) * 5.0)
    assert big.compute_uj * 1e6 == pytest.approx(266_200 * FLOAT_MAC)   # stored dense
    nonzero_macs = measure.report(small, latency=False).effective_macs
    assert little.float_macs == nonzero_macs < 266_200                  # stored sparse
    assert little.energy_uj < big.energy_uj / 100
    # the switch is at the stated size, byte for byte
    size = len(codec.encode(small))
    assert cost.energy(small, sram_bytes=size).on_chip
    assert not cost.energy(small, sram_bytes=size - 1).on_chip


def test_int8_network_charged_at_int8_rates(mnist_train_small):
    base = zoo.pretrained("lenet300")
    q = METHODS["quant.int8"](calibration=64).apply(base, mnist_train_small)
    bill = cost.energy(q)
    assert (bill.int8_macs, bill.float_macs) == (266_200, 0)
    assert bill.compute_uj * 1e6 == pytest.approx(266_200 * INT8_MAC)
    assert bill.compute_uj < cost.energy(base).compute_uj / 19
    # the file keeps 8-bit weights but not the activation ranges: decoded, it is float
    assert cost.energy(codec.decode(codec.encode(q))).int8_macs == 0


def test_binary_network_counted_as_binary(mnist_train_small):
    from workbench.train import quiet
    with quiet():
        net = METHODS["binary.xnor"](epochs=1).apply(untrained("lenet300"), mnist_train_small)
    r = measure.report(net, mnist_train_small.subset(64), latency=False)
    bill = cost.energy(r)
    assert bill.binary_ops == r.binary_ops > 0 and bill.add_ops == r.add_ops
    by_hand = (bill.binary_ops * 0.03 / 8 + bill.add_ops * 0.9
               + bill.float_macs * FLOAT_MAC)
    assert bill.compute_uj * 1e6 == pytest.approx(by_hand, rel=1e-12)
    assert bill.compute_uj < cost.energy(zoo.pretrained("lenet300")).compute_uj


def test_pruning_lowers_compute_energy_monotonically():
    base = zoo.pretrained("lenet300")
    nets = [Magnitude(sparsity=s).apply(base) for s in (0.5, 0.8, 0.95)]
    skipped = [cost.energy(n).compute_uj for n in nets]
    assert cost.energy(base).compute_uj > skipped[0] > skipped[1] > skipped[2]
    for n, uj in zip(nets, skipped):
        assert uj * 1e6 == pytest.approx(measure.report(n, latency=False).effective_macs
                                         * FLOAT_MAC)
    multiplied = {cost.energy(n, zeros="multiplied").compute_uj for n in nets}
    assert multiplied == {cost.energy(base).compute_uj}       # zeros multiplied: no change


@pytest.mark.parametrize("knobs, message", [
    ({"sram_bytes": -1}, r"Energy\.sram_bytes=-1: allowed is a whole number"),
    ({"sram_bytes": 1.5}, r"Energy\.sram_bytes=1\.5: allowed is"),
    ({"zeros": "dropped"}, r"Energy\.zeros='dropped': allowed is"),
    ({"binary_op_pj": float("nan")}, r"Energy\.binary_op_pj=nan: allowed is"),
    ({"binary_op_pj": -0.1}, r"Energy\.binary_op_pj=-0\.1: allowed is"),
])
def test_invalid_knobs_say_what_is_allowed(knobs, message):
    with pytest.raises(ValueError, match=message):
        cost.Energy(**knobs)


def test_invalid_subjects_say_what_is_allowed(hand):
    with pytest.raises(ValueError, match="allowed is a measure.Report or an nn.Module"):
        cost.energy("lenet300")
    saved = measure.report(hand, latency=False)
    saved.layers = []                                 # a report rebuilt from cached fields
    with pytest.raises(ValueError, match="no per-layer table"):
        cost.energy(saved)
