"""The cells of the zone × layer (× head) ablation grid.

A :class:`Cell` is one masking condition (zone, layer, head, mode, operator, null draw) and names its
columns of the ``grid.parquet`` table; :func:`grid_cells` lays out a whole grid (the baseline first), and
:func:`configured_cells` the grid of the config's ``ablation`` section (or one layer's part of it).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from mrcbench import config as cfg
from mrcbench.errors import MrcbenchError
from mrcbench.zones import (
    FOUR_ZONES,
    check_operator,
    check_zone,
    null_of,
    null_zone_name,
)

MODES: tuple[str, ...] = ("baseline", "layer", "head", "from_layer")
"""``layer``: one zone in one layer, all heads (the paper grid); ``head``: one zone in one head of one
layer; ``from_layer``: one zone in every layer from ``layer`` upward."""


@dataclass(frozen=True)
class Cell:
    """One cell of the ablation grid. The baseline has ``zone=None, layer=None, mode="baseline"``.

    ``operator`` (:data:`mrcbench.zones.OPERATORS`) says how the zone's cells are removed; the baseline
    carries the default ``renorm``. A size-matched null (:mod:`mrcbench.masking.nulls`) has the zone name
    ``null_<zone>`` and its ``null_draw`` (mode ``layer``, operator ``renorm`` only).
    """

    zone: str | None
    layer: int | None
    head: int | None = None
    mode: str = "layer"
    operator: str = "renorm"
    null_draw: int | None = None

    def __post_init__(self) -> None:
        check_operator(self.operator)
        if self.zone is not None and null_of(self.zone) is not None:
            if self.mode != "layer" or self.operator != "renorm":
                raise MrcbenchError(f"null cell {self.zone}: only mode 'layer' with operator 'renorm' has a null")
            if not isinstance(self.null_draw, int) or self.null_draw < 0:
                raise MrcbenchError(f"null cell {self.zone} needs a draw number >= 0, got {self.null_draw!r}")
            if not isinstance(self.layer, int) or self.layer < 0:
                raise MrcbenchError(f"null cell {self.zone} needs a 0-based layer, got {self.layer!r}")
            return
        if self.null_draw is not None:
            raise MrcbenchError(f"only null cells (null_<zone>) take a draw number, got {self}")
        if self.mode not in MODES:
            raise MrcbenchError(f"unknown ablation mode {self.mode!r}; allowed: {', '.join(MODES)}")
        if self.mode == "baseline":
            if (self.zone, self.layer, self.head, self.operator) != (None, None, None, "renorm"):
                raise MrcbenchError(f"the baseline cell takes no zone, layer, head or operator, got {self}")
            return
        check_zone(self.zone)
        if self.zone == "all_paper_quirk" and self.operator != "renorm":
            raise MrcbenchError(f"all_paper_quirk lifts the padding mask; it has no {self.operator!r} operator")
        if not isinstance(self.layer, int) or self.layer < 0:
            raise MrcbenchError(f"ablation cell {self.zone}/{self.mode} needs a 0-based layer, got {self.layer!r}")
        if (self.mode == "head") != (self.head is not None):
            raise MrcbenchError(f"mode {self.mode!r} {'needs' if self.mode == 'head' else 'takes no'} head index")

    def masked_layers(self, n_layers: int) -> list[int]:
        """The layers this cell masks in a model of ``n_layers`` layers."""
        if self.mode == "baseline":
            return []
        if self.layer >= n_layers:
            raise MrcbenchError(f"ablation cell layer {self.layer} out of range; the model has {n_layers} layers")
        return list(range(self.layer, n_layers)) if self.mode == "from_layer" else [self.layer]

    def columns(self) -> dict[str, object]:
        """This cell's columns of the grid table (layer/head -1 = none/all, zone "none" for the baseline)."""
        return {
            "mode": self.mode,
            "operator": self.operator,
            "layer": -1 if self.layer is None else self.layer,
            "head": -1 if self.head is None else self.head,
            "zone": "none" if self.zone is None else self.zone,
            "null_draw": -1 if self.null_draw is None else self.null_draw,
        }

    @property
    def null_zone(self) -> str | None:
        """The zone this null cell matches (None for every other cell)."""
        return None if self.zone is None else null_of(self.zone)


BASELINE = Cell(zone=None, layer=None, head=None, mode="baseline")


def grid_cells(
    n_layers: int, n_heads: int, zones: Sequence[str], modes: Sequence[str], operators: Sequence[str],
    null_draws: int, zone_operators: Mapping[str, Sequence[str]],
) -> list[Cell]:
    """The baseline followed by every (mode, layer, [head,] operator, zone) cell (``all_paper_quirk``
    only with ``renorm``); in mode ``layer``, per layer, then the cells of ``zone_operators`` (operator ->
    those of the zones in ``zones`` it runs for on top of ``operators``, e.g. ``{"uniform": ["p2q", "p2p"]}``)
    and ``null_draws``
    size-matched nulls of each of the zones that have one (:data:`mrcbench.zones.FOUR_ZONES`)."""
    for zone in zones:
        check_zone(zone)
    for operator in operators:
        check_operator(operator)
    zone_operators = dict(zone_operators or {})
    for operator, named in zone_operators.items():
        check_operator(operator)
        for zone in named:
            check_zone(zone)
    cells = [BASELINE]
    for mode in modes:
        if mode == "baseline":
            continue
        if mode not in MODES:
            raise MrcbenchError(f"unknown ablation mode {mode!r}; allowed: {', '.join(MODES)}")
        for layer in range(n_layers):
            heads = range(n_heads) if mode == "head" else [None]
            cells.extend(
                Cell(zone, layer, head, mode, operator)
                for head in heads
                for operator in operators
                for zone in zones
                if operator == "renorm" or zone != "all_paper_quirk"
            )
            if mode == "layer":
                cells.extend(
                    Cell(zone, layer, None, mode, operator)
                    for operator, named in zone_operators.items()
                    if operator not in operators
                    for zone in named
                    if zone in zones  # an operator's cell is read against the zone's renorm cell
                )
                cells.extend(
                    Cell(null_zone_name(zone), layer, null_draw=draw)
                    for draw in range(null_draws)
                    for zone in zones
                    if zone in FOUR_ZONES
                )
    return cells


def configured_cells(n_layers: int, n_heads: int, ablation_cfg: cfg.Ablation, layer: int | None = None) -> list[Cell]:
    """The configured cells (baseline first); with ``layer``, only that layer's cells (the baseline
    goes with layer 0 so that merged parts hold it once)."""
    cells = [BASELINE] if layer in (None, 0) else []
    for mode in ablation_cfg.modes:
        zones = ablation_cfg.head_zones if mode == "head" else ablation_cfg.zones
        null_draws = ablation_cfg.null_draws if mode == "layer" else 0
        for cell in grid_cells(n_layers, n_heads, list(zones), [mode], list(ablation_cfg.operators), null_draws,
                               ablation_cfg.zone_operators):
            if cell.mode != "baseline" and (layer is None or cell.layer == layer):
                cells.append(cell)
    return cells


def unique_cells(cells: Iterable[Cell]) -> list[Cell]:
    """``cells`` without repeats, in their order; refuses an empty grid."""
    cells = list(dict.fromkeys(cells))
    if not cells:
        raise MrcbenchError("the ablation grid has no cells")
    return cells


def chunked(cells: Sequence[Cell], size: int) -> Iterator[Sequence[Cell]]:
    """``cells`` in consecutive groups of at most ``size``."""
    for start in range(0, len(cells), size):
        yield cells[start : start + size]
