"""The report as a notebook: built from the parsed .qmd, executed with nbclient, written back as markdown.

The notebook takes Quarto's route: cells tagged from their ``#|`` options, the parameters injected
after the cell tagged ``parameters`` (as papermill and Quarto do), executed in a python3 kernel, and
each cell's outputs written as raw HTML or markdown with Quarto's ``cell-output`` classes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import html
import logging
import os
import re
import signal
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import mrcbench
from mrcbench.errors import Interrupted, MrcbenchError
from mrcbench.report.engine.headings import assign_heading_ids
from mrcbench.report.engine.qmd import QmdDocument

log = logging.getLogger(__name__)


def _execute_option(front: dict[str, Any], key: str, default: Any) -> Any:
    return (front.get("execute") or {}).get(key, default)


def qmd_to_notebook(document: QmdDocument, params: dict[str, Any]):
    """Build the notebook: markdown cells and code cells tagged from their options.

    The title block and the table of contents are not cells: pandoc writes them from the front matter
    (:func:`mrcbench.report.engine.pandoc.pandoc_html`), as Quarto does. Tags (read by :func:`notebook_markdown`):
    ``remove_input`` (echo: false), ``remove_output`` (output: false), ``remove_cell`` (include:
    false). The parameters are injected as a new cell right after the cell tagged ``parameters`` (or
    first, when there is none).
    """
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
    lines = ["# Parameters injected by mrcbench.report"] + [
        f"{key} = {value!r}" for key, value in params.items()
    ]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters", "remove_cell"]
    return cell


def postprocess_outputs(nb) -> None:
    """Apply the per-cell options the tags do not carry: ``warning: false``, ``output: asis``, fig-cap."""
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
# Execution
# ==================================================================================================


def kernel_environment() -> dict[str, str]:
    """The environment of the kernel that runs the report's cells (this process's, so the same CPU
    kernels: mrcbench/runtime/kernels.py), with this mrcbench importable even when it is not installed."""
    env = dict(os.environ)
    package_root = str(Path(mrcbench.__file__).resolve().parents[1])  # the folder of mrcbench/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


class InterruptibleClient(NotebookClient):
    """nbclient's ``NotebookClient`` that also records which signal (SIGINT, SIGTERM) stopped it.

    nbclient handles both signals itself during execution (it shuts the kernel down, so no kernel is
    left behind); this subclass keeps that and remembers the signal, so that the failure it causes is
    reported as an interrupt, not as a dead kernel.
    """

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


def execute(nb, qmd: Path, timeout: int) -> None:
    """Run the notebook's cells in a python3 kernel started in the .qmd's folder (nbclient), outputs
    kept in ``nb``. A failing cell is one line naming its label; Ctrl-C or SIGTERM is :class:`Interrupted`."""
    nbformat.validate(nb)
    client = InterruptibleClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        resources={"metadata": {"path": str(qmd.parent.resolve())}},
    )
    try:
        client.execute(env=kernel_environment())
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


# ==================================================================================================
# The executed notebook as markdown
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
    Headings get Quarto's ids (:func:`~mrcbench.report.engine.headings.assign_heading_ids`).
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
