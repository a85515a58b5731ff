"""Zone ids and the exact cell sets of every zone and variant (docs/masking.md §3)."""
import subprocess
import sys

import pytest
import torch

from mrcbench.errors import MrcbenchError
from mrcbench.masking.plan import blanked_cells
from mrcbench.masking.recorders import stat_zone_onehot
from mrcbench.zones import (
    ALL_ZONE_OPTIONS,
    PAD,
    PASSAGE,
    QUESTION,
    SPECIAL,
    unmasks_padding,
    zone_ids_from_sequence_ids,
)

# [CLS] q1 q2 [SEP] p1 p2 p3 [SEP] PAD PAD, as a tokenizer reports it
SEQUENCE_IDS = [None, 0, 0, None, 1, 1, 1, None, None, None]
ATTENTION_MASK = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
EXAMPLE = torch.tensor([zone_ids_from_sequence_ids(SEQUENCE_IDS, ATTENTION_MASK)])


def parse_grid(drawing: str) -> torch.Tensor:
    """Literal X-grid (one line per query row, one symbol per key column) -> bool [T, T]."""
    rows = [line.split()[1:] for line in drawing.strip().splitlines()]
    return torch.tensor([[symbol == "X" for symbol in row] for row in rows])


# The drawings of docs/masking.md §3.1 (code's actual blanking), extended by the two PAD rows/columns.
PAPER = {
    "q2q": """
        CLS  .  .  .  .  .  .  .  .  .  .
        q1   .  X  X  .  .  .  .  .  .  .
        q2   .  X  X  .  .  .  .  .  .  .
        SEP  .  .  .  .  .  .  .  .  .  .
        p1   .  .  .  .  .  .  .  .  .  .
        p2   .  .  .  .  .  .  .  .  .  .
        p3   .  .  .  .  .  .  .  .  .  .
        SEP  .  .  .  .  .  .  .  .  .  .
        PAD  .  .  .  .  .  .  .  .  .  .
        PAD  .  .  .  .  .  .  .  .  .  .
    """,
    "q2p": """
        CLS  .  .  .  .  X  X  X  .  .  .
        q1   .  .  .  .  X  X  X  .  .  .
        q2   .  .  .  .  X  X  X  .  .  .
        SEP  .  .  .  .  X  X  X  .  .  .
        p1   .  .  .  .  .  .  .  .  .  .
        p2   .  .  .  .  .  .  .  .  .  .
        p3   .  .  .  .  .  .  .  .  .  .
        SEP  .  .  .  .  X  X  X  .  .  .
        PAD  .  .  .  .  X  X  X  .  .  .
        PAD  .  .  .  .  X  X  X  .  .  .
    """,
    "p2q": """
        CLS  .  X  X  .  .  .  .  .  .  .
        q1   .  .  .  .  .  .  .  .  .  .
        q2   .  .  .  .  .  .  .  .  .  .
        SEP  .  X  X  .  .  .  .  .  .  .
        p1   .  X  X  .  .  .  .  .  .  .
        p2   .  X  X  .  .  .  .  .  .  .
        p3   .  X  X  .  .  .  .  .  .  .
        SEP  .  X  X  .  .  .  .  .  .  .
        PAD  .  X  X  .  .  .  .  .  .  .
        PAD  .  X  X  .  .  .  .  .  .  .
    """,
    "p2p": """
        CLS  .  .  .  .  .  .  .  .  .  .
        q1   .  .  .  .  .  .  .  .  .  .
        q2   .  .  .  .  .  .  .  .  .  .
        SEP  .  .  .  .  .  .  .  .  .  .
        p1   .  .  .  .  X  X  X  .  .  .
        p2   .  .  .  .  X  X  X  .  .  .
        p3   .  .  .  .  X  X  X  .  .  .
        SEP  .  .  .  .  .  .  .  .  .  .
        PAD  .  .  .  .  .  .  .  .  .  .
        PAD  .  .  .  .  .  .  .  .  .  .
    """,
}

CLEAN_CROSS = {
    "q2p": """
        CLS  .  .  .  .  .  .  .  .  .  .
        q1   .  .  .  .  X  X  X  .  .  .
        q2   .  .  .  .  X  X  X  .  .  .
        SEP  .  .  .  .  .  .  .  .  .  .
        p1   .  .  .  .  .  .  .  .  .  .
        p2   .  .  .  .  .  .  .  .  .  .
        p3   .  .  .  .  .  .  .  .  .  .
        SEP  .  .  .  .  .  .  .  .  .  .
        PAD  .  .  .  .  .  .  .  .  .  .
        PAD  .  .  .  .  .  .  .  .  .  .
    """,
    "p2q": """
        CLS  .  .  .  .  .  .  .  .  .  .
        q1   .  .  .  .  .  .  .  .  .  .
        q2   .  .  .  .  .  .  .  .  .  .
        SEP  .  .  .  .  .  .  .  .  .  .
        p1   .  X  X  .  .  .  .  .  .  .
        p2   .  X  X  .  .  .  .  .  .  .
        p3   .  X  X  .  .  .  .  .  .  .
        SEP  .  .  .  .  .  .  .  .  .  .
        PAD  .  .  .  .  .  .  .  .  .  .
        PAD  .  .  .  .  .  .  .  .  .  .
    """,
}

ALL_UNION = """
    CLS  .  .  .  .  .  .  .  .  .  .
    q1   .  X  X  .  X  X  X  .  .  .
    q2   .  X  X  .  X  X  X  .  .  .
    SEP  .  .  .  .  .  .  .  .  .  .
    p1   .  X  X  .  X  X  X  .  .  .
    p2   .  X  X  .  X  X  X  .  .  .
    p3   .  X  X  .  X  X  X  .  .  .
    SEP  .  .  .  .  .  .  .  .  .  .
    PAD  .  .  .  .  .  .  .  .  .  .
    PAD  .  .  .  .  .  .  .  .  .  .
"""


def test_zone_ids_from_sequence_ids():
    assert EXAMPLE[0].tolist() == [SPECIAL, QUESTION, QUESTION, SPECIAL, PASSAGE, PASSAGE, PASSAGE, SPECIAL, PAD, PAD]


@pytest.mark.parametrize(
    ("sequence_ids", "mask", "message"),
    [
        ([None, 0], [1], "has 2 tokens"),
        ([None, 0, 1], [1, 1, 0], "masked as padding"),
        ([None, 2], [1, 1], "sequence id 2"),
        ([None, 0], [1, 3], "not 0 or 1"),
    ],
)
def test_zone_ids_reject_inconsistent_input(sequence_ids, mask, message):
    with pytest.raises(MrcbenchError, match=message):
        zone_ids_from_sequence_ids(sequence_ids, mask)


@pytest.mark.parametrize("zone", ["q2q", "q2p", "p2q", "p2p"])
def test_paper_variant_reproduces_the_authors_cells(zone):
    assert torch.equal(blanked_cells(EXAMPLE, zone, "paper")[0], parse_grid(PAPER[zone]))


@pytest.mark.parametrize("zone", ["q2q", "q2p", "p2q", "p2p"])
def test_clean_variant_restricts_rows_to_the_zone(zone):
    expected = parse_grid(CLEAN_CROSS.get(zone, PAPER[zone]))
    assert torch.equal(blanked_cells(EXAMPLE, zone, "clean")[0], expected)


@pytest.mark.parametrize("variant", ["paper", "clean"])
def test_all_is_the_union_of_the_clean_zones(variant):
    union = torch.zeros(10, 10, dtype=torch.bool)
    for zone in ("q2q", "q2p", "p2q", "p2p"):
        union |= blanked_cells(EXAMPLE, zone, "clean")[0]
    blanked = blanked_cells(EXAMPLE, "all", variant)[0]
    assert torch.equal(blanked, parse_grid(ALL_UNION))
    assert torch.equal(blanked, union)
    assert not unmasks_padding("all")


def test_paper_quirk_blanks_nothing_but_lifts_padding():
    assert not blanked_cells(EXAMPLE, "all_paper_quirk", "paper").any()
    assert unmasks_padding("all_paper_quirk")
    assert not any(unmasks_padding(zone) for zone in ALL_ZONE_OPTIONS if zone != "all_paper_quirk")


def test_special_columns_are_never_blanked():
    special = EXAMPLE[0] == SPECIAL
    for zone in ALL_ZONE_OPTIONS:
        for variant in ("paper", "clean"):
            assert not blanked_cells(EXAMPLE, zone, variant)[0][:, special].any(), (zone, variant)


def test_batch_rows_are_independent():
    other = torch.tensor([[SPECIAL, QUESTION, SPECIAL, PASSAGE, PASSAGE, PASSAGE, PASSAGE, PASSAGE, PASSAGE, SPECIAL]])
    both = blanked_cells(torch.cat([EXAMPLE, other]), "p2q", "paper")
    assert torch.equal(both[0], blanked_cells(EXAMPLE, "p2q", "paper")[0])
    assert torch.equal(both[1], blanked_cells(other, "p2q", "paper")[0])


def test_unknown_zone_and_variant_name_the_allowed_values():
    with pytest.raises(MrcbenchError, match=r"unknown attention zone 'q2x'.*q2q, q2p, p2q, p2p, all, all_paper_quirk"):
        blanked_cells(EXAMPLE, "q2x", "paper")
    with pytest.raises(MrcbenchError, match=r"unknown zone variant 'exact'.*paper, clean"):
        blanked_cells(EXAMPLE, "q2q", "exact")


def test_stat_zone_onehot_orders_question_passage_special():
    onehot = stat_zone_onehot(EXAMPLE)[0]
    assert onehot.sum(0).tolist() == [2.0, 3.0, 3.0]
    assert onehot[8:].sum() == 0  # PAD belongs to no zone


def test_the_schema_enums_are_the_zone_vocabulary():
    """The config schema's zone, variant and operator enums are zones.py's (one vocabulary)."""
    from importlib import resources

    from mrcbench import config as cfg
    from mrcbench import zones

    schema = cfg.schema.read()  # as every validation reads it: the zone names filled in from zones.py
    ablation = schema["properties"]["ablation"]["properties"]
    assert set(ablation["zones"]["items"]["enum"]) == set(zones.ALL_ZONE_OPTIONS)
    assert set(ablation["head_zones"]["items"]["enum"]) == set(zones.ZONES)
    assert set(ablation["variants"]["items"]["enum"]) == set(zones.VARIANTS)
    assert set(ablation["operators"]["items"]["enum"]) == set(zones.OPERATORS)
    # ...and the schema's zone defaults are zones.py's: every zone plus `all` on the layer grid, the
    # paper's four zones per head.
    assert ablation["zones"]["default"] == ["all", *zones.FOUR_ZONES]
    assert ablation["head_zones"]["default"] == list(zones.PAPER_ZONES)
    # The schema file itself names no zone: zones.py is their one home (a rename is a one-file change).
    text = resources.files("mrcbench.config").joinpath("config.schema.json").read_text()
    assert not any(f'"{zone}"' in text for zone in zones.FOUR_ZONES), "a zone name is spelled in the schema file"
    assert cfg.ablation_config(None).zones == ("all", *zones.FOUR_ZONES)
    assert cfg.ablation_config(None).head_zones == zones.PAPER_ZONES


def test_every_zone_has_a_label_and_the_four_zones_their_sides():
    from mrcbench import zones
    from mrcbench.stats import paper_reference

    assert set(zones.ZONE_LABELS) == set(zones.ALL_ZONE_OPTIONS)
    assert tuple(zones.ZONE_SIDES) == zones.FOUR_ZONES
    assert set(zones.ZONES) == {*zones.FOUR_ZONES, "all"}
    assert set(zones.PAPER_COLUMNS.values()) == {"all_paper_quirk", *zones.FOUR_ZONES}
    assert all(side in zones.STAT_ZONES for sides in zones.ZONE_SIDES.values() for side in sides)
    assert paper_reference.PAPER_COLUMN_TO_ZONE == zones.PAPER_COLUMNS


def test_the_zone_vocabulary_and_its_readers_import_no_torch():
    """zones.py is names and checks only: the statistics and the report read it without loading torch
    (the tensor functions of the zones live in mrcbench.masking)."""
    code = (
        "import sys\n"
        "import mrcbench.zones, mrcbench.stats.command, mrcbench.report\n"
        "loaded = sorted(name for name in ('torch', 'transformers') if name in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
