"""Quarto's heading ids, given to every heading of the fallback's markdown, so that its section ids
(and the report's links to them) equal Quarto's whatever pandoc reader runs."""

from __future__ import annotations

import re

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
