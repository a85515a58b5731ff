"""The Quarto engine: ``quarto render`` of the .qmd (the report's front matter sets
``embed-resources: true``), used when the Quarto CLI is on PATH."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

from mrcbench.errors import MrcbenchError
from mrcbench.report.engine.notebook import kernel_environment
from mrcbench.runtime import files

log = logging.getLogger(__name__)


def quarto_version(quarto: str) -> str:
    result = subprocess.run([quarto, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown version"


def render_with_quarto(quarto: str, qmd: Path, out_html: Path, params: dict[str, Any]) -> None:
    """``quarto render`` with ``-P key:value`` parameters; the output is moved to ``out_html``.

    Quarto writes next to the .qmd (``--output`` takes a file name, not a path). Its kernel gets the
    environment of the fallback's (:func:`~mrcbench.report.engine.notebook.kernel_environment`).
    """
    produced = qmd.parent / out_html.name
    command = [quarto, "render", str(qmd), "--to", "html", "--output", out_html.name]
    for key, value in params.items():
        command += ["-P", f"{key}:{value}"]
    log.info("%s", " ".join(command))
    result = subprocess.run(command, env=kernel_environment(), capture_output=True, text=True, check=False)
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
