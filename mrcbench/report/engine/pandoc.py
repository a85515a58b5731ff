"""The fallback's last step: the executed notebook's markdown to one self-contained HTML page with
pandoc (pypandoc-binary's, a dependency), the way Quarto calls it, in Quarto's page skeleton: a title
block, a side table of contents, ``<section>`` wrappers, embedded resources."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from mrcbench.errors import MrcbenchError
from mrcbench.report.style import REPORT_CSS

log = logging.getLogger(__name__)

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


def display_date(value: Any, qmd: Path | None = None) -> str:
    """The front matter's ``date`` as Quarto shows it: ``today`` (``SOURCE_DATE_EPOCH`` when set, for
    reproducible builds), ``last-modified`` (the .qmd's time), a date, or any text as it is."""
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
        import pypandoc  # here: without it, a pandoc on PATH will do

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


def _html_format(front: dict[str, Any]) -> dict[str, Any]:
    fmt = front.get("format") or {}
    if isinstance(fmt, dict) and isinstance(fmt.get("html"), dict):
        return fmt["html"]
    return {}


def pandoc_html(markdown: str, front: dict[str, Any], resource_dir: Path | None = None,
                qmd: Path | None = None) -> str:
    """One self-contained HTML page from ``commonmark_x`` markdown, the way Quarto calls pandoc:
    ``--standalone`` with the title block of the front matter (title, subtitle, author, date), ``--toc``
    (``toc``/``toc-depth`` of ``format.html``), ``--section-divs`` (each heading opens a ``<section>``
    carrying its id) and ``--embed-resources``."""
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
    date = display_date(front.get("date"), qmd)
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
