"""The catalogue module agrees with the survey's CATALOGUE.md and with workbench.METHODS."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import workbench
from workbench.catalogue import (CATALOGUE, FAMILIES, LANDED_FAMILIES, Entry, by_id,
                                 family_ids, missing)

# the repository is cloned beside a shared/ folder holding the survey's catalogue
CATALOGUE_MD = Path(__file__).resolve().parents[2] / "shared" / "CATALOGUE.md"

ID = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")
NUMBER = re.compile(r"\d+(?:\.\d+)?")

PREFIX_FAMILY = {
    "prune": "pruning",
    "quant": "quantization",
    "binary": "binary", "ternary": "binary",
    "lowrank": "lowrank", "approx": "lowrank", "hash": "lowrank",
    "distill": "distillation",
    "arch": "architecture",
    "search": "search", "pipeline": "search", "encode": "search", "cost": "search",
}


def parse_catalogue_md(text: str) -> list[dict]:
    """One dict per id: id, section title, the row's cells and the table's header cells.

    A row belongs to the catalogue when it starts with "| " and its first cell holds one or
    more comma-separated ids; section G lists four ids in a single cell.
    """
    rows, section, header = [], None, []
    for line in text.splitlines():
        if line.startswith("## "):
            section, header = line[3:].strip(), []
            continue
        if not line.startswith("| "):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == "id":
            header = cells
            continue
        ids = [part.strip() for part in cells[0].split(",")]
        if all(ID.match(i) for i in ids):
            rows += [{"id": i, "section": section, "cells": cells, "header": header}
                     for i in ids]
    return rows


@pytest.fixture(scope="module")
def md_rows() -> list[dict]:
    if not CATALOGUE_MD.exists():
        pytest.skip(f"{CATALOGUE_MD} not found (shared/ folder not beside the repository)")
    return parse_catalogue_md(CATALOGUE_MD.read_text(encoding="utf-8"))


def test_parser_reads_grouped_ids_and_pipes_inside_cells():
    text = ("## G. Search\n| id | what | seeds |\n|---|---|---|\n"
            "| a.x, a.y | both | 001 |\n| b.z | 0.7 E|w| here | 002 |\n| not an id | x | 003 |\n")
    rows = parse_catalogue_md(text)
    assert [r["id"] for r in rows] == ["a.x", "a.y", "b.z"]
    assert {r["section"] for r in rows} == {"G. Search"}
    assert rows[2]["cells"][-1] == "002"


def test_ids_match_catalogue_md_in_order(md_rows):
    assert len(md_rows) > 50  # the parser really found the tables
    assert [e.id for e in CATALOGUE] == [r["id"] for r in md_rows]


def test_families_and_seeds_match_catalogue_md(md_rows):
    family_of_title = {title: key for key, title in FAMILIES.items()}
    assert {r["section"] for r in md_rows} == set(family_of_title), \
        "FAMILIES titles must be the catalogue's section headings"
    for row in md_rows:
        entry = by_id(row["id"])
        assert entry.family == family_of_title[row["section"]], entry.id
        # seeds are the last cell; this stays true even when a cell contains a stray "|"
        assert entry.seeds == tuple(row["cells"][-1].split()), entry.id


def test_paper_targets_keep_the_published_numbers(md_rows):
    for row in md_rows:
        if "paper target" not in row["header"]:
            continue
        # the target is the cell before the seeds (robust to "|" inside earlier cells)
        target = row["cells"][-2]
        entry = by_id(row["id"])
        assert bool(entry.paper_target) == bool(target), entry.id
        assert NUMBER.findall(entry.paper_target) == NUMBER.findall(target), entry.id


def test_entries_are_complete_and_ids_unique():
    ids = [e.id for e in CATALOGUE]
    assert len(ids) == len(set(ids))
    for e in CATALOGUE:
        assert isinstance(e, Entry)
        assert ID.match(e.id), e.id
        assert e.name and e.reference and e.summary, e.id
        assert e.seeds and all(re.fullmatch(r"\d{3}", s) for s in e.seeds), e.id


def test_family_matches_id_prefix():
    for e in CATALOGUE:
        assert e.family in FAMILIES, e.id
        prefix = e.id.split(".")[0]
        assert PREFIX_FAMILY.get(prefix) == e.family, f"{e.id} is filed under {e.family}"


def test_family_ids_partition_the_catalogue():
    assert LANDED_FAMILIES <= set(FAMILIES)
    all_ids = [i for family in FAMILIES for i in family_ids(family)]
    assert sorted(all_ids) == sorted(e.id for e in CATALOGUE)
    assert all(family_ids(family) for family in FAMILIES)  # no empty family
    assert "prune.magnitude" in family_ids("pruning")


def test_methods_are_catalogue_ids():
    ids = {e.id for e in CATALOGUE}
    assert workbench.METHODS, "METHODS should hold at least one implemented method"
    for key, cls in workbench.METHODS.items():
        assert key in ids, f"METHODS key {key!r} is not a catalogue id"
        assert cls.id == key, f"{cls.__name__}.id is {cls.id!r}, registered as {key!r}"


def unimplemented_in_landed(methods, landed) -> dict[str, list[str]]:
    """For each landed family, its ids that are not keys of ``methods`` (only non-empty)."""
    gaps = {family: [i for i in family_ids(family) if i not in methods] for family in landed}
    return {family: ids for family, ids in gaps.items() if ids}


def test_landed_families_are_fully_implemented():
    assert unimplemented_in_landed(workbench.IMPLEMENTED, LANDED_FAMILIES) == {}


def test_accounts_are_catalogue_ids_that_are_not_methods():
    ids = {e.id for e in CATALOGUE}
    assert set(workbench.ACCOUNTS) == {"cost.energy"} and set(workbench.ACCOUNTS) <= ids
    assert not set(workbench.ACCOUNTS) & set(workbench.METHODS)
    assert all(cls.id == key for key, cls in workbench.ACCOUNTS.items())


def test_landed_check_catches_a_gap():
    # the check above must fail for a family that is declared landed but is incomplete
    partial = {k: v for k, v in workbench.METHODS.items() if k != "prune.obs"}
    gaps = unimplemented_in_landed(partial, {"pruning"})
    assert gaps["pruning"] == ["prune.obs"]
    everything = {e.id: None for e in CATALOGUE}
    assert unimplemented_in_landed(everything, set(FAMILIES)) == {}


def test_missing_lists_unimplemented_entries():
    gaps = missing(workbench.IMPLEMENTED)
    gap_ids = [e.id for e in gaps]
    assert not set(gap_ids) & set(workbench.IMPLEMENTED)
    # independent of which families have landed: an id is missing exactly when not given
    assert "binary.connect" in [e.id for e in missing({})]
    assert "binary.connect" not in [e.id for e in missing({"binary.connect": object})]
    assert len(gaps) == len(CATALOGUE) - len(workbench.IMPLEMENTED)
    assert gap_ids == [e.id for e in CATALOGUE if e.id in gap_ids]  # catalogue order
    assert [e.id for e in missing({})] == [e.id for e in CATALOGUE]


def test_by_id():
    assert by_id("prune.magnitude").family == "pruning"
    with pytest.raises(KeyError, match="unknown catalogue id 'nope.x'"):
        by_id("nope.x")
