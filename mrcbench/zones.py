"""Attention zones: the zone vocabulary, and which (query row, key column) cells each zone ablation blanks.

Every token of an MRC feature ``[CLS] question [SEP] passage-window [SEP] [PAD]...`` gets a zone id
(``PAD``, ``SPECIAL``, ``QUESTION``, ``PASSAGE``). A zone name ``X2Y`` means *X tokens (rows, queries)
attending to Y tokens (columns, keys)*: ``q2q`` (question self-attention, the paper's Q²), ``q2p``,
``p2q`` and ``p2p`` (passage understanding, P²). The paper finds P2Q and P² to matter most.

Two variants of the four zones exist because the authors' code is asymmetric (docs/masking.md
§3):

``paper``
    Exactly the cells blanked by the released TensorFlow code. ``q2q``/``p2p`` blank the Q×Q / P×P
    block. ``q2p``/``p2q`` blank the P (resp. Q) *columns* for **every row that is not P (resp. not Q)**:
    the question (resp. passage) rows, but also [CLS], both [SEP]s and the PAD rows. Special-token
    columns are never blanked. Example ``[CLS] q1 q2 [SEP] p1 p2 p3 [SEP] PAD PAD`` (X = blanked,
    PAD rows and columns left out of the drawing; PAD columns are removed by the padding mask anyway)::

        q2q          CLS q1 q2 SEP p1 p2 p3 SEP     q2p          CLS q1 q2 SEP p1 p2 p3 SEP
          CLS         .  .  .  .   .  .  .  .         CLS         .  .  .  .   X  X  X  .
          q1,q2       .  X  X  .   .  .  .  .         q1,q2       .  .  .  .   X  X  X  .
          SEP         .  .  .  .   .  .  .  .         SEP         .  .  .  .   X  X  X  .
          p1..p3      .  .  .  .   .  .  .  .         p1..p3      .  .  .  .   .  .  .  .
          SEP(end)    .  .  .  .   .  .  .  .         SEP(end)    .  .  .  .   X  X  X  .
        p2q                                         p2p
          CLS         .  X  X  .   .  .  .  .         CLS         .  .  .  .   .  .  .  .
          q1,q2       .  .  .  .   .  .  .  .         q1,q2       .  .  .  .   .  .  .  .
          SEP         .  X  X  .   .  .  .  .         SEP         .  .  .  .   .  .  .  .
          p1..p3      .  X  X  .   .  .  .  .         p1..p3      .  .  .  .   X  X  X  .
          SEP(end)    .  X  X  .   .  .  .  .         SEP(end)    .  .  .  .   .  .  .  .

    (PAD rows are blanked like the special rows in ``q2p``/``p2q``; they never reach the span head.)

``clean``
    Rows are strictly the zone's own tokens: ``q2p`` blanks question rows × passage columns and
    ``p2q`` passage rows × question columns, so the [CLS]/[SEP] states are untouched. ``q2q`` and
    ``p2p`` are the same as in ``paper``.

Two "ALL" options, independent of the variant:

``all``
    The semantically meaningful union of the four clean zones: every real-token (question or passage)
    row may attend only to the special tokens ([CLS]/[SEP]).
``all_paper_quirk``
    The authors' "all", replicated. It blanks **no** cell; instead, in the masked layer, it *removes the
    padding mask* (the TF code adds −10000 to every cell, which softmax ignores, and replaces the
    padding mask). Real tokens then attend to PAD positions, so the effect is *padding leakage* and its
    size depends on static padding to ``max_seq_length`` (512 in the paper). Replicate it only with
    ``pad_to_max_length`` features; with dynamic padding it measures leakage onto whatever padding the
    batch happens to have. See :func:`unmasks_padding`.

This module is the vocabulary only (names, ids, checks; it imports no torch, so the statistics and the
report read it freely); :func:`mrcbench.masking.plan.blanked_cells` computes the cell sets drawn above.
"""
from __future__ import annotations

from collections.abc import Sequence

from mrcbench.errors import MrcbenchError

PAD = 0
SPECIAL = 1
QUESTION = 2
PASSAGE = 3

ZONES: tuple[str, ...] = ("q2q", "q2p", "p2q", "p2p", "all")
"""The ablation zones; ``all`` is the union of the four clean zones."""
ALL_ZONE_OPTIONS: tuple[str, ...] = ZONES + ("all_paper_quirk",)
"""Every accepted zone name, including the explicitly named replication of the authors' "all"."""
VARIANTS: tuple[str, ...] = ("paper", "clean")

OPERATORS: tuple[str, ...] = ("renorm", "zero", "uniform")
"""How a zone's cells are removed. ``renorm`` (the paper's, the default): blanked before softmax, so the
row renormalises over the kept keys. ``zero``: the zone's probabilities set to 0 after softmax, no
renormalisation (the mass leaves the row). ``uniform``: after softmax each row's total mass on the zone's
(attendable) keys is spread evenly over those keys (the pattern goes, the amount stays)."""

FOUR_ZONES: tuple[str, ...] = ("q2q", "q2p", "p2q", "p2p")
"""The paper's four zones, in its order (query side then key side: question before passage); each has a
size-matched random null (``all`` leaves no key outside its columns to draw one from)."""
NULL_PREFIX = "null_"
ZONE_SIDES: dict[str, tuple[str, str]] = {
    "q2q": ("question", "question"),
    "q2p": ("question", "passage"),
    "p2q": ("passage", "question"),
    "p2p": ("passage", "passage"),
}
"""Each of the four zones as (query row zone, key column zone), the names of :data:`STAT_ZONES`."""
ZONE_LABELS: dict[str, str] = {
    "all_paper_quirk": "ALL*",
    "all": "ALL",
    "q2q": "Q2Q",
    "q2p": "Q2P",
    "p2q": "P2Q",
    "p2p": "P2P",
}
"""How tables and figures name each zone; its key order is the order zones are shown in (our extra
zones first, then the paper's four in its order)."""
ZONE_ORDER: tuple[str, ...] = tuple(ZONE_LABELS)
PAPER_ZONES: tuple[str, ...] = ("p2q", "p2p")
"""The paper's answer: the two zones whose masking matters most (docs/method.md)."""
CONTROL_OPERATOR = "uniform"
"""The mass-keeping control: spreads a zone's mass evenly over its keys, so the amount stays and the pattern
goes. Every grid runs it for :data:`PAPER_ZONES` by default (``ablation.zone_operators``), so the paper's two
zones have a control even where their size-matched null cannot be drawn (P2P's passage rows)."""
DEFAULT_ZONE_OPERATORS: dict[str, tuple[str, ...]] = {CONTROL_OPERATOR: PAPER_ZONES}
"""The schema default of ``ablation.zone_operators`` (filled in by :func:`mrcbench.config.schema`)."""
PAPER_COLUMNS: dict[str, str] = {"ALL*": "all_paper_quirk", "Q2": "q2q", "Q2P": "q2p", "P2Q": "p2q", "P2": "p2p"}
"""The column heads of the paper's result tables and the zone each one is."""

STAT_ZONES: tuple[str, ...] = ("question", "passage", "special")
"""Row/column zone names of the zone statistics, in the order of their array axes."""
STAT_ZONE_IDS: tuple[int, ...] = (QUESTION, PASSAGE, SPECIAL)


def check_zone(zone: str) -> str:
    """Return ``zone`` if it is a known zone name, else raise a one-line :class:`MrcbenchError`."""
    if zone not in ALL_ZONE_OPTIONS:
        raise MrcbenchError(f"unknown attention zone {zone!r}; allowed: {', '.join(ALL_ZONE_OPTIONS)}")
    return zone


def check_operator(operator: str) -> str:
    """Return ``operator`` if it is a known ablation operator, else raise a one-line :class:`MrcbenchError`."""
    if operator not in OPERATORS:
        raise MrcbenchError(f"unknown ablation operator {operator!r}; allowed: {', '.join(OPERATORS)}")
    return operator


def null_zone_name(zone: str) -> str:
    """Grid zone name of ``zone``'s size-matched random null, e.g. ``null_p2q``."""
    if zone not in FOUR_ZONES:
        raise MrcbenchError(f"zone {zone!r} has no size-matched null; allowed: {', '.join(FOUR_ZONES)}")
    return NULL_PREFIX + zone


def null_of(name: str) -> str | None:
    """The zone whose null ``name`` is (``null_p2q`` -> ``p2q``), None if ``name`` is not a null zone name."""
    if name.startswith(NULL_PREFIX) and name[len(NULL_PREFIX):] in FOUR_ZONES:
        return name[len(NULL_PREFIX):]
    return None


def check_variant(variant: str) -> str:
    """Return ``variant`` if it is a known zone variant, else raise a one-line :class:`MrcbenchError`."""
    if variant not in VARIANTS:
        raise MrcbenchError(f"unknown zone variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    return variant


def zone_ids_from_sequence_ids(sequence_ids: Sequence[int | None], attention_mask: Sequence[int]) -> list[int]:
    """Zone id per token from a fast tokenizer's ``sequence_ids()`` and the attention mask.

    Sequence 0 is the question, sequence 1 the passage window; ``None`` marks special tokens when the
    attention mask is 1 and padding when it is 0.
    """
    if len(sequence_ids) != len(attention_mask):
        raise MrcbenchError(
            f"sequence_ids has {len(sequence_ids)} tokens but attention_mask has {len(attention_mask)}"
        )
    zone_ids = []
    for position, (sequence_id, mask) in enumerate(zip(sequence_ids, attention_mask)):
        if mask not in (0, 1):
            raise MrcbenchError(f"attention_mask value {mask!r} at position {position} is not 0 or 1")
        if sequence_id is None:
            zone_ids.append(SPECIAL if mask == 1 else PAD)
        elif mask == 0:
            raise MrcbenchError(f"token {position} belongs to sequence {sequence_id} but is masked as padding")
        elif sequence_id == 0:
            zone_ids.append(QUESTION)
        elif sequence_id == 1:
            zone_ids.append(PASSAGE)
        else:
            raise MrcbenchError(
                f"sequence id {sequence_id!r} at position {position}: expected 0 (question), 1 (passage) or None"
            )
    return zone_ids


def unmasks_padding(zone: str) -> bool:
    """True for the replicated authors' "all" (``all_paper_quirk``), which lifts the padding mask."""
    return check_zone(zone) == "all_paper_quirk"
