"""The rendering engine: ``reports/report.qmd`` to one self-contained HTML file (``mrcbench report``).

Two engines render the same .qmd:

* ``quarto render`` when the Quarto CLI is on PATH (the report's front matter sets
  ``embed-resources: true``);
* otherwise a built-in fallback that takes Quarto's route: the .qmd is parsed (YAML front matter,
  markdown, ```{python} cells with ``#|`` options), turned into a notebook with nbformat, executed
  with nbclient (python3 kernel, parameters injected after the cell tagged ``parameters``, as
  papermill and Quarto do), written back as markdown (each cell's outputs as raw HTML or markdown)
  and rendered by pandoc (pypandoc-binary's, a dependency) with Quarto's page skeleton: a title
  block, a side table of contents, ``<section>`` wrappers, Quarto's heading ids
  (:func:`quarto_heading_id`), embedded resources.

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

from mrcbench.errors import Interrupted, MrcbenchError
from mrcbench.provenance import manifest
from mrcbench.runtime import files, layout

log = logging.getLogger(__name__)


# ==================================================================================================
# Rendering
# ==================================================================================================

#: Styles shared by both engines (emitted again by :func:`mrcbench.report.blocks.report_css` inside the document).
REPORT_CSS = """
body, .jp-RenderedHTMLCommon, table.mrc-table { font-family: "Source Serif Pro", Georgia, "Times New Roman",
  "Noto Serif CJK SC", "Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei", serif; }
figure.mrc-figure { margin: 1.2em 0; }
figure.mrc-figure figcaption, p.mrc-caption { font-size: 0.92em; color: #333; margin-top: 0.3em; }
span.mrc-number { font-weight: 600; color: #111; }
figure.mrc-figure, div.mrc-table-block { scroll-margin-top: 1em; }
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


_HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t#]*$")
_HEADING_ATTRIBUTES = re.compile(r"\s*\{([^{}]*)\}\s*$")
_EMPHASIS_UNDERSCORE = re.compile(r"(?<!\w)_+|_+(?!\w)")  # other markup characters go with the punctuation
_MARKDOWN_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_HTML_TAG = re.compile(r"<[^>]+>")


def quarto_heading_id(text: str) -> str:
    """The id Quarto (pandoc's ``auto_identifiers``) gives a heading of this text.

    Formatting and links are dropped; every character that is not alphanumeric (any script), ``_``,
    ``-`` or ``.`` is removed; spaces become hyphens; letters are lowercased; everything up to the
    first letter is dropped; an empty result is ``section``. E.g. "Zone × layer masking" ->
    ``zone--layer-masking``, "Appendix: reproducibility" -> ``appendix-reproducibility``.
    """
    plain = _HTML_TAG.sub("", _MARKDOWN_LINK.sub(r"\1", text))
    plain = _EMPHASIS_UNDERSCORE.sub("", plain)
    kept = "".join(ch for ch in plain if ch.isalnum() or ch in "_-. \t\n")
    kept = re.sub(r"[ \t\n]", "-", kept).lower()
    first_letter = next((i for i, ch in enumerate(kept) if ch.isalpha()), None)
    return kept[first_letter:] if first_letter is not None else "section"


def _heading_lines(markdown: str):
    """(index, level, text, attributes) of every ATX heading outside fenced code blocks."""
    fence: str | None = None
    for index, line in enumerate(markdown.splitlines()):
        stripped = line.strip()
        opening = re.match(r"^(`{3,}|~{3,})", stripped)
        if fence is not None:
            if opening and stripped.startswith(fence) and stripped.strip(fence[0]) == "":
                fence = None
            continue
        if opening:
            fence = opening.group(1)
            continue
        match = _HEADING.match(line)
        if match:
            text, attributes = match.group(2), ""
            found = _HEADING_ATTRIBUTES.search(text)
            if found:
                text, attributes = text[: found.start()], found.group(1)
            yield index, len(match.group(1)), text.strip(), attributes.strip()


def assign_heading_ids(markdown: str, used: set[str] | None = None) -> str:
    """Give every heading without an explicit ``{#id}`` Quarto's id (pandoc adds ``-1``, ``-2`` to a
    repeated one), so that the fallback's section ids equal Quarto's whatever pandoc reader runs."""
    used = set() if used is None else used
    lines = markdown.splitlines()
    for index, level, text, attributes in _heading_lines(markdown):
        explicit = re.search(r"(?:^|\s)#([^\s}]+)", attributes)
        if explicit:
            used.add(explicit.group(1))
            continue
        base = quarto_heading_id(text)
        identifier, suffix = base, 0
        while identifier in used:
            suffix += 1
            identifier = f"{base}-{suffix}"
        used.add(identifier)
        attributes = f"#{identifier} {attributes}".strip()
        lines[index] = f"{'#' * level} {text} {{{attributes}}}"
    return "\n".join(lines)


def document_heading_ids(markdown: str) -> list[tuple[int, str, str]]:
    """(level, text, id) of the headings of a markdown text, ids as :func:`assign_heading_ids` gives them."""
    found = []
    for _, level, text, attributes in _heading_lines(assign_heading_ids(markdown)):
        found.append((level, text, re.search(r"#([^\s}]+)", attributes).group(1)))
    return found


def qmd_to_notebook(document: QmdDocument, params: dict[str, Any]):
    """Build the notebook: markdown cells and code cells tagged from their options.

    The title block and the table of contents are not cells: pandoc writes them from the front matter
    (:func:`render_fallback`), as Quarto does. Tags (read by :func:`notebook_markdown`):
    ``remove_input`` (echo: false), ``remove_output`` (output: false), ``remove_cell`` (include:
    false). The parameters are injected as a new cell right after the cell tagged ``parameters`` (or
    first, when there is none).
    """
    import nbformat

    front = document.front_matter
    echo_default = _execute_option(front, "echo", True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["title"] = str(front.get("title", "Report"))
    injected = False
    figure_number = 0
    for chunk in document.chunks:
        if chunk.kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(chunk.source))
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
            cell.metadata["mrcbench"]["caption"] = f"Figure {figure_number}. {options['fig-cap']}"
        nb.cells.append(cell)
        if "parameters" in tags and not injected:
            nb.cells.append(_parameters_cell(params))
            injected = True
    if not injected and params:
        nb.cells.insert(0, _parameters_cell(params))
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
    """Apply the per-cell options the tags do not carry: ``warning: false``, ``output: asis``, fig-cap."""
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


# ==================================================================================================
# The executed notebook as markdown, and pandoc
# ==================================================================================================

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _fenced(content: str, info: str) -> str:
    """A fenced block longer than any backtick run of ``content`` (plotly.js has some)."""
    longest = max((len(run) for run in re.findall(r"`+", content)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{content.rstrip(chr(10))}\n{fence}"


def _output_markdown(output) -> str:
    """One cell output as markdown: HTML, SVG and images as raw HTML blocks, markdown as it is,
    streams and plain text as code blocks (Quarto's ``cell-output`` classes)."""
    kind = output.get("output_type")
    if kind == "stream":
        text = output.get("text", "")
        if not text.strip():
            return ""
        name = "stderr" if output.get("name") == "stderr" else "stdout"
        return f"::: {{.cell-output .cell-output-{name}}}\n{_fenced(text, '')}\n:::"
    if kind == "error":
        traceback = _ANSI.sub("", "\n".join(output.get("traceback", [])))
        return f"::: {{.cell-output .cell-output-error}}\n{_fenced(traceback, '')}\n:::"
    data = output.get("data", {})

    def text_of(mime: str) -> str:
        value = data[mime]
        return "".join(value) if isinstance(value, list) else str(value)

    if "text/html" in data:
        return _fenced(text_of("text/html"), "{=html}")
    if "text/markdown" in data:
        return text_of("text/markdown")
    if "image/svg+xml" in data:
        return _fenced(text_of("image/svg+xml"), "{=html}")
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            payload = "".join(text_of(mime).split())
            return _fenced(f'<img src="data:{mime};base64,{payload}" alt="">', "{=html}")
    if "application/javascript" in data:
        return _fenced(f"<script>{text_of('application/javascript')}</script>", "{=html}")
    if "text/plain" in data:
        return f"::: {{.cell-output .cell-output-display}}\n{_fenced(text_of('text/plain'), '')}\n:::"
    return ""


def notebook_markdown(nb) -> str:
    """The executed notebook as one markdown document (pandoc's ``commonmark_x``), Quarto's way.

    Markdown cells as they are; each code cell becomes a ``.cell`` div with its source (unless
    ``remove_input``) and its outputs (unless ``remove_output``); ``remove_cell`` drops the cell.
    Headings get Quarto's ids (:func:`assign_heading_ids`).
    """
    parts = []
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", []))
        if "remove_cell" in tags:
            continue
        if cell.cell_type == "markdown":
            parts.append(cell.source)
            continue
        if cell.cell_type != "code":
            continue
        pieces = []
        if "remove_input" not in tags and cell.source.strip():
            pieces.append(_fenced(cell.source, " {.python .cell-code}"))
        if "remove_output" not in tags:
            pieces.extend(text for text in map(_output_markdown, cell.get("outputs", [])) if text.strip())
        if pieces:
            parts.append("::: {.cell}\n" + "\n\n".join(pieces) + "\n:::")
    return assign_heading_ids("\n\n".join(parts) + "\n")


#: The page skeleton of Quarto's HTML format: title block (title, subtitle, author, date), the table
#: of contents in a side column, the document in ``<main>``. Pandoc template syntax.
PANDOC_TEMPLATE = """<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" lang="$lang$" xml:lang="$lang$">
<head>
<meta charset="utf-8" />
<meta name="generator" content="mrcbench report (pandoc)" />
<meta name="viewport" content="width=device-width, initial-scale=1.0, user-scalable=yes" />
$for(author-meta)$
<meta name="author" content="$author-meta$" />
$endfor$
$if(date-meta)$
<meta name="dcterms.date" content="$date-meta$" />
$endif$
<title>$pagetitle$</title>
$if(highlighting-css)$
<style>
$highlighting-css$
</style>
$endif$
$for(header-includes)$
$header-includes$
$endfor$
</head>
<body>
<div id="quarto-content" class="page-columns page-rows-contents page-layout-full">
$if(toc)$
<div id="quarto-margin-sidebar" class="sidebar margin-sidebar">
<nav id="TOC" role="doc-toc" class="toc-active">
<h2 id="toc-title">$toc-title$</h2>
$table-of-contents$
</nav>
</div>
$endif$
<main class="content" id="quarto-document-content">
<header id="title-block-header" class="quarto-title-block default">
<div class="quarto-title">
<h1 class="title">$title$</h1>
$if(subtitle)$
<p class="subtitle lead">$subtitle$</p>
$endif$
</div>
<div class="quarto-title-meta">
$if(author)$
<div>
<div class="quarto-title-meta-heading">Author</div>
<div class="quarto-title-meta-contents">
$for(author)$
<p class="author">$author$</p>
$endfor$
</div>
</div>
$endif$
$if(date)$
<div>
<div class="quarto-title-meta-heading">Published</div>
<div class="quarto-title-meta-contents">
<p class="date">$date$</p>
</div>
</div>
$endif$
</div>
</header>
$body$
</main>
</div>
</body>
</html>
"""

#: The page's theme (the fallback's; Quarto brings its own): a readable serif text column, the
#: table of contents beside it, sticky while the page scrolls.
PAGE_CSS = """
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; color: #212529; background: #fff; font-size: 16px; line-height: 1.55; }
#quarto-content { display: grid; grid-template-columns: minmax(0, 1fr) 240px; column-gap: 2.5em;
  max-width: 1480px; margin: 0 auto; padding: 1.5em 2em 4em; }
main.content { grid-column: 1; grid-row: 1; min-width: 0; }
#quarto-margin-sidebar { grid-column: 2; grid-row: 1; }
#TOC { position: sticky; top: 1em; max-height: calc(100vh - 2em); overflow-y: auto;
  font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 0.85em;
  border-left: 1px solid #dee2e6; padding: 0.2em 0 0.2em 0.9em; }
#TOC h2#toc-title { font-size: 1em; margin: 0 0 0.5em; border: none; }
#TOC ul { list-style: none; margin: 0; padding-left: 0; }
#TOC ul ul { padding-left: 0.9em; }
#TOC li { margin: 0.25em 0; }
#TOC a { color: #495057; text-decoration: none; }
#TOC a:hover { color: #0d6efd; }
header#title-block-header { margin: 0.5em 0 1.8em; padding-bottom: 1em; border-bottom: 1px solid #dee2e6; }
header#title-block-header h1.title { font-size: 2.1em; line-height: 1.2; margin: 0 0 0.3em; }
header#title-block-header p.subtitle { font-size: 1.2em; color: #495057; margin: 0 0 1em; }
.quarto-title-meta { display: flex; gap: 3em; font-size: 0.9em; }
.quarto-title-meta-heading { text-transform: uppercase; font-size: 0.78em; letter-spacing: 0.04em;
  color: #6c757d; font-family: system-ui, sans-serif; }
.quarto-title-meta-contents p { margin: 0.15em 0 0; }
main h2 { border-bottom: 1px solid #dee2e6; padding-bottom: 0.2em; margin-top: 1.8em; }
main section { scroll-margin-top: 1em; }
main a { color: #0d6efd; }
main p, main li { max-width: 52em; }
main code { font-size: 0.9em; background: #f6f8fa; padding: 0.05em 0.25em; border-radius: 3px; }
figure.mrc-figure { overflow-x: auto; }
.cell-output pre, pre.sourceCode { background: #f7f7f7; border: 1px solid #ddd; padding: 0.6em;
  font-size: 12px; overflow: auto; }
@media (max-width: 1100px) {
  #quarto-content { grid-template-columns: minmax(0, 1fr); }
  #quarto-margin-sidebar { grid-column: 1; grid-row: 1; }
  main.content { grid-row: 2; }
  #TOC { position: static; max-height: none; border-left: none; border-bottom: 1px solid #dee2e6;
    padding: 0 0 0.8em; margin-bottom: 1em; }
}
"""

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")


def _display_date(value: Any, qmd: Path | None = None) -> str:
    """The front matter's ``date`` as Quarto shows it: ``today`` (``SOURCE_DATE_EPOCH`` when set, for
    reproducible builds), ``last-modified`` (the .qmd's time), a date, or any text as it is."""
    import datetime as dt

    if value is None or value == "":
        return ""
    when: dt.date | None = None
    if isinstance(value, dt.date):
        when = value
    elif str(value) in ("today", "now", "last-modified"):
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        if str(value) == "last-modified" and qmd is not None and epoch is None:
            seconds = qmd.stat().st_mtime
        else:
            seconds = float(epoch) if epoch and epoch.strip().isdigit() else dt.datetime.now(dt.UTC).timestamp()
        when = dt.datetime.fromtimestamp(seconds, dt.UTC).date()
    else:
        try:
            when = dt.date.fromisoformat(str(value))
        except ValueError:
            return str(value)
    return f"{_MONTHS[when.month - 1]} {when.day}, {when.year}"


def pandoc_binary() -> str:
    """pandoc: pypandoc-binary's bundled one (a dependency), or one on PATH, whichever is newer
    (pypandoc's choice); never downloaded at run time."""
    try:
        import pypandoc

        return pypandoc.get_pandoc_path()
    except (ImportError, OSError):
        found = shutil.which("pandoc")
        if found:
            return found
    raise MrcbenchError("pandoc not found: install the package's dependencies (pip install pypandoc-binary)")


def pandoc_version(pandoc: str) -> tuple[int, ...]:
    result = subprocess.run([pandoc, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"pandoc\S*\s+(\d+(?:\.\d+)*)", result.stdout)
    return tuple(int(part) for part in match.group(1).split(".")) if match else (0,)


def pandoc_html(markdown: str, front: dict[str, Any], resource_dir: Path | None = None,
                qmd: Path | None = None) -> str:
    """One self-contained HTML page from ``commonmark_x`` markdown, the way Quarto calls pandoc:
    ``--standalone`` with the title block of the front matter (title, subtitle, author, date), ``--toc``
    (``toc``/``toc-depth`` of ``format.html``), ``--section-divs`` (each heading opens a ``<section>``
    carrying its id) and ``--embed-resources``."""
    import tempfile

    pandoc = pandoc_binary()
    version = pandoc_version(pandoc)
    if version < (2, 19):
        raise MrcbenchError(f"{pandoc} is pandoc {'.'.join(map(str, version))}; the report needs 2.19 or newer "
                            "(--embed-resources): pip install pypandoc-binary")
    html_format = _html_format(front)
    toc = bool(html_format.get("toc", front.get("toc", False)))
    toc_depth = int(html_format.get("toc-depth", front.get("toc-depth", 3)))
    metadata: dict[str, Any] = {
        "title": str(front.get("title", "Report")),
        "pagetitle": str(front.get("pagetitle", front.get("title", "Report"))),
        "lang": str(front.get("lang", "en")),
        "toc-title": str(html_format.get("toc-title", front.get("toc-title", "On this page"))),
    }
    if front.get("subtitle"):
        metadata["subtitle"] = str(front["subtitle"])
    authors = front.get("author")
    if authors:
        metadata["author"] = [str(a) for a in authors] if isinstance(authors, list) else [str(authors)]
    date = _display_date(front.get("date"), qmd)
    if date:
        metadata["date"] = date
    with tempfile.TemporaryDirectory(prefix="mrcbench-pandoc-") as scratch:
        folder = Path(scratch)
        (folder / "report.markdown").write_text(markdown, encoding="utf-8")
        (folder / "template.html").write_text(PANDOC_TEMPLATE, encoding="utf-8")
        (folder / "header.html").write_text(f"<style>{PAGE_CSS}{REPORT_CSS}</style>\n", encoding="utf-8")
        (folder / "metadata.yaml").write_text(yaml.safe_dump(metadata, allow_unicode=True, sort_keys=True),
                                              encoding="utf-8")
        command = [pandoc, "report.markdown", "--from", "commonmark_x", "--to", "html5", "--standalone",
                   "--template", "template.html", "--include-in-header", "header.html",
                   "--metadata-file", "metadata.yaml", "--section-divs", "--embed-resources",
                   "--wrap", "none", "--output", "report.html"]
        if toc:
            command += ["--toc", f"--toc-depth={toc_depth}"]
        if resource_dir is not None:
            command += ["--resource-path", os.pathsep.join([".", str(resource_dir)])]
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise MrcbenchError(f"pandoc failed (exit status {result.returncode}): {' '.join(tail)}")
        for line in result.stderr.strip().splitlines():
            log.warning("pandoc: %s", line)
        return (folder / "report.html").read_text(encoding="utf-8")


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
    """Render without Quarto: parse, build a notebook, execute it with nbclient, write the executed
    notebook as markdown (:func:`notebook_markdown`) and turn that into one HTML file with pandoc
    (:func:`pandoc_html`), the route Quarto itself takes."""
    import nbformat
    from nbclient.exceptions import CellExecutionError

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
    markdown = notebook_markdown(nb)
    body = pandoc_html(markdown, document.front_matter, resource_dir=qmd.parent.resolve(), qmd=qmd)
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
    log.info("quarto not found: rendering with the built-in fallback (nbclient + pandoc)")
    render_fallback(qmd, out_html, params)
    return "fallback (nbclient + pandoc)"


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
