"""The papers' published figures as data (workbench.papers) and "ours | paper" in the survey."""
from __future__ import annotations

import json
import re

import pytest

from workbench import catalogue, papers, survey, survey_report, zoo
from workbench.papers import FACTS, NOT_COMPARABLE, Result


def _numbers(text: str) -> list[float]:
    # "1/8" is a compression factor of 8, as the facts store it
    return [float(n) for n in re.findall(r"\d+(?:\.\d+)?", re.sub(r"\b1/(\d+)", r"\1", text))]


def _with_digits():
    return [e for e in catalogue.CATALOGUE if re.search(r"\d", e.paper_target)]


def test_every_fact_is_keyed_by_a_catalogue_id_and_no_entry_is_both_kinds():
    ids = {e.id for e in catalogue.CATALOGUE}
    assert set(FACTS) <= ids and set(NOT_COMPARABLE) <= ids
    assert not set(FACTS) & set(NOT_COMPARABLE)
    assert all(FACTS[k] for k in FACTS)


def test_every_paper_target_with_a_number_has_a_fact_or_says_why_not():
    missing = [e.id for e in _with_digits() if e.id not in FACTS and e.id not in NOT_COMPARABLE]
    assert missing == []
    # and a fact is never attached to an entry whose catalogue text has no figure at all
    assert {i for i in FACTS if not catalogue.by_id(i).paper_target} == set()


@pytest.mark.parametrize("entry", _with_digits(), ids=lambda e: e.id)
def test_the_catalogue_text_and_the_facts_state_the_same_numbers(entry):
    """Every number of the catalogue's text is a fact's figure (or part of its network's,
    dataset's or label's name), so the two cannot drift apart; a fact not checked at its
    source may hold no number that the catalogue does not state."""
    text = set(_numbers(entry.paper_target))
    if entry.id in NOT_COMPARABLE:
        assert text <= set(_numbers(NOT_COMPARABLE[entry.id]))
        return
    figures = {n for f in FACTS[entry.id] for n in f.numbers()}
    names = {n for f in FACTS[entry.id] for n in _numbers(f"{f.network} {f.dataset} {f.label}")}
    assert text - figures - names == set(), entry.paper_target
    for fact in FACTS[entry.id]:
        if not fact.checked:
            assert set(fact.numbers()) <= text, (fact, entry.paper_target)


def test_a_zoo_name_is_given_only_for_a_zoo_network():
    named = {f.zoo for facts in FACTS.values() for f in facts} - {None}
    assert named <= set(zoo.RECIPES)


def test_percent_removed_and_bad_fields_are_refused_with_what_is_allowed():
    assert papers.removed_to_ratio(85) == 6.7 and papers.removed_to_ratio(90) == 10.0
    with pytest.raises(ValueError, match=r"Result.metric='err': allowed is one of"):
        Result("n", "d", "s", False, "err", 1.0)
    with pytest.raises(ValueError, match=r"Result.ratio_of='params': allowed is one of"):
        Result("n", "d", "s", False, ratio=2, ratio_of="params")
    with pytest.raises(ValueError, match=r"Result.ratio=2, ratio_of=None: allowed is both"):
        Result("n", "d", "s", False, ratio=2)
    with pytest.raises(ValueError, match=r"Result.ratio=5: allowed is 6.7 for removed_pct=85"):
        Result("n", "d", "s", False, ratio=5, ratio_of="weights", removed_pct=85)


def _row(method, model, accuracy, base=0.99, **ratios):
    return {"method": method, "model": model, "accuracy": accuracy, "base_accuracy": base,
            "nonzeros_x": None, "bytes_x": None, "effective_macs_x": None,
            "latency_vs_base": {}, "bits_per_weight": None, **ratios}


def test_same_network_reads_ours_and_the_papers_in_the_same_form():
    row = _row("prune.iterative", "lenet300", 0.9839, nonzeros_x=12.43)
    assert papers.compare(row) == ("ours: 12.4x fewer weights at 1.61% error | "
                                   "paper: 12x fewer weights at 1.59% error")
    # on LeNet-5 the paper's LeNet-5 figure is picked, not its first one
    row = _row("pipeline.deep_compression", "lenet5", 0.9921, bytes_x=35.04)
    assert papers.compare(row) == ("ours: 35.0x smaller at 0.79% error | "
                                   "paper: 39x smaller at 0.74% error")


def test_another_network_is_said_plainly_and_ours_is_in_the_papers_units():
    timed = {"b64": {"significant": True, "speedup": 2.349}}
    row = _row("lowrank.cp", "vgg_small", 0.9012, base=0.9105, latency_vs_base=timed)
    assert papers.compare(row) == (
        "ours: 2.3x faster with 0.93 points of accuracy lost | paper, on a different network "
        "(a 36-class character CNN, characters): 8.5x faster (whole network, CPU) with 1 point "
        "of accuracy lost")
    untimed = papers.compare(_row("lowrank.cp", "vgg_small", 0.9105, base=0.9105))
    assert untimed.startswith("ours: speed not timed with 0.00 points of accuracy lost |")
    same = {"b64": {"significant": False, "speedup": 1.01}}
    assert papers.compare(_row("lowrank.svd", "vgg_small", 0.9, latency_vs_base=same)) \
        .startswith("ours: no measurable speed-up")
    row = _row("prune.merge", "lenet300", 0.978, base=0.983, nonzeros_x=1.52)
    assert papers.compare(row) == (
        "ours: 1.5x fewer weights with 0.50 points of accuracy lost | paper, on a different "
        "network (an MNIST network, its dense layers pruned, MNIST): up to 6.7x fewer weights "
        "(85% removed), without significantly affecting performance")


def test_no_published_figure_and_a_figure_that_is_not_a_result_say_so():
    assert papers.compare(_row("prune.magnitude", "lenet300", 0.95, nonzeros_x=10.0)) == \
        "ours: 10.0x fewer weights at 5.00% error | paper: no published figure"
    obs = papers.compare(_row("prune.obs", "lenet300", 0.95, nonzeros_x=10.0))
    assert obs.endswith("paper: no published figure (beats OBD and magnitude without "
                        "retraining)")
    lbc = papers.compare(_row("binary.lbc", "lenet5", 0.98, nonzeros_x=1.0))
    assert lbc.endswith("paper: " + NOT_COMPARABLE["binary.lbc"])


def test_the_markdown_table_keeps_its_columns_with_the_pipe_inside_a_cell():
    row = {**_row("prune.iterative", "lenet300", 0.9839, nonzeros_x=12.43),
           "latency_b64": None, "settings": {}}
    text = survey_report.markdown([], [("A. Pruning", "text", [row])], [], {})
    table = [line for line in text.splitlines() if line.startswith("|")]
    columns = [len(re.findall(r"(?<!\\)\|", line)) for line in table]
    assert len(set(columns)) == 1 and "12x fewer weights at 1.59% error" in table[-1]
    html = survey_report.page([], [("A. Pruning", "text", [row])], [], {})
    assert "ours | paper" in html and "\\|" not in html


def test_a_survey_row_on_a_zoo_model_carries_the_facts_and_reads_its_own_figures(lenet300_bases):
    bases = lenet300_bases        # conftest: skips without the checkpoint
    [row], _ = survey.method_rows(bases, smoke=True, ids=["prune.magnitude"], test_images=200,
                                  latency=False)
    assert row["paper"] == {"facts": [], "not_comparable": None}
    json.dumps(row)
    shown = survey_report.method_display(row)["ours | paper"]
    assert shown == (f"ours: {row['nonzeros_x']:.1f}x fewer weights at "
                     f"{100 * (1 - row['accuracy']):.2f}% error | paper: no published figure")
    # the same measured row, read against Han et al.'s LeNet-300-100 figure
    as_iterative = papers.compare({**row, "method": "prune.iterative"})
    assert as_iterative.endswith("| paper: 12x fewer weights at 1.59% error")
    assert papers.as_dict("prune.iterative")["facts"][0]["zoo"] == "lenet300"


def test_byte_points_are_the_papers_results_on_our_own_network_in_bytes():
    dc300 = papers.byte_points("lenet300", 1_000_000)
    assert [(p["bytes"], p["accuracy"]) for p in dc300] == [(1_000_000 / 40, 1 - 0.0158)]
    assert "pipeline.deep_compression" in dc300[0]["label"]
    # TTQ's ResNet-20 is in the zoo: its "nearly 16x" at 8.87% error is a point there
    assert [(p["bytes"], round(p["accuracy"], 4)) for p in
            papers.byte_points("resnet20", 1_600_000)] == [(100_000, 0.9113)]
    # TWN's LeNet-5 has its own layer widths (zoo None): not a point on our LeNet-5
    assert all("twn" not in p["label"] for p in papers.byte_points("lenet5", 1_000_000))
    assert papers.byte_points("vgg_small", 1_000_000) == []


def test_a_lossless_encoding_is_compared_with_the_file_of_its_input():
    row = {**_row("encode.huffman", "lenet300", 0.98, nonzeros_x=12.0), "bytes_x": 45.4,
           "input": ["prune.iterative", "quant.kmeans"], "input_bytes": 30_601,
           "bytes_x_vs_input": 1.302}
    assert papers.compare(row).startswith(
        "ours: 45.4x smaller than the dense file, 1.30x smaller than its input's own file "
        "(prune.iterative then quant.kmeans, 30,601 bytes) | paper: no published figure")


def test_the_lessons_quotes_are_for_catalogue_ids_and_name_their_source():
    ids = {entry.id for entry in catalogue.CATALOGUE}
    assert set(papers.QUOTED) <= ids
    for method_id, (words, source) in papers.QUOTED.items():
        assert words.strip() and source.strip(), method_id
        assert re.search(r"\d", words), f"{method_id}: a quote without a figure"
    # what a lesson's "paper vs ours" table shows for an id the catalogue gives no figure for
    from workbench.lessons import paper_rows
    [row] = paper_rows(["prune.winograd"], papers.QUOTED, {"prune.winograd": "ours"})
    assert row["paper"].startswith("CIFAR-10: 10.4x") and row["source"].startswith("Liu et al.")
