"""The rendering engine: ``reports/report.qmd`` to one self-contained HTML file (``mrcbench report``).

Two engines render the same .qmd:

* ``quarto render`` when the Quarto CLI is on PATH (the report's front matter sets
  ``embed-resources: true``);
* otherwise a built-in fallback: the .qmd is parsed (YAML front matter, markdown, ```{python} cells
  with ``#|`` options), turned into a notebook with nbformat, executed with nbclient (python3 kernel,
  parameters injected after the cell tagged ``parameters``, as papermill and Quarto do) and exported
  with nbconvert's HTMLExporter through a template that drops every CDN reference (require.js,
  MathJax, mermaid, widget manager).

Knows nothing of the figures: the report's cells call the other modules of :mod:`mrcbench.report`.
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mrcbench import files, layout, manifest
from mrcbench.errors import Interrupted, MrcbenchError

log = logging.getLogger(__name__)


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

#: Styles shared by both engines (emitted again by :func:`mrcbench.report.blocks.report_css` inside the document).
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
    package_root = str(Path(__file__).resolve().parents[2])  # mrcbench/report/render.py -> the folder of mrcbench/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def _interruptible_client_class():
    """nbclient's ``NotebookClient`` that also records which signal (SIGINT, SIGTERM) stopped it.

    nbclient handles both signals itself during execution (it shuts the kernel down, so no kernel is
    left behind); this subclass keeps that and remembers the signal, so that the failure it causes is
    reported as an interrupt, not as a dead kernel.
    """
    import asyncio
    import atexit
    import contextlib

    from nbclient import NotebookClient

    class InterruptibleClient(NotebookClient):
        interrupted_by: int | None = None

        def _on_signal(self, signum: int) -> None:
            if self.interrupted_by is None:
                self.interrupted_by = int(signum)
                self.shutdown_kernel = "immediate"  # kill the busy kernel: a graceful stop would wait on it
                self._async_cleanup_kernel_future = asyncio.ensure_future(self._async_cleanup_kernel())
                atexit.unregister(self._cleanup_kernel)

        @contextlib.asynccontextmanager
        async def async_setup_kernel(self, **kwargs: Any):
            async with super().async_setup_kernel(**kwargs):
                loop = asyncio.get_event_loop()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    with contextlib.suppress(RuntimeError, ValueError):  # not the main thread
                        loop.add_signal_handler(signum, self._on_signal, signum)
                yield

    return InterruptibleClient


def render_fallback(qmd: Path, out_html: Path, params: dict[str, Any], timeout: int = 900) -> None:
    """Render without Quarto: parse, build a notebook, execute it with nbclient, export one HTML file."""
    import nbformat
    from jinja2 import DictLoader
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    document = parse_qmd(qmd.read_text(encoding="utf-8"), source=str(qmd))
    nb = qmd_to_notebook(document, params)
    nbformat.validate(nb)
    client = _interruptible_client_class()(
        nb,
        kernel_name="python3",
        timeout=timeout,
        resources={"metadata": {"path": str(qmd.parent.resolve())}},
    )
    try:
        client.execute(env=_kernel_environment())
    except BaseException as exc:
        # Ctrl-C or SIGTERM: nbclient has shut the kernel down and fails in many ways (DeadKernelError,
        # AssertionError, a KeyboardInterrupt in a cell); whatever it raised, it is one interrupt.
        if client.interrupted_by is not None:
            raise Interrupted(client.interrupted_by) from None
        if not isinstance(exc, CellExecutionError):
            raise
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

    ``params`` override the report's parameters cell (``results_dir``, ``stats_dir``, ``reference_dir``); relative paths
    are made absolute because the report executes in the .qmd's folder. ``engine``: ``auto`` (Quarto
    when on PATH, else the fallback), ``quarto`` or ``fallback``.
    """
    qmd, out_html = Path(qmd), Path(out_html).resolve()
    if not qmd.is_file():
        raise MrcbenchError(f"report source not found: {qmd}")
    params = dict(params)
    for key in ("results_dir", "stats_dir", "reference_dir"):
        if params.get(key) is not None:
            params[key] = str(Path(params[key]).resolve())
    results_dir = params.get("results_dir")
    if results_dir is None or not Path(results_dir).is_dir():
        raise MrcbenchError(f"results directory not found: {results_dir}")
    stats_dir = Path(params.get("stats_dir") or layout.stats(results_dir))
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
    parser.add_argument("--references", type=Path, default=Path(manifest.REFERENCE_DIR),
                        help="folder of reference run manifests the appendix matches the run against")
    parser.add_argument("--engine", choices=("auto", "quarto", "fallback"), default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    engine = render(args.qmd, args.out, {"results_dir": args.results, "stats_dir": args.stats,
                                          "reference_dir": args.references}, args.engine)
    log.info("wrote %s (%s)", args.out, engine)
    return 0
