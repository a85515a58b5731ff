"""The report's "Case studies" section: token-level attention maps with a layer/head chooser.

Reads the maps ``mrcbench extract-attention`` stores (``case_studies.npz`` + ``case_studies.json``,
written by :mod:`mrcbench.grid.extraction`); no statistics table is involved.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrcbench.report.blocks import ZONE_COLORS, figure_caption, zone_label
from mrcbench.runtime import layout
from mrcbench.zones import FOUR_ZONES

# ==================================================================================================
# Case studies: token-level attention maps with a layer/head chooser
# ==================================================================================================

ZONE_ID_NAMES = {0: "pad", 1: "special", 2: "question", 3: "passage"}


@dataclass
class CaseStudy:
    """One question's attention maps [layers, heads, T, T] with its tokens and zone ids."""

    qid: str
    language: str
    question: str
    tokens: list[str]
    zone_ids: list[int]
    answer_span: tuple[int, int] | None
    maps: np.ndarray
    source: str


def _answer_span(case: dict[str, Any]) -> tuple[int, int] | None:
    for key in ("answer_tokens", "answer_token_span", "answer_span"):
        value = case.get(key)
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
            return int(value[0]), int(value[1])
    return None


def load_case_studies(results_dir: Path, per_language: int = 1, limit: int = 4) -> list[CaseStudy]:
    """Case studies from ``attention/**/case_studies.{npz,json}``: ``per_language`` per language.

    The json (written by ``mrcbench.grid.extraction``) is a list of cases (``{"cases": [...]}`` is accepted
    too) with ``qid``, ``question``, ``tokens``, ``zone_ids``, ``answer_tokens`` [start, end] (inclusive
    token indices of the gold answer) and ``language``; the npz holds ``maps`` [cases, layers, heads, T,
    T] (padded to the longest case).
    """
    found: list[CaseStudy] = []
    counts: dict[str, int] = {}
    for json_path in sorted(Path(results_dir).glob(layout.glob("attention", "case_studies.json"))):
        npz_path = json_path.with_suffix(".npz")
        if not npz_path.is_file():
            continue
        payload = json.loads(json_path.read_text(encoding="utf-8"))
        cases = payload.get("cases", []) if isinstance(payload, dict) else payload
        with np.load(npz_path) as archive:
            maps = archive["maps"]
        for index, case in enumerate(cases):
            language = str(case.get("language", "")) or "?"
            if counts.get(language, 0) >= per_language or len(found) >= limit or index >= len(maps):
                continue
            length = len(case["tokens"])
            found.append(
                CaseStudy(
                    qid=str(case.get("qid", index)),
                    language=language,
                    question=str(case.get("question", "")),
                    tokens=[str(t) for t in case["tokens"]],
                    zone_ids=[int(z) for z in case["zone_ids"]],
                    answer_span=_answer_span(case),
                    maps=np.asarray(maps[index][:, :, :length, :length], dtype=np.float32),
                    source=str(json_path.parent.relative_to(results_dir)),
                )
            )
            counts[language] = counts.get(language, 0) + 1
    return found


def crop_tokens(zone_ids: list[int], answer_span: tuple[int, int] | None, max_tokens: int) -> list[int]:
    """Token positions to show: all specials and question tokens, and a passage window around the answer."""
    positions = list(range(len(zone_ids)))
    if len(positions) <= max_tokens:
        return positions
    fixed = [i for i in positions if zone_ids[i] in (1, 2)]
    passage = [i for i in positions if zone_ids[i] == 3]
    budget = max(0, max_tokens - len(fixed))
    centre = (answer_span[0] + answer_span[1]) // 2 if answer_span else (passage[0] if passage else 0)
    if passage:
        index = min(range(len(passage)), key=lambda k: abs(passage[k] - centre))
        start = max(0, min(index - budget // 2, len(passage) - budget))
        passage = passage[start : start + budget]
    return sorted(fixed + passage)


def _zone_blocks(zone_ids: list[int]) -> dict[str, tuple[int, int, int, int]]:
    """(row start, row end, col start, col end) of the four zones in displayed positions."""
    question = [i for i, z in enumerate(zone_ids) if z == 2]
    passage = [i for i, z in enumerate(zone_ids) if z == 3]
    blocks = {}
    spans = {
        "q": (min(question), max(question)) if question else None,
        "p": (min(passage), max(passage)) if passage else None,
    }
    for zone in FOUR_ZONES:
        rows, cols = spans[zone[0]], spans[zone[2]]
        if rows and cols:
            blocks[zone] = (rows[0], rows[1], cols[0], cols[1])
    return blocks


def case_study_html(case: CaseStudy, element_id: str, max_tokens: int = 80) -> str:
    """An interactive attention map: layer and head selectors, the four zones outlined.

    The maps travel as base64 uint8 (probability x 255) and are decoded in the browser; a plotly
    heatmap per (layer, head) would multiply the file size by ~10. "mean" is the head average.
    """
    keep = crop_tokens(case.zone_ids, case.answer_span, max_tokens)
    maps = case.maps[:, :, keep][:, :, :, keep]
    mean = maps.mean(axis=1, keepdims=True)
    stacked = np.concatenate([mean, maps], axis=1)  # [layers, heads + 1, T, T]
    quantised = np.clip(np.rint(stacked * 255.0), 0, 255).astype(np.uint8)
    zone_ids = [case.zone_ids[i] for i in keep]
    tokens = [case.tokens[i] for i in keep]
    answer = set(range(case.answer_span[0], case.answer_span[1] + 1)) if case.answer_span else set()
    labels = [
        f"<b>{html.escape(tok)}</b>" if pos in answer else html.escape(tok)
        for tok, pos in zip(tokens, keep, strict=True)
    ]
    blocks = _zone_blocks(zone_ids)
    payload = {
        "id": element_id,
        "layers": int(maps.shape[0]),
        "heads": int(maps.shape[1]),
        "size": len(keep),
        "data": base64.b64encode(quantised.tobytes()).decode("ascii"),
        "labels": labels,
        "zones": {zone_label(z): list(b) for z, b in blocks.items()},
        "colors": {zone_label(z): ZONE_COLORS[z] for z in blocks},
        "answer": [keep.index(p) for p in sorted(answer) if p in keep],
    }
    cropped = len(keep) < len(case.tokens)
    note = (
        f" Showing {len(keep)} of {len(case.tokens)} tokens (all question and special tokens, the passage "
        "around the answer); rows therefore need not sum to 1."
        if cropped
        else ""
    )
    caption = figure_caption(
        "Look first at the outlined P2Q and P2P blocks: bright cells there are passage tokens attending "
        "to the question and to the passage. "
        f"Attention map of question {html.escape(case.qid)} ({html.escape(case.language)}): "
        f"“{html.escape(case.question)}”. Rows attend to columns; outlined blocks are the zones "
        "Q2Q, Q2P, P2Q, P2P; bold tick labels (and the dashed box) mark the gold-answer tokens. "
        f"Colour = attention probability (quantised to 1/255). Source: {html.escape(case.source)}.{note}"
    )
    options_layer = "".join(f'<option value="{i}">{i + 1}</option>' for i in range(maps.shape[0]))
    options_head = '<option value="0">mean over heads</option>' + "".join(
        f'<option value="{h + 1}">{h + 1}</option>' for h in range(maps.shape[1])
    )
    # "</script>" or "<!--" inside an inline <script> would end or derail it (a token can be any text):
    # every "<" in the JSON lies inside a string, where "\u003c" means the same character.
    payload_json = json.dumps(payload, ensure_ascii=False).replace("<", "\\u003c")
    script = _CASE_STUDY_JS.replace("__PAYLOAD__", payload_json)
    return (
        f'<figure class="mrc-figure" id="{caption.anchor}"><div class="mrc-case-controls">layer '
        f'<select id="{element_id}-layer">{options_layer}</select> head '
        f'<select id="{element_id}-head">{options_head}</select></div>'
        f'<div id="{element_id}" class="mrc-case-plot" style="width:720px;height:720px;"></div>'
        f"<figcaption>{caption}</figcaption></figure><script>{script}</script>"
    )


_CASE_STUDY_JS = r"""
(function () {
  var P = __PAYLOAD__;
  var raw = atob(P.data), bytes = new Uint8Array(raw.length);
  for (var i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
  var n = P.size, heads = P.heads + 1;
  function matrix(layer, head) {
    var offset = (layer * heads + head) * n * n, z = [];
    for (var r = 0; r < n; r++) {
      var row = new Array(n);
      for (var c = 0; c < n; c++) { row[c] = bytes[offset + r * n + c] / 255; }
      z.push(row);
    }
    return z;
  }
  var idx = []; for (var k = 0; k < n; k++) { idx.push(k); }
  var shapes = [], annotations = [];
  Object.keys(P.zones).forEach(function (name) {
    var b = P.zones[name];
    shapes.push({type: "rect", xref: "x", yref: "y", x0: b[2] - 0.5, x1: b[3] + 0.5, y0: b[0] - 0.5,
                 y1: b[1] + 0.5, line: {color: P.colors[name], width: 2.5}});
    annotations.push({x: (b[2] + b[3]) / 2, y: b[0] - 0.5, text: name, showarrow: false,
                      yanchor: "bottom", font: {color: P.colors[name], size: 12}});
  });
  if (P.answer.length) {
    shapes.push({type: "rect", xref: "x", yref: "paper", x0: P.answer[0] - 0.5,
                 x1: P.answer[P.answer.length - 1] + 0.5, y0: 0, y1: 1,
                 line: {color: "#ff4136", width: 1.5, dash: "dash"}});
  }
  var trace = {type: "heatmap", z: matrix(0, 0), x: idx, y: idx, colorscale: "Viridis", zmin: 0,
               zmax: 1, colorbar: {title: {text: "p"}}, customdata: null,
               hovertemplate: "row %{y} → col %{x}<br>p = %{z:.3f}<extra></extra>"};
  var layout = {width: 720, height: 720, margin: {l: 110, r: 30, t: 30, b: 110},
                xaxis: {tickmode: "array", tickvals: idx, ticktext: P.labels, tickangle: -90,
                        tickfont: {size: 9}},
                yaxis: {tickmode: "array", tickvals: idx, ticktext: P.labels, autorange: "reversed",
                        tickfont: {size: 9}},
                shapes: shapes, annotations: annotations};
  var layerSelect = document.getElementById(P.id + "-layer");
  var headSelect = document.getElementById(P.id + "-head");
  function update() {
    Plotly.restyle(P.id, {z: [matrix(parseInt(layerSelect.value, 10), parseInt(headSelect.value, 10))]}, [0]);
  }
  Plotly.newPlot(P.id, [trace], layout, {displaylogo: false, responsive: true});
  layerSelect.addEventListener("change", update);
  headSelect.addEventListener("change", update);
})();
"""
