"""HTML building blocks every section of the report uses (identical under Quarto and the fallback).

plotly.js inline once (:func:`plotly_js`), the report's styles, figures embedded without a script
reference (:func:`figure_html`), tables, collapsible details, number formats, zone and run labels and
colours, and the "n questions, n articles" line under each grid (:func:`grid_counts`). The tables of
the "Baselines" section are drawn with :func:`table_html`.

Numbering (one mechanism for every section): :func:`figure_caption` and :func:`table_caption` return
"Figure N. text" / "Table N. text", numbered in the order the captions are made (the report's
order: its cells run top to bottom in one kernel), with an anchor ``fig-N``/``tbl-N`` (or
``fig-<label>``/``tbl-<label>``) that :func:`figure_html`/:func:`table_html` put on the figure or the
table and :func:`ref` links to. The report's setup cell calls :func:`reset_numbering`.

Conventions: layers and heads are numbered from 1, as in the paper, in text, tables and figures
(:func:`layer_number`; the statistics tables keep the code's 0-based ``layer``); counts are written
with :func:`plural` (never "1 model(s)"); p-values with :func:`fmt_p` (in a sentence :func:`p_text`), estimates with their CI with
:func:`fmt_ci`, ranges with :func:`fmt_range`.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io
from plotly.offline import get_plotlyjs

from mrcbench import zones
from mrcbench.report.style import REPORT_CSS
from mrcbench.tables import RUN_KEYS

#: The paper's heatmap range (visualize_att_zone.py: vmin -10, vmax +2, centre 0).
DELTA_RANGE = (-10.0, 2.0)
ZONE_COLORS = {
    "all_paper_quirk": "#7f7f7f",
    "all": "#2f2f2f",
    "q2q": "#1f77b4",
    "q2p": "#2ca02c",
    "p2q": "#d62728",
    "p2p": "#9467bd",
}


# ==================================================================================================
# HTML building blocks (identical under Quarto and the fallback)
# ==================================================================================================


def plotly_js() -> str:
    """plotly.js inline, once per document (no CDN).

    ``define`` is hidden while it loads: where a page also carries require.js, plotly.js would
    otherwise register as an AMD module and never set ``window.Plotly``.
    """

    return (
        '<script type="text/javascript">window.__mrcbenchDefine = window.define; window.define = undefined;'
        '</script>\n<script type="text/javascript">' + get_plotlyjs() + "</script>\n"
        '<script type="text/javascript">window.define = window.__mrcbenchDefine;</script>'
    )


def report_css() -> str:
    return f"<style>{REPORT_CSS}</style>"


PLOTLY_JSON_ENGINE = "json"
"""How plotly serialises a figure here. Its default (``auto``) uses orjson where that is installed
(non-ASCII kept as UTF-8) and the standard library otherwise (non-ASCII escaped, ``\\u0394``), so the
same results gave other report bytes in another environment; one engine makes them the same."""


@contextlib.contextmanager
def plotly_json_engine(engine: str) -> Iterator[None]:
    """Serialise plotly figures with ``engine`` inside the block (plotly reads it at every call)."""
    config = plotly.io.json.config
    previous = config.default_engine
    config.default_engine = engine
    try:
        yield
    finally:
        config.default_engine = previous


# ==================================================================================================
# Figure and table numbers
# ==================================================================================================


class Caption(str):
    """A caption's HTML ("Figure 3. ...") that remembers the anchor of its figure or table."""

    anchor: str = ""

    def __new__(cls, text: str, anchor: str = ""):
        made = super().__new__(cls, text)
        made.anchor = anchor
        return made


class Numbering:
    """Figure and table numbers of one report, given in the order the captions are made."""

    PREFIX: ClassVar[dict[str, tuple[str, str]]] = {"figure": ("Figure", "fig"), "table": ("Table", "tbl")}

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.counts = dict.fromkeys(self.PREFIX, 0)
        self.labels: dict[str, tuple[str, int]] = {}

    def number(self, kind: str, label: str | None = None) -> int:
        """The next number of ``kind`` ("figure" or "table"); a ``label`` seen before (by :meth:`ref`)
        keeps the number it was given."""
        if kind not in self.PREFIX:
            raise ValueError(f"kind must be one of {sorted(self.PREFIX)}, not {kind!r}")
        if label is not None and label in self.labels:
            return self.labels[label][1]
        self.counts[kind] += 1
        if label is not None:
            self.labels[label] = (kind, self.counts[kind])
        return self.counts[kind]

    def anchor(self, kind: str, number: int, label: str | None = None) -> str:
        short = self.PREFIX[kind][1]
        return f"{short}-{label}" if label else f"{short}-{number}"

    def caption(self, kind: str, text: str, label: str | None = None) -> Caption:
        number = self.number(kind, label)
        name = self.PREFIX[kind][0]
        return Caption(f'<span class="mrc-number">{name} {number}.</span> {text}',
                       self.anchor(kind, number, label))

    def ref(self, label: str, kind: str = "figure") -> str:
        """A link "Figure N" to the figure or table of ``label``; a label not captioned yet is
        numbered now (a forward reference: papers number by first mention)."""
        if label in self.labels:
            kind, number = self.labels[label]
        else:
            number = self.number(kind, label)
        return f'<a href="#{self.anchor(kind, number, label)}">{self.PREFIX[kind][0]} {number}</a>'


#: The report's numbering (one per kernel; the setup cell resets it).
NUMBERING = Numbering()


def reset_numbering() -> None:
    """Start the figure and table numbers again at 1 (the report's setup cell)."""
    NUMBERING.reset()


def figure_caption(text: str, label: str | None = None) -> Caption:
    """ "Figure N. text": the first sentence of ``text`` should say what to look at first."""
    return NUMBERING.caption("figure", text, label)


def table_caption(text: str, label: str | None = None) -> Caption:
    """ "Table N. text": the first sentence of ``text`` should say what to read first."""
    return NUMBERING.caption("table", text, label)


def caption(kind: str, text: str, label: str | None = None) -> Caption:
    """:func:`figure_caption` (``kind="figure"``) or :func:`table_caption` (``kind="table"``)."""
    return NUMBERING.caption(kind, text, label)


def ref(label: str, kind: str = "figure") -> str:
    """A link "Figure N"/"Table N" to the captioned figure or table of ``label``."""
    return NUMBERING.ref(label, kind)


def _anchor_attribute(caption: str) -> str:
    anchor = getattr(caption, "anchor", "")
    return f' id="{html.escape(anchor, quote=True)}"' if anchor else ""


#: Figures laid out wider than this (px) take the text column's width instead (plotly resizes them with
#: the window): the column beside the table of contents is narrower than the widest grids.
FULL_WIDTH_ABOVE = 900


def figure_html(fig, caption: str = "", div_id: str | None = None) -> str:
    """A plotly figure as an HTML fragment (plotly.js itself comes from :func:`plotly_js`).

    The div id defaults to a digest of the figure and its caption, not plotly's random uuid, so two
    renders of the same results are byte-identical. A :class:`Caption` (:func:`figure_caption`) puts
    its anchor on the ``<figure>``.
    """
    if fig.layout.width is not None and fig.layout.width > FULL_WIDTH_ABOVE:
        fig = go.Figure(fig).update_layout(width=None, autosize=True)  # a copy: the caller's figure stays
    with plotly_json_engine(PLOTLY_JSON_ENGINE):
        if div_id is None:
            digest = hashlib.sha256((caption + "\0" + fig.to_json()).encode("utf-8")).hexdigest()
            div_id = f"mrc-fig-{digest[:16]}"
        body = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=div_id,
            config={"displaylogo": False, "responsive": True},
        )
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure class="mrc-figure"{_anchor_attribute(caption)}>{body}{cap}</figure>'


def table_html(frame: pd.DataFrame, caption: str = "", digits: int = 2, max_rows: int | None = None) -> str:
    """A compact HTML table (escaped cells, fixed decimals, en dash for missing values, None included),
    its caption above it; a :class:`Caption` (:func:`table_caption`) puts its anchor on the block."""
    if frame is None or frame.empty:
        cap = f'<p class="mrc-caption">{caption}</p>' if caption else ""
        return f'<div class="mrc-table-block"{_anchor_attribute(caption)}>{cap}<p class="mrc-caption"><em>No rows.</em></p></div>'
    shown = frame if max_rows is None else frame.head(max_rows)
    # None in a text column, or <NA> in a nullable integer one, would be printed: they are missing, like NaN.
    shown = shown.assign(**{c: shown[c].astype(object).where(shown[c].notna(), np.nan)
                            for c in shown.columns if not isinstance(shown[c].dtype, np.dtype)
                            or shown[c].dtype == object})
    table = shown.to_html(
        index=False,
        classes="mrc-table",
        na_rep="–",
        escape=True,
        border=0,
        float_format=lambda value: f"{value:.{digits}f}",
    )
    cap = f'<p class="mrc-caption">{caption}</p>' if caption else ""
    more = (
        f'<p class="mrc-caption">({len(frame) - len(shown)} more rows in the CSV file.)</p>'
        if len(shown) < len(frame)
        else ""
    )
    return f'<div class="mrc-table-block"{_anchor_attribute(caption)}>{cap}{table}{more}</div>'


def details_html(summary: str, content: str) -> str:
    return f'<details class="mrc-details"><summary>{html.escape(summary)}</summary>{content}</details>'


def fmt_ci(value: float, low: float, high: float, digits: int = 1) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def fmt_p(p: float) -> str:
    """A p-value: three decimals, "<0.001" below that, an en dash when missing."""
    if p is None or not np.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def p_text(p: float) -> str:
    """A p-value in a sentence: "p = 0.012", "p <0.001", "p –" when missing (:func:`fmt_p`)."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") or text == "–" else f"p = {text}"


def fmt_range(low: float, high: float, digits: int = 2) -> str:
    """ "0.47" when both ends agree at ``digits`` decimals, else "0.11 to 0.31" (never "between 0.47 and
    0.47")."""
    a, b = f"{low:.{digits}f}", f"{high:.{digits}f}"
    return a if a == b else f"{a} to {b}"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """ "1 model", "2 models", "3 analyses" (``plural_form``): never "model(s)"."""
    count = int(count)
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count} {word}"


def layer_number(layer) -> int:
    """The layer (or head) as the report numbers it: from 1, as the paper does; the statistics
    tables keep the code's 0-based index."""
    return int(layer) + 1


def format_p_columns(frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """The frame with every p-value column (``p``, ``p_*``, ``*_p``, ``*_p_*``) formatted by :func:`fmt_p`."""
    columns = columns if columns is not None else [
        c for c in frame.columns
        if c == "p" or c.startswith("p_") or c.endswith("_p") or "_p_" in c
    ]
    return frame.assign(**{c: frame[c].map(fmt_p) for c in columns if c in frame})


def zone_label(zone: str) -> str:
    return zones.ZONE_LABELS.get(zone, zone.upper())


def run_label(model: str, train_set: str, eval_set: str) -> str:
    return f"{model} · trained on {train_set} · evaluated on {eval_set}"


# ==================================================================================================
# Text and appendix helpers
# ==================================================================================================


def grid_counts(rows: pd.DataFrame, min_clusters: int | None = None) -> str:
    """Questions, article clusters and resampling unit of a grid, read from its stats rows.

    E.g. "100 questions from 4 articles; resampled over questions (fewer than 10 articles)".
    Several grids (rows of several runs) give ranges.
    """
    if rows is None or rows.empty or "n_questions" not in rows:
        return "numbers of questions and articles not recorded"

    def span(column: str) -> str:
        values = pd.to_numeric(rows[column], errors="coerce").dropna().astype(int)
        if values.empty:
            return "?"
        low, high = int(values.min()), int(values.max())
        return f"{low}" if low == high else f"{low}–{high}"

    text = f"{span('n_questions')} questions from {span('n_clusters')} articles"
    units = sorted(set(rows["resampling"].dropna())) if "resampling" in rows else []
    if units == ["article"]:
        return text + "; resampled over articles"
    if units == ["question"]:
        below = f" (fewer than {min_clusters} articles)" if min_clusters else ""
        return text + f"; resampled over questions{below}"
    if units:
        return text + "; resampled over articles or questions (see the resampling column)"
    return text


def baselines_wide(baselines: pd.DataFrame) -> pd.DataFrame:
    """The baselines table one row per run (model, train, eval, language): EM/F1 with CI, seed sd and
    the official scorer's value side by side (formatting only; every number is the table's)."""
    wide = []
    for (model, train_set, eval_set, language), rows in baselines.groupby(
            [*RUN_KEYS, "language"], sort=True):
        record = {"model": model, "train": train_set, "eval": eval_set, "lang": language,
                  "questions": int(rows["n_questions"].iloc[0]), "seeds": int(rows["n_seeds"].iloc[0])}
        for metric in ("em", "f1"):
            row = rows[rows["metric"] == metric].iloc[0]
            record[f"{metric.upper()} [95% CI]"] = fmt_ci(row["value"], row["ci_low"], row["ci_high"], 2)
            record[f"{metric.upper()} seed sd"] = row["seed_sd"]
            record[f"{metric.upper()} official"] = row["official"]
        wide.append(record)
    return pd.DataFrame(wide)


def baseline_mismatches(baselines: pd.DataFrame) -> pd.DataFrame:
    """The runs whose grid baseline differs from the prediction scores on the grid's questions
    (the statistics' ``grid_mismatch`` flag)."""
    flagged = baselines[baselines["grid_mismatch"].astype(bool)] if "grid_mismatch" in baselines else baselines.iloc[:0]
    return flagged[[*RUN_KEYS, "metric", "scores_on_grid_questions", "grid_baseline"]]
