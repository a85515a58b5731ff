"""A Quarto document (.qmd) parsed: YAML front matter, markdown chunks and ```{python} cells with
their ``#|`` options."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from mrcbench.errors import MrcbenchError


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
