"""HTML building blocks every section of the report uses (identical under Quarto and the fallback).

plotly.js inline once (:func:`plotly_js`), the report's styles, figures embedded without a script
reference (:func:`figure_html`), tables, collapsible details, number formats, zone and run labels and
colours, and the "n questions, n articles" line under each grid (:func:`grid_counts`). The tables of
the "Baselines" section are drawn with :func:`table_html`.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
from collections.abc import Iterator

import numpy as np
import pandas as pd
import plotly.io

from mrcbench import zones
from mrcbench.report.render import REPORT_CSS

ZONE_LABELS = dict(zones.ZONE_LABELS)
ZONE_ORDER = list(zones.ZONE_ORDER)
FOUR_ZONES = list(zones.FOUR_ZONES)
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
    from plotly.offline import get_plotlyjs

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


def figure_html(fig, caption: str = "", div_id: str | None = None) -> str:
    """A plotly figure as an HTML fragment (plotly.js itself comes from :func:`plotly_js`).

    The div id defaults to a digest of the figure and its caption, not plotly's random uuid, so two
    renders of the same results are byte-identical.
    """
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
    return f'<figure class="mrc-figure">{body}{cap}</figure>'


def table_html(frame: pd.DataFrame, caption: str = "", digits: int = 2, max_rows: int | None = None) -> str:
    """A compact HTML table (escaped cells, fixed decimals, en dash for missing values)."""
    if frame is None or frame.empty:
        return '<p class="mrc-caption"><em>No rows.</em></p>'
    shown = frame if max_rows is None else frame.head(max_rows)
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
    return cap + table + more


def details_html(summary: str, content: str) -> str:
    return f'<details class="mrc-details"><summary>{html.escape(summary)}</summary>{content}</details>'


def fmt_ci(value: float, low: float, high: float, digits: int = 1) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def fmt_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def zone_label(zone: str) -> str:
    return ZONE_LABELS.get(zone, zone.upper())


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
            ["model", "train_set", "eval_set", "language"], sort=True):
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
    return flagged[["model", "train_set", "eval_set", "metric", "scores_on_grid_questions", "grid_baseline"]]
