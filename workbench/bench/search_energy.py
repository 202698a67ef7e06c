"""``python -m workbench bench search``: the energy table of issue 14 (``cost.energy``).

Target (issue 14): the energy per inference of every trained zoo network and of the compressed
LeNets, with Han et al.'s claim beside it: a network whose file fits in on-chip SRAM saves the
640 pJ DRAM reads (5 pJ per 32-bit word instead, Han et al. 2015, Figure 1).

Rows: each trained zoo checkpoint as shipped (dense fp32 file); for LeNet-300-100 and LeNet-5,
``quant.int8`` (int8 arithmetic, an 8-bit file) and the stages of Deep Compression
(``reproduce.run_stages``: pruned, + trained k-means, + Huffman; at the smoke settings on 512
training images in smoke mode, at ``reproduce.SETTINGS`` on the full training set otherwise).
Each compressed row holds the dense network's memory energy and whether its file fits, beside
its own; ``met`` (full mode, Deep Compression's last stage) says whether the compressed file
fits in the on-chip SRAM while the dense one does not, and its energy is below the dense one's.
The energy model and its assumptions are ``workbench.cost``'s (defaults: 128 KB of SRAM).
"""
from __future__ import annotations

CLAIM = ("Han et al. 2015 (Fig. 1, from Horowitz 2014): a 32-bit DRAM read costs 640 pJ, an "
         "SRAM read 5 pJ, so a network that fits on chip saves 128x per weight word read; "
         "Deep Compression (Han et al. 2016) makes LeNet-300-100 / LeNet-5 fit")
LENETS = ("lenet300", "lenet5")


def _energy_row(network: str, variant: str, model, test=None) -> dict:
    from .. import cost, measure
    from ..train import evaluate
    r = measure.report(model, latency=False)
    bill = cost.energy(r)
    return {"bench": "energy", "network": network, "variant": variant, "bytes": r.bytes,
            "memory": bill.memory, "on_chip": bill.on_chip,
            "energy_uj": round(bill.energy_uj, 4), "memory_uj": round(bill.memory_uj, 4),
            "compute_uj": round(bill.compute_uj, 4),
            "memory_share": round(bill.memory_uj / bill.energy_uj, 4),
            "float_macs": bill.float_macs, "int8_macs": bill.int8_macs,
            "binary_ops": bill.binary_ops, "add_ops": bill.add_ops, "macs": r.macs,
            "err_pct": None if test is None else round(100 * (1 - evaluate(model, test)), 2)}


def zoo_rows(test_for) -> list[dict]:
    from .. import zoo
    rows = []
    for name in zoo.trained():
        row = _energy_row(name, "zoo (dense fp32)", zoo.pretrained(name), test_for(name))
        rows.append({**row, "target": "-", "paper": "-", "met": None})
    return rows


def compressed_rows(name: str, dense: dict, train, test, smoke: bool) -> list[dict]:
    from .. import METHODS, zoo
    from ..reproduce import PAPER, run_stages
    from ..train import quiet
    int8 = METHODS["quant.int8"](**(METHODS["quant.int8"].smoke if smoke else {}))
    with quiet():
        quantized = int8.apply(zoo.pretrained(name), train)
    stages, seconds = run_stages(name, smoke, train)
    paper = PAPER[name]
    out = [("quant.int8", quantized)] + [(f"deep compression: {stage}", net)
                                        for stage, net in stages[1:]]
    rows = []
    for i, (variant, model) in enumerate(out):
        row = _energy_row(name, variant, model, test)
        last = i == len(out) - 1
        beside = {"dense_bytes": dense["bytes"], "dense_on_chip": dense["on_chip"],
                  "dense_memory_uj": dense["memory_uj"], "dense_energy_uj": dense["energy_uj"],
                  "memory_x": round(dense["memory_uj"] / row["memory_uj"], 1),
                  "energy_x": round(dense["energy_uj"] / row["energy_uj"], 1)}
        if last:
            meets = row["on_chip"] and not dense["on_chip"] \
                and row["energy_uj"] < dense["energy_uj"]
            rows.append({**row, **beside, "pipeline_s": round(seconds, 1),
                         "target": "the compressed file fits in on-chip SRAM (the dense one "
                                   "does not) and its energy is below the dense network's",
                         "paper": f"{CLAIM}: {paper['kb'][0]} KB -> {paper['kb'][1]} KB "
                                  f"(Han et al. 2016, tables 2-3)",
                         "met": None if smoke else meets})
        else:
            rows.append({**row, **beside, "target": "-", "paper": "-", "met": None})
    return rows


def rows(smoke: bool = False) -> list[dict]:
    from .. import cost, data, zoo
    tests = {}

    def test_for(name):
        dataset = zoo.dataset_of(name)
        if dataset not in tests:
            test = data.load(dataset, "test")
            tests[dataset] = test.subset(500, seed=0) if smoke else test
        return tests[dataset]

    out = zoo_rows(test_for)
    train = data.mnist("train")
    if smoke:   # seconds: Deep Compression's smoke settings on 512 images (figures indicative)
        train = train.subset(512, seed=0)
    dense = {row["network"]: row for row in out}
    for name in LENETS:
        if name in dense:
            out += compressed_rows(name, dense[name], train, test_for(name), smoke)
    columns = list(dict.fromkeys(key for row in out for key in row))   # one table
    return [{**{key: row.get(key) for key in columns}, "setting": "smoke" if smoke else "full",
             "sram_bytes": cost.SRAM_BYTES} for row in out]
