"""The rendering engine: ``reports/report.qmd`` to one self-contained HTML file (:func:`render`).

Two engines render the same .qmd:

* ``quarto render`` when the Quarto CLI is on PATH (:mod:`~mrcbench.report.engine.quarto`);
* otherwise a built-in fallback (:func:`render_fallback`) that takes Quarto's route: the .qmd is
  parsed (:mod:`~mrcbench.report.engine.qmd`), turned into a notebook, executed with nbclient and
  written back as markdown (:mod:`~mrcbench.report.engine.notebook`), its headings given Quarto's ids
  (:mod:`~mrcbench.report.engine.headings`), and rendered by pandoc with Quarto's page skeleton
  (:mod:`~mrcbench.report.engine.pandoc`).

Either way the page must work offline (:func:`external_references`). Knows nothing of the figures:
the report's cells call the section modules of :mod:`mrcbench.report`; ``mrcbench report`` is
:mod:`mrcbench.report.command`.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from mrcbench.errors import MrcbenchError
from mrcbench.report.engine import notebook, pandoc
from mrcbench.report.engine.qmd import parse_qmd
from mrcbench.report.engine.quarto import quarto_version, render_with_quarto
from mrcbench.runtime import files, layout

log = logging.getLogger(__name__)

_EXTERNAL_REFERENCE = re.compile(
    r"""<(?:script|img|iframe)\b[^>]*\bsrc\s*=\s*["']?(?:https?:)?//[^"'\s>]+"""
    r"""|<link\b[^>]*\bhref\s*=\s*["']?(?:https?:)?//[^"'\s>]+"""
    r"""|@import\s+(?:url\()?\s*["']?(?:https?:)?//[^"')\s]+""",
    re.IGNORECASE,
)


def external_references(document: str) -> list[str]:
    """Scripts, styles, images or imports the HTML would fetch from the network (must be none)."""
    return [match.group(0)[:160] for match in _EXTERNAL_REFERENCE.finditer(document)]


def render_fallback(qmd: Path, out_html: Path, params: dict[str, Any], timeout: int = 900) -> None:
    """Render without Quarto, the route Quarto itself takes: parse the .qmd, build a notebook, execute
    it with nbclient, write the executed notebook as markdown and turn that into one HTML file with
    pandoc; the page is written only if it references nothing on the network."""
    document = parse_qmd(qmd.read_text(encoding="utf-8"), source=str(qmd))
    nb = notebook.qmd_to_notebook(document, params)
    notebook.execute(nb, qmd, timeout)
    notebook.postprocess_outputs(nb)
    markdown = notebook.notebook_markdown(nb)
    body = pandoc.pandoc_html(markdown, document.front_matter, resource_dir=qmd.parent.resolve(), qmd=qmd)
    offending = external_references(body)
    if offending:
        raise MrcbenchError(f"{qmd}: the rendered HTML still references the network: {offending[0]}")
    files.write_text(out_html, body)


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
        offending = external_references(out_html.read_text(encoding="utf-8"))
        if offending:
            raise MrcbenchError(f"{out_html}: the rendered HTML still references the network: {offending[0]}")
        return f"quarto {version}"
    log.info("quarto not found: rendering with the built-in fallback (nbclient + pandoc)")
    render_fallback(qmd, out_html, params)
    return "fallback (nbclient + pandoc)"
