"""Render ``reports/report.qmd`` to one self-contained HTML file, and the helpers its cells call.

Two engines render the same .qmd:

* ``quarto render`` when the Quarto CLI is on PATH (the report's front matter sets
  ``embed-resources: true``);
* otherwise a built-in fallback: the .qmd is parsed (YAML front matter, markdown, ```{python} cells
  with ``#|`` options), turned into a notebook with nbformat, executed with nbclient (python3 kernel,
  parameters injected after the cell tagged ``parameters``, as papermill and Quarto do) and exported
  with nbconvert's HTMLExporter through a template that drops every CDN reference (require.js,
  MathJax, mermaid, widget manager).

The report must work offline, so it carries plotly.js inline exactly once (:func:`plotly_js`) and
every figure is embedded without a script reference (:func:`figure_html`). The helpers below build
the report's figures and tables from the statistics tables (``results/stats``) and raw result files
only; nothing in the report is typed by hand.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mrcbench import files
from mrcbench.config import DEFAULT_SEEDS
from mrcbench.errors import MrcbenchError
from mrcbench.stats import TABLES as STATS_TABLES

log = logging.getLogger(__name__)

ZONE_LABELS = {
    "all_paper_quirk": "ALL*",
    "all": "ALL",
    "q2q": "Q2Q",
    "q2p": "Q2P",
    "p2q": "P2Q",
    "p2p": "P2P",
}
ZONE_ORDER = list(ZONE_LABELS)
FOUR_ZONES = ["q2q", "q2p", "p2q", "p2p"]
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
# Rendering
# ==================================================================================================

FALLBACK_TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block extra_css -%}
<style type="text/css">
body.jp-Notebook { max-width: 1180px; margin: 0 auto; padding: 1.5em 2em 4em;
  font-family: "Source Serif Pro", Georgia, "Times New Roman", serif; font-size: 16px; line-height: 1.5; }
.jp-RenderedHTMLCommon h1 { font-size: 1.9em; margin-top: 0.4em; }
.jp-RenderedHTMLCommon h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.15em; margin-top: 1.6em; }
.jp-RenderedHTMLCommon table { font-family: system-ui, sans-serif; font-size: 12.5px; }
.jp-InputPrompt, .jp-OutputPrompt { display: none; }
.mrc-meta { color: #555; font-style: italic; }
.mrc-toc { border: 1px solid #ddd; background: #fafafa; padding: 0.5em 1.2em; margin: 1em 0; }
{{ mrcbench_css }}
</style>
{%- endblock extra_css -%}
"""

#: Styles shared by both engines (emitted again by :func:`report_css` inside the document).
REPORT_CSS = """
body, .jp-RenderedHTMLCommon, table.mrc-table { font-family: "Source Serif Pro", Georgia, "Times New Roman",
  "Noto Serif CJK SC", "Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei", serif; }
figure.mrc-figure { margin: 1.2em 0; }
figure.mrc-figure figcaption, p.mrc-caption { font-size: 0.92em; color: #333; margin-top: 0.3em; }
table.mrc-table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 12.5px; }
table.mrc-table th, table.mrc-table td { border: 1px solid #d0d0d0; padding: 2px 6px; text-align: right; }
table.mrc-table th { background: #f0f0f0; }
table.mrc-table td:first-child, table.mrc-table th:first-child { text-align: left; }
details.mrc-details { margin: 0.4em 0 1em; }
details.mrc-details summary { cursor: pointer; color: #1f4e79; }
div.mrc-case-controls { font-family: system-ui, sans-serif; font-size: 13px; margin: 0.3em 0; }
div.mrc-case-controls select { margin: 0 1em 0 0.3em; }
pre.mrc-pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.6em; font-size: 12px;
  max-height: 28em; overflow: auto; }
"""


@dataclass
class QmdChunk:
    """One piece of a .qmd: markdown text or a python cell with its ``#|`` options."""

    kind: str  # "markdown" or "code"
    source: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class QmdDocument:
    front_matter: dict[str, Any]
    chunks: list[QmdChunk]


_CELL_OPEN = re.compile(r"^```+\s*\{python[^}]*\}\s*$")
_FENCE = re.compile(r"^(```+)")


def parse_qmd(text: str, source: str = "<qmd>") -> QmdDocument:
    """Split a Quarto document into front matter, markdown chunks and python cells.

    Cell options are the leading ``#| key: value`` lines (YAML). Fenced code blocks that are not
    ```{python} cells stay in the markdown.
    """
    lines = text.splitlines()
    front: dict[str, Any] = {}
    start = 0
    if lines and lines[0].strip() == "---":
        for end in range(1, len(lines)):
            if lines[end].strip() in ("---", "..."):
                try:
                    front = yaml.safe_load("\n".join(lines[1:end])) or {}
                except yaml.YAMLError as exc:
                    raise MrcbenchError(f"{source}: front matter is not valid YAML ({exc})") from None
                start = end + 1
                break
        else:
            raise MrcbenchError(f"{source}: front matter opened with '---' is never closed")
    chunks: list[QmdChunk] = []
    markdown: list[str] = []
    i = start
    while i < len(lines):
        line = lines[i]
        if _CELL_OPEN.match(line.strip()):
            fence = _FENCE.match(line.strip()).group(1)
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].strip() != fence:
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise MrcbenchError(f"{source}: a ```{{python}} cell is never closed")
            if any(part.strip() for part in markdown):
                chunks.append(QmdChunk("markdown", "\n".join(markdown).strip("\n")))
            markdown = []
            option_lines = []
            while body and body[0].startswith("#|"):
                option_lines.append(body.pop(0)[2:].strip())
            try:
                options = (yaml.safe_load("\n".join(option_lines)) or {}) if option_lines else {}
            except yaml.YAMLError as exc:
                raise MrcbenchError(f"{source}: bad '#|' cell options ({exc})") from None
            chunks.append(QmdChunk("code", "\n".join(body).strip("\n"), options))
        else:
            markdown.append(line)
        i += 1
    if any(part.strip() for part in markdown):
        chunks.append(QmdChunk("markdown", "\n".join(markdown).strip("\n")))
    return QmdDocument(front, chunks)


def _execute_option(front: dict[str, Any], key: str, default: Any) -> Any:
    return (front.get("execute") or {}).get(key, default)


_HEADING_ATTRS = re.compile(r"^(#{1,6}\s.*?)\s*\{[^}]*\}\s*$")


def _strip_heading_attributes(markdown: str) -> str:
    """Drop Pandoc heading attributes (``{#sec-x .unnumbered}``) that plain markdown would print."""
    return "\n".join(_HEADING_ATTRS.sub(r"\1", line) for line in markdown.splitlines())


def _anchor(text: str) -> str:
    """The id nbconvert gives a markdown heading (its ``add_anchor`` filter)."""
    return html.escape(text.strip().replace(" ", "-"), quote=True)


def _toc_markdown(document: QmdDocument) -> str:
    """A table of contents of the level-2 headings of the markdown chunks (Quarto's ``toc: true``)."""
    items = []
    for chunk in document.chunks:
        if chunk.kind != "markdown":
            continue
        for line in _strip_heading_attributes(chunk.source).splitlines():
            match = re.match(r"^##\s+(.*)$", line)
            if match:
                title = match.group(1).strip()
                items.append(f'<li><a href="#{_anchor(title)}">{html.escape(title)}</a></li>')
    if not items:
        return ""
    return '<nav class="mrc-toc"><strong>Contents</strong><ul>' + "".join(items) + "</ul></nav>"


def qmd_to_notebook(document: QmdDocument, params: dict[str, Any]):
    """Build the notebook: a title cell, markdown cells, code cells tagged from their options.

    Tags follow nbconvert's TagRemovePreprocessor: ``remove_input`` (echo: false), ``remove_output``
    (output: false), ``remove_cell`` (include: false). The parameters are injected as a new cell right
    after the cell tagged ``parameters`` (or first, when there is none).
    """
    import nbformat

    front = document.front_matter
    echo_default = _execute_option(front, "echo", True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["title"] = str(front.get("title", "Report"))
    header = [f"# {front.get('title', 'Report')}"]
    if front.get("subtitle"):
        header.append(f"**{front['subtitle']}**")
    meta = [str(front[key]) for key in ("author", "date") if front.get(key)]
    if meta:
        header.append(f'<p class="mrc-meta">{html.escape(" · ".join(meta))}</p>')
    toc = _toc_markdown(document) if (_html_format(front).get("toc", front.get("toc"))) else ""
    if toc:
        header.append(toc)
    nb.cells.append(nbformat.v4.new_markdown_cell("\n\n".join(header)))
    injected = False
    figure_number = 0
    for chunk in document.chunks:
        if chunk.kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(_strip_heading_attributes(chunk.source)))
            continue
        options = chunk.options
        tags = list(options.get("tags", []) or [])
        if not options.get("echo", echo_default):
            tags.append("remove_input")
        if options.get("output", True) is False:
            tags.append("remove_output")
        if options.get("include", True) is False:
            tags.append("remove_cell")
        cell = nbformat.v4.new_code_cell(chunk.source)
        cell.metadata["tags"] = tags
        cell.metadata["mrcbench"] = {
            "label": options.get("label", ""),
            "warning": options.get("warning", _execute_option(front, "warning", True)),
            "output": options.get("output", True),
        }
        if options.get("fig-cap"):
            figure_number += 1
            cell.metadata["mrcbench"]["caption"] = f"Figure {figure_number}: {options['fig-cap']}"
        nb.cells.append(cell)
        if "parameters" in tags and not injected:
            nb.cells.append(_parameters_cell(params))
            injected = True
    if not injected and params:
        position = 1  # after the title
        nb.cells.insert(position, _parameters_cell(params))
    for index, cell in enumerate(nb.cells):
        cell.id = f"cell-{index}"  # not nbformat's random ids: two renders are byte-identical
    return nb


def _parameters_cell(params: dict[str, Any]):
    import nbformat

    lines = ["# Parameters injected by mrcbench.report"] + [
        f"{key} = {value!r}" for key, value in params.items()
    ]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters", "remove_cell"]
    return cell


def _html_format(front: dict[str, Any]) -> dict[str, Any]:
    fmt = front.get("format") or {}
    if isinstance(fmt, dict) and isinstance(fmt.get("html"), dict):
        return fmt["html"]
    return {}


def _postprocess_outputs(nb) -> None:
    """Apply the per-cell options nbconvert does not know: ``warning: false``, ``output: asis``, fig-cap."""
    import nbformat

    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        options = cell.metadata.get("mrcbench", {})
        outputs = []
        for output in cell.get("outputs", []):
            if (
                output.get("output_type") == "stream"
                and output.get("name") == "stderr"
                and not options.get("warning", True)
            ):
                continue
            if output.get("output_type") == "stream" and options.get("output") == "asis":
                output = nbformat.v4.new_output(
                    "display_data", data={"text/markdown": output.get("text", "")}
                )
            outputs.append(output)
        if options.get("caption"):
            outputs.append(
                nbformat.v4.new_output(
                    "display_data",
                    data={"text/html": f'<p class="mrc-caption">{html.escape(options["caption"])}</p>'},
                )
            )
        cell.outputs = outputs


_EXTERNAL_REFERENCE = re.compile(
    r"""<(?:script|img|iframe)\b[^>]*\bsrc\s*=\s*["']?(?:https?:)?//[^"'\s>]+"""
    r"""|<link\b[^>]*\bhref\s*=\s*["']?(?:https?:)?//[^"'\s>]+"""
    r"""|@import\s+(?:url\()?\s*["']?(?:https?:)?//[^"')\s]+""",
    re.IGNORECASE,
)


def external_references(document: str) -> list[str]:
    """Scripts, styles, images or imports the HTML would fetch from the network (must be none)."""
    return [match.group(0)[:160] for match in _EXTERNAL_REFERENCE.finditer(document)]


def _kernel_environment() -> dict[str, str]:
    """The environment of the kernel: this mrcbench importable even when it is not installed."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def render_fallback(qmd: Path, out_html: Path, params: dict[str, Any], timeout: int = 900) -> None:
    """Render without Quarto: parse, build a notebook, execute it with nbclient, export one HTML file."""
    import nbformat
    from jinja2 import DictLoader
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    document = parse_qmd(qmd.read_text(encoding="utf-8"), source=str(qmd))
    nb = qmd_to_notebook(document, params)
    nbformat.validate(nb)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        resources={"metadata": {"path": str(qmd.parent.resolve())}},
    )
    try:
        client.execute(env=_kernel_environment())
    except CellExecutionError as exc:
        log.error("%s", exc)
        label = next(
            (
                cell.metadata.get("mrcbench", {}).get("label")
                for cell in nb.cells
                if cell.cell_type == "code"
                and any(output.get("output_type") == "error" for output in cell.get("outputs", []))
            ),
            "",
        )
        reason = f"{exc.ename}: {exc.evalue}" if getattr(exc, "ename", None) else type(exc).__name__
        raise MrcbenchError(f"{qmd}: cell {label or '(unlabelled)'} failed: {reason}") from None
    _postprocess_outputs(nb)
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[
            DictLoader(
                {"mrcbench_report.html.j2": FALLBACK_TEMPLATE.replace("{{ mrcbench_css }}", REPORT_CSS)}
            )
        ],
        template_file="mrcbench_report.html.j2",
    )
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.embed_images = True
    exporter.register_preprocessor(
        TagRemovePreprocessor(
            remove_cell_tags={"remove_cell"},
            remove_input_tags={"remove_input"},
            remove_all_outputs_tags={"remove_output"},
        ),
        enabled=True,
    )
    body, _ = exporter.from_notebook_node(nb)
    offending = external_references(body)
    if offending:
        raise MrcbenchError(f"{qmd}: the rendered HTML still references the network: {offending[0]}")
    files.write_text(out_html, body)


def quarto_version(quarto: str) -> str:
    result = subprocess.run([quarto, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown version"


def render_with_quarto(quarto: str, qmd: Path, out_html: Path, params: dict[str, Any]) -> None:
    """``quarto render`` with ``-P key:value`` parameters; the output is moved to ``out_html``.

    Quarto writes next to the .qmd (``--output`` takes a file name, not a path).
    """
    produced = qmd.parent / out_html.name
    command = [quarto, "render", str(qmd), "--to", "html", "--output", out_html.name]
    for key, value in params.items():
        command += ["-P", f"{key}:{value}"]
    log.info("%s", " ".join(command))
    result = subprocess.run(command, env=_kernel_environment(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-20:])
        log.error("quarto failed:\n%s", tail)
        last = tail.splitlines()[-1] if tail else f"exit status {result.returncode}"
        raise MrcbenchError(f"{qmd}: quarto render failed: {last}")
    if not produced.is_file():
        raise MrcbenchError(f"{qmd}: quarto render wrote no {produced}")
    if produced.resolve() != out_html.resolve():
        with files.atomic_path(out_html) as tmp:
            shutil.move(str(produced), tmp)
    offending = external_references(out_html.read_text(encoding="utf-8"))
    if offending:
        raise MrcbenchError(f"{out_html}: the rendered HTML still references the network: {offending[0]}")


def render(qmd: Path, out_html: Path, params: dict[str, Any], engine: str = "auto") -> str:
    """Render ``qmd`` to the single self-contained file ``out_html``; return the engine used.

    ``params`` override the report's parameters cell (``results_dir``, ``stats_dir``); relative paths
    are made absolute because the report executes in the .qmd's folder. ``engine``: ``auto`` (Quarto
    when on PATH, else the fallback), ``quarto`` or ``fallback``.
    """
    qmd, out_html = Path(qmd), Path(out_html).resolve()
    if not qmd.is_file():
        raise MrcbenchError(f"report source not found: {qmd}")
    params = dict(params)
    for key in ("results_dir", "stats_dir"):
        if params.get(key) is not None:
            params[key] = str(Path(params[key]).resolve())
    results_dir = params.get("results_dir")
    if results_dir is None or not Path(results_dir).is_dir():
        raise MrcbenchError(f"results directory not found: {results_dir}")
    stats_dir = Path(params.get("stats_dir") or Path(results_dir) / "stats")
    params["stats_dir"] = str(stats_dir)
    if not (stats_dir / "deltas.parquet").is_file():
        raise MrcbenchError(f"{stats_dir / 'deltas.parquet'} not found: run `mrcbench stats` first")
    quarto = shutil.which("quarto") if engine in ("auto", "quarto") else None
    if engine == "quarto" and quarto is None:
        raise MrcbenchError("--engine quarto: the quarto CLI is not on PATH")
    if quarto:
        version = quarto_version(quarto)
        log.info("rendering with quarto %s", version)
        render_with_quarto(quarto, qmd, out_html, params)
        return f"quarto {version}"
    log.info("quarto not found: rendering with the built-in fallback (nbclient + nbconvert)")
    render_fallback(qmd, out_html, params)
    return "fallback (nbclient + nbconvert)"


def main(argv: list[str] | None = None) -> int:
    """``mrcbench report --qmd reports/report.qmd --results results --out reports/report.html``."""
    parser = argparse.ArgumentParser(prog="mrcbench report", description="render the paper-style report")
    parser.add_argument("--qmd", type=Path, default=Path("reports/report.qmd"))
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--stats", type=Path, default=None, help="statistics tables (default: RESULTS/stats)")
    parser.add_argument("--out", type=Path, default=Path("reports/report.html"))
    parser.add_argument("--engine", choices=("auto", "quarto", "fallback"), default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    engine = render(args.qmd, args.out, {"results_dir": args.results, "stats_dir": args.stats}, args.engine)
    log.info("wrote %s (%s)", args.out, engine)
    return 0


# ==================================================================================================
# Inputs of the report
# ==================================================================================================



@dataclass
class ReportData:
    """Everything the report reads: the statistics tables and a few raw result files.

    Each table of :data:`STATS_TABLES` is also an attribute (``data.deltas``); a table that was not
    written is an empty frame, so report cells test ``.empty`` instead of catching errors.
    """

    results_dir: Path
    stats_dir: Path
    tables: dict[str, pd.DataFrame]
    config: dict[str, Any]
    settings: dict[str, Any]

    def __getattr__(self, name: str) -> pd.DataFrame:
        tables = self.__dict__.get("tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(name)


def load_report_data(results_dir: str | Path, stats_dir: str | Path | None = None) -> ReportData:
    results_dir = Path(results_dir)
    stats_dir = Path(stats_dir) if stats_dir else results_dir / "stats"
    if not (stats_dir / "deltas.parquet").is_file():
        raise MrcbenchError(f"{stats_dir / 'deltas.parquet'} not found: run `mrcbench stats` first")
    tables = {}
    for name in STATS_TABLES:
        path = stats_dir / f"{name}.parquet"
        tables[name] = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
    # The config `mrcbench stats` ran with (written beside its tables), else a results-level copy.
    config_path = stats_dir / "config.resolved.yaml"
    if not config_path.is_file():
        config_path = results_dir / "config.resolved.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    settings_path = stats_dir / "settings.json"
    settings = json.loads(settings_path.read_text(encoding="utf-8")) if settings_path.is_file() else {}
    return ReportData(results_dir, stats_dir, tables, config or {}, settings)


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


def figure_html(fig, caption: str = "", div_id: str | None = None) -> str:
    """A plotly figure as an HTML fragment (plotly.js itself comes from :func:`plotly_js`).

    The div id defaults to a digest of the figure and its caption, not plotly's random uuid, so two
    renders of the same results are byte-identical.
    """
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
# Figures
# ==================================================================================================


def seismic_colorscale(
    zmin: float = DELTA_RANGE[0], zmax: float = DELTA_RANGE[1], steps: int = 11
) -> list[list[Any]]:
    """matplotlib's ``seismic`` re-centred so that white sits at 0 on [zmin, zmax].

    Like seaborn's ``center=0``: the blue half spans [zmin, 0] and the red half [0, zmax], so blue
    means a drop and red a gain whatever the asymmetry of the range.
    """
    from matplotlib import colormaps

    cmap = colormaps["seismic"]
    centre = -zmin / (zmax - zmin)
    scale = []
    for fraction in np.linspace(0.0, 1.0, steps):
        scale.append([centre * fraction, cmap(0.5 * fraction)])
    for fraction in np.linspace(0.0, 1.0, steps)[1:]:
        scale.append([centre + (1 - centre) * fraction, cmap(0.5 + 0.5 * fraction)])
    colours = [
        [float(pos), "rgb({:.0f},{:.0f},{:.0f})".format(*(255 * np.array(rgba[:3])))] for pos, rgba in scale
    ]
    colours[steps - 1][1] = "rgb(255,255,255)"  # exactly white at 0 (the 256-entry LUT is a step off)
    return colours


def _significance_mark(row: pd.Series) -> str:
    if bool(row.get("significant_holm", False)):
        return "*"
    if bool(row.get("significant_bh", False)):
        return "+"
    return ""


def zone_layer_heatmap_trace(
    cells: pd.DataFrame, zmin: float = DELTA_RANGE[0], zmax: float = DELTA_RANGE[1], show_scale: bool = True
):
    """One paper-style heatmap: x = zones, y = layers (1 at the bottom), colour = delta, marks = tests.

    Values beyond the colour range saturate; the hover and the tables carry the raw numbers.
    """
    import plotly.graph_objects as go

    zones = [zone for zone in ZONE_ORDER if zone in set(cells["zone"])]
    layers = sorted(int(layer) for layer in cells["layer"].unique())
    table = cells.set_index(["layer", "zone"])
    z, text, custom = [], [], []
    for layer in layers:
        z_row, text_row, custom_row = [], [], []
        for zone in zones:
            if (layer, zone) in table.index:
                row = table.loc[(layer, zone)]
                z_row.append(float(row["delta"]))
                text_row.append(_significance_mark(row))
                custom_row.append(
                    [
                        row.get("ci_low", np.nan),
                        row.get("ci_high", np.nan),
                        row.get("p_holm", np.nan),
                        row.get("p_bh", np.nan),
                        row.get("seed_delta_sd", np.nan),
                        row.get("removed_mass", np.nan),
                        row.get("n_questions", np.nan),
                    ]
                )
            else:
                z_row.append(None)
                text_row.append("")
                custom_row.append([np.nan] * 7)
        z.append(z_row)
        text.append(text_row)
        custom.append(custom_row)
    return go.Heatmap(
        z=z,
        x=[zone_label(zone) for zone in zones],
        y=[layer + 1 for layer in layers],
        text=text,
        texttemplate="%{text}",
        textfont={"size": 14},
        customdata=custom,
        colorscale=seismic_colorscale(zmin, zmax),
        zmin=zmin,
        zmax=zmax,
        showscale=show_scale,
        colorbar={"title": {"text": "Δ"}, "len": 0.9},
        hovertemplate=(
            "layer %{y}, %{x}<br>Δ = %{z:.2f} [%{customdata[0]:.2f}, %{customdata[1]:.2f}]"
            "<br>Holm p = %{customdata[2]:.3g}, BH p = %{customdata[3]:.3g}"
            "<br>seed sd = %{customdata[4]:.2f}, removed mass = %{customdata[5]:.3f}"
            "<br>n = %{customdata[6]} questions<extra></extra>"
        ),
        xgap=1,
        ygap=1,
    )


def zone_layer_figure(deltas: pd.DataFrame, panels: list[tuple[str, str]], title: str = ""):
    """Heatmaps side by side, one per (variant, metric) panel, for one run."""
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=len(panels),
        horizontal_spacing=0.06,
        subplot_titles=[f"Δ{metric.upper()} · {variant}" for variant, metric in panels],
    )
    n_layers = 1
    for col, (variant, metric) in enumerate(panels, start=1):
        cells = deltas[(deltas["variant"] == variant) & (deltas["metric"] == metric)]
        n_layers = max(n_layers, cells["layer"].nunique())
        fig.add_trace(zone_layer_heatmap_trace(cells, show_scale=col == len(panels)), row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, dtick=1, row=1, col=col)
    fig.update_layout(
        title=title or None,
        height=max(330, 26 * n_layers + 150),
        width=min(1150, 260 * len(panels) + 120),
        margin={"l": 50, "r": 20, "t": 70 if title else 40, "b": 40},
        plot_bgcolor="white",
    )
    return fig


def head_delta_figure(
    cells: pd.DataFrame, title: str = "", zmin: float = DELTA_RANGE[0], zmax: float = DELTA_RANGE[1]
):
    """Head-level masking: one layer x head heatmap of delta per zone (layer 1 at the bottom)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    zones = [zone for zone in ZONE_ORDER if zone in set(cells["zone"])]
    fig = make_subplots(
        rows=1, cols=len(zones), subplot_titles=[zone_label(z) for z in zones], horizontal_spacing=0.05
    )
    n_layers = 1
    for col, zone in enumerate(zones, start=1):
        subset = cells[cells["zone"] == zone]
        delta = subset.pivot_table(index="layer", columns="head", values="delta").sort_index()
        marks = (
            subset.assign(mark=[_significance_mark(row) for _, row in subset.iterrows()])
            .pivot(index="layer", columns="head", values="mark")
            .reindex_like(delta)
            .fillna("")
        )
        custom = np.stack(
            [
                subset.pivot_table(index="layer", columns="head", values=v).reindex_like(delta).to_numpy()
                for v in ("ci_low", "ci_high", "p_holm")
            ],
            axis=-1,
        )
        n_layers = max(n_layers, len(delta))
        fig.add_trace(
            go.Heatmap(
                z=delta.to_numpy(),
                x=[h + 1 for h in delta.columns],
                y=[layer + 1 for layer in delta.index],
                text=marks.to_numpy(),
                texttemplate="%{text}",
                customdata=custom,
                colorscale=seismic_colorscale(zmin, zmax),
                zmin=zmin,
                zmax=zmax,
                showscale=col == len(zones),
                colorbar={"title": {"text": "Δ"}},
                xgap=1,
                ygap=1,
                hovertemplate=(
                    f"{zone_label(zone)}, layer %{{y}}, head %{{x}}<br>Δ = %{{z:.2f}} "
                    "[%{customdata[0]:.2f}, %{customdata[1]:.2f}]"
                    "<br>Holm p = %{customdata[2]:.3g}<extra></extra>"
                ),
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="head", dtick=1 if len(delta.columns) <= 16 else None, row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, dtick=1, row=1, col=col)
    fig.update_layout(
        title=title or None,
        height=max(320, 24 * n_layers + 150),
        width=min(1150, 300 * len(zones) + 120),
        margin={"l": 50, "r": 20, "t": 70 if title else 40, "b": 40},
        plot_bgcolor="white",
    )
    return fig


def head_mass_figure(zone_mass: pd.DataFrame, zones: list[str] = FOUR_ZONES, title: str = ""):
    """Layer x head heatmaps of mean attention mass, one per zone (shared colour scale 0..max)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    zones = [zone for zone in zones if zone in set(zone_mass["zone"])]
    fig = make_subplots(
        rows=1, cols=len(zones), subplot_titles=[zone_label(z) for z in zones], horizontal_spacing=0.04
    )
    upper = float(zone_mass[zone_mass["zone"].isin(zones)]["mass"].max()) if len(zone_mass) else 1.0
    n_layers = 1
    for col, zone in enumerate(zones, start=1):
        cells = zone_mass[zone_mass["zone"] == zone]
        mass = cells.pivot_table(index="layer", columns="head", values="mass").sort_index()
        sd = cells.pivot_table(index="layer", columns="head", values="mass_seed_sd").reindex_like(mass)
        n_layers = max(n_layers, len(mass))
        fig.add_trace(
            go.Heatmap(
                z=mass.to_numpy(),
                x=[h + 1 for h in mass.columns],
                y=[layer + 1 for layer in mass.index],
                customdata=sd.to_numpy(),
                colorscale="Viridis",
                zmin=0,
                zmax=upper,
                showscale=col == len(zones),
                colorbar={"title": {"text": "mass"}},
                hovertemplate=f"{zone_label(zone)}<br>layer %{{y}}, head %{{x}}<br>mass = %{{z:.3f}}"
                "<br>seed sd = %{customdata:.3f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="head", dtick=1 if len(mass.columns) <= 16 else None, row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, dtick=1, row=1, col=col)
    fig.update_layout(
        title=title or None,
        height=max(320, 24 * n_layers + 150),
        width=min(1150, 250 * len(zones) + 120),
        margin={"l": 50, "r": 20, "t": 70 if title else 40, "b": 40},
    )
    return fig


def correlation_figure(rows: pd.DataFrame, title: str):
    """Question-level correlations (C2 or C3): a layer x zone heatmap of Pearson r per run (eval set)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    runs = list(rows.groupby(["model", "train_set", "eval_set"], sort=True))
    fig = make_subplots(
        rows=1,
        cols=len(runs),
        horizontal_spacing=0.06,
        subplot_titles=[f"{model} · {eval_set}" for (model, _, eval_set), _ in runs],
    )
    n_layers = 1
    for col, (_, cells) in enumerate(runs, start=1):
        zones = [zone for zone in ZONE_ORDER if zone in set(cells["zone"])]
        pivot = (
            cells.pivot_table(index="layer", columns="zone", values="pearson_r")
            .reindex(columns=zones)
            .sort_index()
        )
        corrected = [v for v in ("pearson_p_holm", "pearson_p_bh") if v in cells.columns]
        custom = np.stack(
            [
                cells.pivot_table(index="layer", columns="zone", values=v, dropna=False)
                .reindex_like(pivot)
                .to_numpy(dtype=float)
                for v in ("pearson_ci_low", "pearson_ci_high", "pearson_p", "n", *corrected)
            ],
            axis=-1,
        )
        marks = np.full(pivot.shape, "", dtype=object)
        if len(corrected) == 2:
            holm, bh = custom[..., 4], custom[..., 5]
            marks = np.where(holm < 0.05, "*", np.where(bh < 0.05, "+", ""))
        n_layers = max(n_layers, len(pivot))
        fig.add_trace(
            go.Heatmap(
                z=pivot.to_numpy(),
                x=[zone_label(z) for z in zones],
                y=[layer + 1 for layer in pivot.index],
                customdata=custom,
                text=marks,
                texttemplate="%{text}",
                colorscale="RdBu",
                reversescale=True,
                zmin=-1,
                zmax=1,
                xgap=1,
                ygap=1,
                showscale=col == len(runs),
                colorbar={"title": {"text": "r"}},
                hovertemplate=(
                    "layer %{y}, %{x}<br>r = %{z:.3f} [%{customdata[0]:.2f}, %{customdata[1]:.2f}]"
                    "<br>p = %{customdata[2]:.3g}, n = %{customdata[3]}"
                    + ("<br>Holm p = %{customdata[4]:.3g}, BH p = %{customdata[5]:.3g}" if len(corrected) == 2 else "")
                    + "<extra></extra>"
                ),
            ),
            row=1,
            col=col,
        )
        fig.update_yaxes(title_text="layer" if col == 1 else None, dtick=1, row=1, col=col)
    fig.update_layout(
        title=title,
        height=max(320, 24 * n_layers + 150),
        width=min(1150, 300 * len(runs) + 120),
        margin={"l": 50, "r": 20, "t": 80, "b": 40},
    )
    return fig


def crosslingual_figure(question_rows: pd.DataFrame, rank_row: pd.Series):
    """Zone x layer profile of one language against the other (one point per cell, coloured by zone)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for zone in [z for z in ZONE_ORDER if z in set(question_rows["zone"])]:
        cells = question_rows[question_rows["zone"] == zone]
        fig.add_trace(
            go.Scatter(
                x=cells["delta_a"],
                y=cells["delta_b"],
                mode="markers",
                name=zone_label(zone),
                marker={"color": ZONE_COLORS.get(zone, "#333"), "size": 9},
                text=[f"layer {layer + 1}" for layer in cells["layer"]],
                customdata=np.stack([cells["pearson_r"], cells["hurt_agreement"]], axis=-1),
                hovertemplate=(
                    f"{zone_label(zone)}, %{{text}}<br>Δ {rank_row['language_a']} = %{{x:.2f}}"
                    f"<br>Δ {rank_row['language_b']} = %{{y:.2f}}<br>per-question r = %{{customdata[0]:.2f}}"
                    "<br>hurt agreement = %{customdata[1]:.2f}<extra></extra>"
                ),
            )
        )
    values = pd.concat([question_rows["delta_a"], question_rows["delta_b"]])
    low, high = float(min(values.min(), 0)), float(max(values.max(), 0))
    fig.add_trace(
        go.Scatter(
            x=[low, high],
            y=[low, high],
            mode="lines",
            name="y = x",
            line={"color": "#999", "dash": "dot"},
            hoverinfo="skip",
        )
    )
    metric = str(rank_row["metric"]).upper()
    title = (
        f"{rank_row['eval_a']} vs {rank_row['eval_b']} ({rank_row['variant']}): Kendall τ = "
        f"{fmt_ci(rank_row['kendall_tau'], rank_row['tau_ci_low'], rank_row['tau_ci_high'], 2)}"
    )
    fig.update_layout(
        title=title,
        width=560,
        height=470,
        xaxis={"title": f"Δ{metric} ({rank_row['language_a']})"},
        yaxis={"title": f"Δ{metric} ({rank_row['language_b']})"},
        margin={"t": 60},
    )
    return fig


def question_type_figure(rows: pd.DataFrame, title: str):
    """Delta per layer for each question-type bucket, one panel per zone (reported buckets only)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    zones = [zone for zone in ZONE_ORDER if zone in set(rows["zone"])]
    fig = make_subplots(
        rows=1,
        cols=len(zones),
        shared_yaxes=True,
        subplot_titles=[zone_label(z) for z in zones],
        horizontal_spacing=0.03,
    )
    palette = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
    ]
    buckets = list(dict.fromkeys(rows["bucket"]))
    for col, zone in enumerate(zones, start=1):
        for index, bucket in enumerate(buckets):
            cells = rows[(rows["zone"] == zone) & (rows["bucket"] == bucket)].sort_values("layer")
            fig.add_trace(
                go.Scatter(
                    x=cells["layer"] + 1,
                    y=cells["delta"],
                    mode="lines+markers",
                    name=f"{bucket}",
                    legendgroup=bucket,
                    showlegend=col == 1,
                    line={"color": palette[index % len(palette)]},
                    customdata=np.stack([cells["ci_low"], cells["ci_high"], cells["n_questions"]], axis=-1),
                    hovertemplate=(
                        f"{bucket}, {zone_label(zone)}, layer %{{x}}<br>Δ = %{{y:.2f}} "
                        "[%{customdata[0]:.2f}, %{customdata[1]:.2f}], n = %{customdata[2]}<extra></extra>"
                    ),
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="layer", dtick=1, row=1, col=col)
    fig.update_yaxes(title_text="Δ", row=1, col=1)
    fig.update_layout(title=title, height=380, width=min(1150, 230 * len(zones) + 200), margin={"t": 70})
    return fig


def paper_comparison_figure(cells: pd.DataFrame, run_title: str):
    """The paper's digitised grid beside the run's grid (same colour scale), and a cell scatter."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from mrcbench import paper_reference

    paper = paper_reference.paper_grid().rename(columns={"delta_em": "delta"})
    fig = make_subplots(
        rows=1,
        cols=3,
        column_widths=[0.27, 0.27, 0.46],
        horizontal_spacing=0.09,
        subplot_titles=["paper (BERT-base, SQuAD 1.1, ΔEM)", run_title, "cell by cell"],
    )
    fig.update_layout(xaxis3={"domain": [fig.layout.xaxis3.domain[0] + 0.07, 1.0]})
    fig.add_trace(zone_layer_heatmap_trace(paper, show_scale=False), row=1, col=1)
    run_cells = cells.rename(columns={"run_delta": "delta"})
    run_trace = zone_layer_heatmap_trace(run_cells, show_scale=True)
    # The colour bar sits right of the run's heatmap, not over the scatter's legend.
    run_trace.colorbar.x = fig.layout.xaxis2.domain[1] + 0.01
    run_trace.colorbar.len = 0.9
    fig.add_trace(run_trace, row=1, col=2)
    for zone in [z for z in ZONE_ORDER if z in set(cells["zone"])]:
        subset = cells[cells["zone"] == zone]
        fig.add_trace(
            go.Scatter(
                x=subset["paper_delta"],
                y=subset["run_delta"],
                mode="markers",
                name=zone_label(zone),
                marker={"color": ZONE_COLORS.get(zone, "#333"), "size": 9},
                text=[
                    f"run layer {layer + 1} ↔ paper layer(s) {p}"
                    for layer, p in zip(subset["layer"], subset["paper_layers"], strict=True)
                ],
                hovertemplate="%{text}<br>paper Δ = %{x:.2f}, run Δ = %{y:.2f}<extra>"
                + zone_label(zone)
                + "</extra>",
            ),
            row=1,
            col=3,
        )
    fig.update_xaxes(title_text="paper ΔEM", row=1, col=3)
    fig.update_yaxes(title_text="run Δ", row=1, col=3)
    fig.update_yaxes(title_text="layer", dtick=1, row=1, col=1)
    fig.update_yaxes(dtick=1, row=1, col=2)
    fig.update_layout(height=470, width=1100, margin={"t": 60}, legend={"x": 1.02, "y": 1})
    return fig


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

    The json (written by ``mrcbench.extraction``) is a list of cases (``{"cases": [...]}`` is accepted
    too) with ``qid``, ``question``, ``tokens``, ``zone_ids``, ``answer_tokens`` [start, end] (inclusive
    token indices of the gold answer) and ``language``; the npz holds ``maps`` [cases, layers, heads, T,
    T] (padded to the longest case).
    """
    found: list[CaseStudy] = []
    counts: dict[str, int] = {}
    for json_path in sorted(Path(results_dir).glob("attention/*/*/seed*/*/case_studies.json")):
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
    caption = (
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
        f'<figure class="mrc-figure"><div class="mrc-case-controls">layer '
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


def _effect_phrase(row: pd.Series | dict, metric: str) -> str:
    """ "P2P in layer 1 (ΔF1 = −12.3 [−15.0, −9.8], significant after Holm correction, p < 0.001)"."""
    delta = fmt_ci(row["delta"], row["ci_low"], row["ci_high"])
    p = fmt_p(row["p_holm"])
    p_text = f"p {p}" if p.startswith("<") else f"p = {p}"
    covers_zero = not bool(row["ci_excludes_zero"])
    if covers_zero:
        verdict = f"no significant difference, Holm {p_text}"
    elif bool(row["significant_holm"]):
        verdict = f"significant after Holm correction, {p_text}"
    else:
        verdict = f"not significant after Holm correction, {p_text}"
    return f"{zone_label(row['zone'])} in layer {int(row['layer']) + 1} (Δ{metric.upper()} = {delta}, {verdict})"


VERDICT_SENTENCES = {
    "agrees": "This agrees with the paper's answer, P2Q + P2P.",
    "same zones, one significant": (
        "These are the paper's two zones, P2Q and P2P, but only one drop is significant, so this grid "
        "confirms the paper's answer only in part."
    ),
    "differs": "This differs from the paper's answer, P2Q + P2P.",
    "no significant drop": (
        "Neither drop is significant, so this grid can neither confirm nor refute the paper's answer, P2Q + P2P."
    ),
}


def headline_sentences(
    headline: pd.DataFrame, variant: str = "paper", metric: str = "f1", min_clusters: int | None = None
) -> list[str]:
    """One sentence per leg (model, train set, eval set) from :func:`mrcbench.stats.headline_zones`:
    the two zones whose masking hurts most, with CIs and corrected significance, and whether they are
    the paper's P2Q + P2P."""
    if headline is None or headline.empty:
        return []
    rows = headline[(headline["metric"] == metric)]
    if variant in set(rows["variant"]):
        rows = rows[rows["variant"] == variant]
    else:
        rows = rows[rows["variant"] == min(rows["variant"])] if not rows.empty else rows
    sentences = []
    for (model, train_set, eval_set), leg in rows.groupby(["model", "train_set", "eval_set"], sort=True):
        leg = leg.sort_values("rank")
        effects = [_effect_phrase(row, metric) for _, row in leg.iterrows()]
        zones = " and ".join(effects)
        verdict = VERDICT_SENTENCES.get(leg["verdict"].iloc[0], "")
        counts = grid_counts(leg.head(1), min_clusters)
        sentences.append(
            f"**{model} on {eval_set}** (fine-tuned on {train_set}; {counts}): the zones whose masking hurts "
            f"most are {zones}. {verdict}"
        )
    return sentences


def abstract_markdown(data: ReportData) -> str:
    """The abstract, written from the run's own numbers."""
    deltas, baselines = data.deltas, data.baselines
    parts: list[str] = []
    layer = deltas[(deltas["mode"] == "layer") & (deltas["head"] == -1)] if not deltas.empty else deltas
    models = (
        sorted(set(baselines["model"]) | set(layer.get("model", pd.Series(dtype=str))))
        if not baselines.empty
        else sorted(set(layer["model"]))
    )
    evals = sorted(set(baselines["eval_set"])) if not baselines.empty else sorted(set(layer["eval_set"]))
    n_seeds = int(baselines["n_seeds"].max()) if not baselines.empty else int(layer["n_seeds"].max())
    parts.append(
        f"We fine-tuned {len(models)} model(s) ({', '.join(models)}) with {n_seeds} seed(s) each, "
        f"evaluated them on {len(evals)} set(s) ({', '.join(evals)}), and blanked one attention zone "
        "(Q2Q, Q2P, P2Q, P2P, or all four) in one layer at a time, following Cui et al. (2022)."
    )
    f1 = baselines[baselines["metric"] == "f1"] if not baselines.empty else baselines
    if not f1.empty:
        parts.append(f"Unmasked F1 ranged from {f1['value'].min():.1f} to {f1['value'].max():.1f}.")
    primary = layer[(layer["metric"] == "f1")]
    if "paper" in set(primary.get("variant", [])):
        primary = primary[primary["variant"] == "paper"]
    if not primary.empty:
        worst = primary.loc[primary["delta"].idxmin()]
        parts.append(
            f"The most damaging cell was {zone_label(worst['zone'])} in layer {int(worst['layer']) + 1} of "
            f"{worst['model']} on {worst['eval_set']} "
            f"(ΔF1 = {fmt_ci(worst['delta'], worst['ci_low'], worst['ci_high'])}, "
            f"Holm-corrected p = {fmt_p(worst['p_holm'])})."
        )
        significant = primary[primary["significant_holm"] & (primary["delta"] < 0)]
        passage = significant[significant["zone"].isin(["p2q", "p2p"])]
        parts.append(
            f"Of the {len(primary)} zone × layer cells (ΔF1, {primary['variant'].iloc[0]} variant, all "
            f"grids), {len(significant)} show a drop that survives Holm correction; {len(passage)} of them "
            "are P2Q or P2P, the zones the paper singles out."
        )
    legs = headline_sentences(
        data.tables.get("headline", pd.DataFrame()), min_clusters=data.settings.get("min_clusters")
    )
    if legs:
        parts.append(
            "Per grid, a zone's damage is its most damaging layer (ΔF1 with its bootstrap CI; corrected "
            "over the grid's cells):\n\n" + "\n".join(f"- {sentence}" for sentence in legs) + "\n\n"
        )
    corr = data.correlations
    if not corr.empty:
        c1 = corr[(corr["analysis"] == "C1") & (corr["x_quantity"] == "zone_mass") & (corr["metric"] == "f1")]
        if not c1.empty and c1["pearson_r"].notna().any():
            significant = int(c1["significant_holm"].fillna(False).astype(bool).sum()) if (
                "significant_holm" in c1
            ) else 0
            parts.append(
                f"Across layers, a zone's attention mass and the F1 drop from masking it correlate with "
                f"median Pearson r = {c1['pearson_r'].median():.2f} over {len(c1)} zone × grid pairs (C1); "
                f"{significant} of them are significant after Holm correction."
            )
    rank = data.crosslingual_rank
    if not rank.empty:
        rows = rank[rank["metric"] == "f1"]
        if not rows.empty:
            parts.append(
                f"On parallel evaluation sets the zone × layer profiles agree across languages with Kendall "
                f"τ between {rows['kendall_tau'].min():.2f} and {rows['kendall_tau'].max():.2f}."
            )
    paper = data.paper_comparison
    if not paper.empty:
        em = paper[paper["metric"] == "em"]
        if not em.empty:
            parts.append(
                f"Against the paper's digitised BERT/SQuAD ΔEM grid, Spearman ρ over matched cells is "
                f"{em['spearman_rho'].min():.2f} to {em['spearman_rho'].max():.2f} and the two most damaging "
                f"zones agree in {int(em['top2_agree'].sum())} of {len(em)} grids."
            )
    return " ".join(parts)


def package_versions(
    names: tuple[str, ...] = (
        "mrcbench",
        "torch",
        "transformers",
        "tokenizers",
        "datasets",
        "numpy",
        "pandas",
        "scipy",
        "statsmodels",
        "plotly",
        "snakemake",
        "nbclient",
        "nbconvert",
    ),
) -> pd.DataFrame:
    rows = [{"package": "python", "version": sys.version.split()[0]}]
    for name in names:
        try:
            rows.append({"package": name, "version": metadata.version(name)})
        except metadata.PackageNotFoundError:
            rows.append({"package": name, "version": "not installed"})
    return pd.DataFrame(rows)


def git_commit(path: Path) -> str:
    """Commit of the checkout holding ``path`` (with ``-dirty`` when it has uncommitted changes)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=20,
        )
        if head.returncode != 0:
            return "not recorded (not a git checkout)"
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=False,
            timeout=20,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "not recorded (git unavailable)"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_provenance(results_dir: Path, config: dict[str, Any] | None = None) -> pd.DataFrame:
    """Split, source file, SHA-256 and sizes of every split.

    Read from ``data/{split}.summary.json``, written by ``mrcbench prepare-data``: its ``provenance``
    holds the source file (or hub spec) and the file's SHA-256 taken when the data were prepared,
    ``counts`` the articles and questions kept.
    """
    results_dir = Path(results_dir)
    rows = []
    for path in sorted((results_dir / "data").glob("*.summary.json")):
        summary = json.loads(path.read_text(encoding="utf-8"))
        provenance = summary.get("provenance") or {}
        counts = summary.get("counts") or {}
        hub = provenance.get("hub") or {}
        source = provenance.get("local") or " ".join(str(v) for v in (hub.get("path"), hub.get("name"), hub.get("split")) if v)
        rows.append(
            {
                "split": path.name.removesuffix(".summary.json"),
                "source_file": source or "not recorded",
                "sha256": provenance.get("sha256", "not recorded (hub)" if hub else "not recorded"),
                "articles": counts.get("articles"),
                "questions": counts.get("questions"),
                "answerable": counts.get("answerable"),
            }
        )
    return pd.DataFrame(rows, columns=["split", "source_file", "sha256", "articles", "questions", "answerable"])


def benchmark_table(results_dir: Path) -> pd.DataFrame:
    """Wall time and peak memory per Snakemake rule from the ``benchmark:`` TSVs."""
    rows = []
    root = Path(results_dir) / "benchmarks"
    for path in sorted(root.glob("**/*.tsv")):
        try:
            frame = pd.read_csv(path, sep="\t")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            continue
        if "s" not in frame.columns:
            continue
        relative = path.relative_to(root)
        rule = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        rows.append(
            {
                "rule": rule,
                "job": str(relative.with_suffix("")),
                "seconds": float(frame["s"].mean()),
                "max_rss_mb": float(pd.to_numeric(frame.get("max_rss"), errors="coerce").max())
                if "max_rss" in frame
                else np.nan,
            }
        )
    jobs = pd.DataFrame(rows, columns=["rule", "job", "seconds", "max_rss_mb"])
    if jobs.empty:
        return pd.DataFrame(columns=["rule", "jobs", "total_s", "mean_s", "max_s", "max_rss_mb"])
    grouped = jobs.groupby("rule")
    return (
        pd.DataFrame(
            {
                "jobs": grouped.size(),
                "total_s": grouped["seconds"].sum(),
                "mean_s": grouped["seconds"].mean(),
                "max_s": grouped["seconds"].max(),
                "max_rss_mb": grouped["max_rss_mb"].max(),
            }
        )
        .reset_index()
        .sort_values("total_s", ascending=False)
    )


def _starting_point(config: dict[str, Any], experiment: str) -> str:
    """What an experiment's fine-tuning starts from: the pre-trained weights, or (training.init_from)
    the same model already fine-tuned on another split."""
    from mrcbench import config as cfg

    train = config["experiments"][experiment]["train"]
    starts = {cfg.init_from(config, model, train) for model in cfg.experiment_models(config, experiment)}
    return "; ".join(sorted(f"fine-tuned on {init} (training.init_from)" if init else "pre-trained weights"
                            for init in starts))


def setup_tables(config: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Models, datasets/splits, experiments and recipe knobs from the resolved config."""
    models = pd.DataFrame(
        [
            {"model": name, **{k: v for k, v in spec.items() if not isinstance(v, (dict, list))}}
            for name, spec in (config.get("models") or {}).items()
        ]
    )
    datasets = config.get("datasets") or {}
    splits = pd.DataFrame(
        [
            {
                "split": name,
                "role": spec.get("role"),
                "dataset": spec.get("dataset"),
                "language": (datasets.get(spec.get("dataset")) or {}).get("language"),
                "metric": (datasets.get(spec.get("dataset")) or {}).get("metric"),
                **{
                    k: v
                    for k, v in spec.items()
                    if k not in ("role", "dataset") and not isinstance(v, (dict, list))
                },
            }
            for name, spec in (config.get("splits") or {}).items()
        ]
    )
    experiments = pd.DataFrame(
        [
            {
                "experiment": name,
                "train": spec.get("train"),
                "eval": ", ".join(spec.get("eval", [])),
                "models": ", ".join(spec.get("models", [])) or "(all of the language)",
                "seeds": ", ".join(map(str, spec.get("seeds", DEFAULT_SEEDS))),
                "starts from": _starting_point(config, name),
            }
            for name, spec in (config.get("experiments") or {}).items()
        ]
    )
    knobs = []
    for section in ("training", "features", "decoding", "ablation", "stats"):
        for key, value in (config.get(section) or {}).items():
            knobs.append(
                {
                    "section": section,
                    "key": key,
                    "value": ", ".join(map(str, value)) if isinstance(value, list) else str(value),
                }
            )
    return {
        "models": models,
        "splits": splits,
        "experiments": experiments,
        "knobs": pd.DataFrame(knobs, columns=["section", "key", "value"]),
    }
