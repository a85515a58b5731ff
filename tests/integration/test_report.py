"""The report: .qmd parsing, the fallback renderer end to end, the Quarto branch, figure helpers."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mrcbench import config as cfg
from mrcbench import report, stats
from mrcbench.errors import MrcbenchError
from mrcbench.report import command
from mrcbench.report.engine import external_references, headings, notebook, pandoc, render
from mrcbench.report.engine.qmd import parse_qmd

from support import REPO_ROOT
from support.synthetic_results import write_synthetic_results

REPO = REPO_ROOT
QMD = REPO / "reports" / "report.qmd"
SECTIONS = (
    "Abstract",
    "Setup",
    "Baselines",
    "Zone × layer masking",
    "Controls",
    "Head-level masking",
    "Attention mass by layer and head",
    "Correlations between attention and performance",
    "Cross-lingual consistency",
    "Question types",
    "Case studies",
    "Comparison with the paper",
    "Appendix: reproducibility",
)

TINY_QMD = """---
title: "Tiny"
execute:
  echo: false
---

Intro text.

```{python}
#| tags: [parameters]
value = 1
```

```{python}
#| label: shown
#| echo: true
#| fig-cap: "A caption"
print(value * 2)
```

```bash
echo "not a python cell"
```

```{python}
#| include: false
hidden = True
```
"""


# --------------------------------------------------------------------------------------------------
# Parsing and notebook building
# --------------------------------------------------------------------------------------------------


def test_parse_qmd_splits_front_matter_markdown_and_cells():
    document = parse_qmd(TINY_QMD)
    assert document.front_matter["title"] == "Tiny"
    kinds = [chunk.kind for chunk in document.chunks]
    assert kinds == ["markdown", "code", "code", "markdown", "code"]
    assert document.chunks[1].options == {"tags": ["parameters"]}
    assert document.chunks[2].options == {"label": "shown", "echo": True, "fig-cap": "A caption"}
    assert document.chunks[2].source == "print(value * 2)"
    assert "not a python cell" in document.chunks[3].source  # other fences stay markdown
    with pytest.raises(MrcbenchError, match="never closed"):
        parse_qmd("---\ntitle: x\n")
    with pytest.raises(MrcbenchError, match="never closed"):
        parse_qmd("```{python}\nx = 1\n")


def test_notebook_injects_parameters_and_tags_cells():
    nb = notebook.qmd_to_notebook(parse_qmd(TINY_QMD), {"value": 21})
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code[0].metadata["tags"] == ["parameters", "remove_input"]
    assert code[1].source == "# Parameters injected by mrcbench.report\nvalue = 21"
    assert "injected-parameters" in code[1].metadata["tags"]
    assert "remove_input" not in code[2].metadata["tags"]  # echo: true
    assert code[2].metadata["mrcbench"]["caption"] == "Figure 1. A caption"
    assert "remove_cell" in code[3].metadata["tags"]  # include: false
    assert nb.cells[0].source == "Intro text."  # the title block is pandoc's, not a cell


def test_the_report_qmd_has_a_parameters_cell_and_every_section():
    document = parse_qmd(QMD.read_text(encoding="utf-8"))
    assert document.front_matter["format"]["html"]["embed-resources"] is True
    parameters = [c for c in document.chunks if "parameters" in (c.options.get("tags") or [])]
    assert (
        len(parameters) == 1 and "results_dir" in parameters[0].source and "stats_dir" in parameters[0].source
    )
    headings = [
        line[3:].strip()
        for chunk in document.chunks
        if chunk.kind == "markdown"
        for line in chunk.source.splitlines()
        if line.startswith("## ")
    ]
    assert headings == list(SECTIONS)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_tree(tmp_path_factory) -> Path:
    results = write_synthetic_results(tmp_path_factory.mktemp("report"))
    stats.command.run_stats(results, results / "stats")
    return results


@pytest.fixture(scope="module")
def rendered(synthetic_tree, tmp_path_factory) -> tuple[str, str]:
    out = tmp_path_factory.mktemp("html") / "report.html"
    engine = render(QMD, out, {"results_dir": synthetic_tree}, engine="fallback")
    return engine, out.read_text(encoding="utf-8")


def test_fallback_renders_one_self_contained_html_with_every_section(rendered, synthetic_tree):
    engine, document = rendered
    assert engine.startswith("fallback")
    for section in SECTIONS:
        assert re.search(rf"<h2[^>]*>{re.escape(section)}", document), section
    assert external_references(document) == []
    assert not re.search(r"""<script[^>]+src=["']?https?:""", document)
    assert not re.search(r"""<link[^>]+href=["']?https?:""", document)
    assert document.count("window.__mrcbenchDefine = window.define") == 1  # plotly.js inline, once
    # No cell printed an error or a warning.
    assert "Traceback" not in document and 'data-mime-type="application/vnd.jupyter.stderr"' not in document
    # Figures and tables are there, and the abstract quotes the run's own numbers.
    assert document.count('class="plotly-graph-div"') >= 8
    assert document.count('class="dataframe mrc-table"') >= 8
    baselines = pd.read_parquet(synthetic_tree / "stats" / "baselines.parquet")
    assert set(baselines["model"]) == {"tiny-bert"} and set(baselines["n_seeds"]) == {2}
    assert "We fine-tuned one model (tiny-bert), two seeds each, evaluated it on three evaluation sets" in document
    # One English and one Chinese case study.
    assert 'id="case-study-0"' in document and 'id="case-study-1"' in document
    assert "(en):" in document and "(zh):" in document
    # Parameters were injected, not the defaults of the .qmd.
    assert "Source: attention/tiny-bert/squad_train/seed1/squad_dev" in document
    assert "Fine-tuning seeds: 1, 2;" in document  # experiments.english.seeds of the run's config
    # The abstract answers per leg; grid captions carry their questions and articles (from the tables).
    for eval_set in ("squad_dev", "xquad_en", "xquad_zh"):
        assert f"<strong>tiny-bert on {eval_set}</strong>" in document
    deltas = pd.read_parquet(synthetic_tree / "stats" / "deltas.parquet")
    squad = deltas[deltas["eval_set"] == "squad_dev"].iloc[0]
    assert f"{squad['n_questions']} questions from {squad['n_clusters']} articles; resampled over articles" in document
    # Correlations: every cell listed (no top-k), with corrected p-values.
    assert "the 12 strongest" not in document and "p_holm" in document
    correlations = pd.read_parquet(synthetic_tree / "stats" / "correlations.parquet")
    c3 = correlations[(correlations["analysis"] == "C3") & (correlations["x_quantity"] == "zone_mass")
                      & (correlations["metric"] == "f1") & (correlations["variant"] == "paper")]
    assert f"C3: every layer × zone cell ({len(c3)} rows, F1)" in document


def test_two_renders_of_the_same_results_are_byte_identical(rendered, synthetic_tree, tmp_path):
    _, first = rendered
    out = tmp_path / "again" / "report.html"
    render(QMD, out, {"results_dir": synthetic_tree}, engine="fallback")
    assert out.read_text(encoding="utf-8") == first
    # Every plotly div has an id derived from its figure, not a random uuid.
    ids = re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', first)  # pandoc writes id first
    assert len(ids) == first.count('class="plotly-graph-div"')
    assert ids and all(div_id.startswith("mrc-fig-") for div_id in ids)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_render_rejects_missing_inputs(tmp_path, synthetic_tree):
    out = tmp_path / "report.html"
    with pytest.raises(MrcbenchError, match="report source not found"):
        render(tmp_path / "missing.qmd", out, {"results_dir": synthetic_tree})
    with pytest.raises(MrcbenchError, match="results directory not found"):
        render(QMD, out, {"results_dir": tmp_path / "missing"})
    (tmp_path / "results").mkdir()
    with pytest.raises(MrcbenchError, match="run `mrcbench stats` first"):
        render(QMD, out, {"results_dir": tmp_path / "results"})
    with pytest.raises(MrcbenchError, match="results directory not found"):
        command.main(["--qmd", str(QMD), "--results", str(tmp_path / "missing"), "--out", str(out)])


def test_a_failing_cell_is_reported_with_its_label(tmp_path, synthetic_tree):
    qmd = tmp_path / "broken.qmd"
    qmd.write_text('---\ntitle: x\n---\n\n```{python}\n#| label: boom\nraise ValueError("bad input")\n```\n')
    with pytest.raises(MrcbenchError, match="cell boom failed: ValueError: bad input"):
        render(qmd, tmp_path / "out.html", {"results_dir": synthetic_tree}, engine="fallback")


def test_quarto_is_used_when_on_path(tmp_path, synthetic_tree, monkeypatch, caplog):
    """A stand-in ``quarto`` records its arguments and writes the page where Quarto would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.json"
    fake = bin_dir / "quarto"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "if sys.argv[1:] == ['--version']:\n"
        "    print('1.9.99'); sys.exit(0)\n"
        f"json.dump({{'argv': sys.argv[1:], 'pythonpath': os.environ.get('PYTHONPATH', '')}}, "
        f"open({str(calls)!r}, 'w'))\n"
        "qmd = sys.argv[2]; name = sys.argv[sys.argv.index('--output') + 1]\n"
        "open(os.path.join(os.path.dirname(qmd), name), 'w').write('<html><body>quarto</body></html>')\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    qmd = tmp_path / "src" / "report.qmd"
    qmd.parent.mkdir()
    qmd.write_text(QMD.read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "out" / "final.html"
    with caplog.at_level(logging.INFO, logger="mrcbench.report.engine"):
        engine = render(qmd, out, {"results_dir": synthetic_tree})
    assert engine == "quarto 1.9.99"
    assert "rendering with quarto 1.9.99" in caplog.text
    assert out.read_text() == "<html><body>quarto</body></html>"
    assert not (qmd.parent / "final.html").exists()  # moved, not copied
    recorded = json.loads(calls.read_text())
    argv = recorded["argv"]
    assert argv[:5] == ["render", str(qmd), "--to", "html", "--output"]
    assert f"results_dir:{synthetic_tree.resolve()}" in argv
    assert f"stats_dir:{(synthetic_tree / 'stats').resolve()}" in argv
    assert str(REPO) in recorded["pythonpath"].split(os.pathsep)


def test_fallback_is_announced_when_quarto_is_missing(tmp_path, synthetic_tree, monkeypatch, caplog):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    qmd = tmp_path / "tiny.qmd"
    qmd.write_text(TINY_QMD)
    with caplog.at_level(logging.INFO, logger="mrcbench.report.engine"):
        engine = render(qmd, tmp_path / "tiny.html", {"results_dir": synthetic_tree})
    assert engine.startswith("fallback")
    assert "quarto not found: rendering with the built-in fallback (nbclient + pandoc)" in caplog.text
    document = (tmp_path / "tiny.html").read_text(encoding="utf-8")
    assert '<p class="mrc-caption">Figure 1. A caption</p>' in document
    assert '<span class="bu">print</span>' in document  # echo: true, highlighted by pandoc
    assert '<div class="cell-output cell-output-stdout">\n<pre><code>2</code></pre>' in document
    assert '<h1 class="title">Tiny</h1>' in document
    assert "hidden = True" not in document  # include: false
    assert external_references(document) == []


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def test_external_references_are_detected():
    assert external_references('<script src="https://cdn.example/require.js"></script>')
    assert external_references("<link rel='stylesheet' href='//fonts.example/x.css'>")
    assert external_references("<style>@import url('https://fonts.example/a.css');</style>")
    assert (
        external_references("<script>var u = 'https://plot.ly';</script><a href='https://x'>x</a>")
        == []
    )


def test_seismic_colorscale_is_white_at_zero_blue_below_red_above():
    scale = report.masking.seismic_colorscale(-10.0, 2.0)
    positions = [position for position, _ in scale]
    assert positions[0] == 0.0 and positions[-1] == pytest.approx(1.0) and positions == sorted(positions)
    colours = {round(position, 6): colour for position, colour in scale}
    assert colours[round(10 / 12, 6)] == "rgb(255,255,255)"
    low = [int(v) for v in re.findall(r"\d+", scale[0][1])]
    high = [int(v) for v in re.findall(r"\d+", scale[-1][1])]
    assert low[2] > low[0] and high[0] > high[2]  # blue at -10, red at +2


def test_zone_layer_heatmap_puts_layer_one_at_the_bottom_and_marks_significance():
    cells = pd.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "zone": ["p2p", "q2q", "p2p", "q2q"],
            "delta": [-12.0, 0.1, -1.0, 0.2],
            "significant_holm": [True, False, False, False],
            "significant_bh": [True, False, True, False],
        }
    )
    trace = report.masking.zone_layer_heatmap_trace(cells)
    assert list(trace.x) == ["Q2Q", "P2P"] and list(trace.y) == [1, 2]  # plotly draws y upwards
    assert trace.z[0][1] == -12.0  # raw value kept beyond the colour range
    assert trace.text[0][1] == "*" and trace.text[1][1] == "+" and trace.text[0][0] == ""
    assert (trace.zmin, trace.zmax) == report.blocks.DELTA_RANGE


def test_crop_tokens_keeps_question_specials_and_the_answer():
    zone_ids = [1] + [2] * 5 + [1] + [3] * 200 + [1]
    keep = report.case_studies.crop_tokens(zone_ids, (150, 152), max_tokens=40)
    assert len(keep) == 40
    assert set(range(7)) <= set(keep) and {150, 151, 152, 207} <= set(keep)
    assert report.case_studies.crop_tokens(zone_ids[:20], None, max_tokens=40) == list(range(20))


def test_case_study_widget_embeds_quantised_maps(tmp_path):
    maps = np.random.default_rng(0).dirichlet(np.ones(6), size=(2, 3, 6)).astype(np.float32)
    case = report.case_studies.CaseStudy(
        qid="q1",
        language="en",
        question="Who?",
        tokens=["[CLS]", "who", "[SEP]", "a", "b", "[SEP]"],
        zone_ids=[1, 2, 1, 3, 3, 1],
        answer_span=(3, 3),
        maps=maps,
        source="attention/x",
    )
    fragment = report.case_studies.case_study_html(case, "cs")
    assert 'id="cs-layer"' in fragment and 'id="cs-head"' in fragment
    assert fragment.count("<option") == 2 + 4  # layers, then mean + 3 heads
    payload = json.loads(re.search(r"var P = (\{.*?\});\n", fragment).group(1))
    assert payload["layers"] == 2 and payload["heads"] == 3 and payload["size"] == 6
    assert set(payload["zones"]) == {"Q2Q", "Q2P", "P2Q", "P2P"} and payload["answer"] == [3]
    import base64

    decoded = np.frombuffer(base64.b64decode(payload["data"]), dtype=np.uint8).reshape(2, 4, 6, 6)
    assert np.abs(decoded[:, 1:] / 255.0 - maps).max() <= 0.5 / 255 + 1e-6
    assert np.abs(decoded[:, 0] / 255.0 - maps.mean(axis=1)).max() <= 0.5 / 255 + 1e-6


def test_case_study_tokens_cannot_break_out_of_the_inline_script():
    maps = np.full((1, 1, 5, 5), 0.2, dtype=np.float32)
    case = report.case_studies.CaseStudy(
        qid="q</script><script>alert(1)</script>", language="en", question="Who?",
        tokens=["[CLS]", "</script><script>alert(1)</script>", "[SEP]", "<!--a", "[SEP]"],
        zone_ids=[1, 2, 1, 3, 1], answer_span=(3, 3), maps=maps, source="attention/x",
    )
    fragment = report.case_studies.case_study_html(case, "cs")
    # One inline script, closed once, and no raw "<" in its data.
    script = fragment.split("<script>", 1)[1]
    assert script.count("</script>") == 1 and script.endswith("</script>") and "<!--" not in script
    payload_json = re.search(r"var P = (\{.*?\});\n", fragment).group(1)
    assert "<" not in payload_json
    payload = json.loads(payload_json)
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in payload["labels"][1]


def test_appendix_reads_the_seeds_where_the_schema_keeps_them():
    """experiments.<name>.seeds (the schema allows no top-level seeds); the default where unset."""
    import yaml

    root = REPO_ROOT
    seeds = report.appendix.fine_tuning_seeds
    assert seeds({"experiments": {"english": {"seeds": [7]}, "crosslingual": {"seeds": [7]}}}) == "7"
    assert seeds({"experiments": {"english": {"seeds": [1, 2, 3]}, "crosslingual": {}}}) == (
        f"english: 1, 2, 3 | crosslingual: {', '.join(map(str, cfg.experiment_seeds({})))}"
    )
    assert seeds({"seeds": [5]}) == seeds({}) == seeds(None) == "not recorded"
    smoke = yaml.safe_load((root / "config" / "smoke.yaml").read_text())
    assert seeds(smoke) == "7"
    qmd = (root / "reports" / "report.qmd").read_text()
    assert "R.appendix.fine_tuning_seeds(data.config)" in qmd and "config.get('seeds'" not in qmd


def test_appendix_helpers_tolerate_missing_files(tmp_path, synthetic_tree):
    assert report.appendix.data_provenance(tmp_path).empty
    assert report.appendix.benchmark_table(tmp_path).empty
    assert report.appendix.git_commit(tmp_path).startswith("not recorded")
    provenance = report.appendix.data_provenance(synthetic_tree)
    assert set(provenance["split"]) == {"squad_dev", "xquad_en", "xquad_zh"}
    assert provenance["sha256"].str.len().eq(64).all()
    assert provenance.set_index("split").loc["xquad_en", "source_file"].endswith(".json")
    benchmarks = report.appendix.benchmark_table(synthetic_tree)
    assert set(benchmarks["rule"]) == {"predict", "finetune"}
    assert benchmarks.set_index("rule").loc["predict", "jobs"] == 6
    versions = report.appendix.package_versions()
    assert {"python", "numpy", "plotly"} <= set(versions["package"])


# --------------------------------------------------------------------------------------------------
# The abstract's per-leg answer
# --------------------------------------------------------------------------------------------------


def _headline(effects: dict[tuple[str, int], float], eval_set: str = "dev", n_articles: int = 20) -> pd.DataFrame:
    """The headline table of a planted zone x layer grid (6 layers, 10 questions per article)."""
    rng = np.random.default_rng(5)
    n = n_articles * 10
    qids, articles = [f"q{i}" for i in range(n)], [f"a{i // 10}" for i in range(n)]
    baseline = rng.uniform(40, 100, n)
    keys = {"model": "m", "train_set": "t", "eval_set": eval_set, "seed": 0, "variant": "paper"}
    frames = [pd.DataFrame({**keys, "mode": "baseline", "layer": -1, "head": -1, "zone": "none", "qid": qids,
                            "article": articles, "em": 0.0, "f1": baseline, "removed_mass": 0.0})]
    for layer in range(6):
        for zone in ("all", "q2q", "q2p", "p2q", "p2p"):
            masked = baseline + effects.get((zone, layer), 0.0) + rng.normal(0, 6.0, n)
            frames.append(pd.DataFrame({**keys, "mode": "layer", "layer": layer, "head": -1, "zone": zone,
                                        "qid": qids, "article": articles, "em": 0.0, "f1": masked,
                                        "removed_mass": 0.5}))
    settings = cfg.stats_config({"stats": {"seed": 1, "bootstrap": 500, "permutations": 1999}})
    deltas, _ = stats.deltas.compute_deltas(stats.deltas.build_question_matrices(pd.concat(frames)), settings)
    return stats.headline.headline_zones(deltas)


def test_abstract_sentence_names_the_planted_zones_and_agrees():
    sentences = report.abstract.headline_sentences(_headline({("p2q", 4): -9.0, ("p2p", 0): -14.0}), min_clusters=10)
    assert len(sentences) == 1
    text = sentences[0]
    assert text.index("P2P in layer 1") < text.index("P2Q in layer 5")
    assert text.count("significant after Holm correction") == 2 and "no significant difference" not in text
    assert "This agrees with the paper's answer, P2Q + P2P." in text
    assert "200 questions from 20 articles; resampled over articles" in text
    assert re.search(r"ΔF1 = -1\d\.\d \[-\d+\.\d, -\d+\.\d\]", text)  # the delta with its CI


def test_abstract_sentence_says_no_significant_difference_without_an_effect():
    text = report.abstract.headline_sentences(_headline({}, n_articles=6), min_clusters=10)[0]
    assert text.count("no significant difference") >= 1 and "significant after Holm correction" not in text
    assert "neither confirm nor refute" in text
    assert "60 questions from 6 articles; resampled over questions (fewer than 10 articles)" in text
    other = report.abstract.headline_sentences(_headline({("q2q", 2): -15.0, ("p2p", 3): -10.0}))[0]
    assert other.index("Q2Q in layer 3") < other.index("P2P in layer 4")
    assert "This differs from the paper's answer" in other
    assert report.abstract.headline_sentences(pd.DataFrame()) == []


def test_grid_counts_reads_the_tables():
    rows = pd.DataFrame({"n_questions": [100, 60], "n_clusters": [33, 4], "resampling": ["article", "question"]})
    assert report.blocks.grid_counts(rows.iloc[:1]) == "100 questions from 33 articles; resampled over articles"
    assert report.blocks.grid_counts(rows.iloc[1:], 10) == (
        "60 questions from 4 articles; resampled over questions (fewer than 10 articles)"
    )
    assert report.blocks.grid_counts(rows).startswith("60–100 questions from 4–33 articles")


# --------------------------------------------------------------------------------------------------
# The Controls section and the abstract's clause on them
# --------------------------------------------------------------------------------------------------


def _control_tables(grid=None, uniform: bool = True) -> dict[str, pd.DataFrame]:
    """Every controls table of a planted grid (default: tests/unit/test_controls.py's grid_with_controls: P2Q beyond
    its valid null at its worst layer 1 (1-based), Q2P no more than its null, P2P's null infeasible and
    uniform harmless at its worst layer), through the same chain as ``mrcbench stats``."""
    from support.planted_controls import FINE, grid_with_controls

    grid = grid_with_controls(uniform=uniform) if grid is None else grid
    deltas, _ = stats.deltas.compute_deltas(stats.deltas.build_question_matrices(stats.results.paper_cells(grid)),
                                            FINE)
    nulls = stats.controls.compute_null_contrasts(grid, FINE)
    operators = stats.controls.compute_operator_contrasts(grid, FINE)
    effects = stats.controls.compute_control_effects(grid, deltas, nulls, operators, FINE)
    return {"null_contrasts": nulls, "operator_contrasts": operators, "control_effects": effects,
            "specificity": stats.controls.compute_specificity(effects, FINE), "headline": stats.headline.headline_zones(deltas)}


def test_verdict_table_words_each_zone_at_its_most_damaging_layer():
    tables = _control_tables()
    table = report.controls.verdict_table(tables["specificity"], tables["headline"]).set_index("zone")
    assert list(table.index) == ["P2Q", "P2P"]  # the paper's two zones, also the headline's top two here
    assert table.loc["P2Q", "layer"] == 1 and table.loc["P2Q", "control"] == "size-matched null"
    assert table.loc["P2Q", "verdict"] == "specific (beyond a size-matched null in layer 1)"
    assert re.match(r"zone − null ΔF1 -1\d\.\d \[-\d+\.\d, -\d+\.\d\], Holm p [<=] .*\(100% of questions matched\)",
                    table.loc["P2Q", "control result"])
    with_q2p = report.controls.verdict_table(tables["specificity"], zones=("q2p",)).set_index("zone")
    assert with_q2p.loc["Q2P", "verdict"] == "mass-driven (no more than its null)"
    assert table.loc["P2P", "control"] == "uniform (null matched on 0% of questions)"
    assert table.loc["P2P", "verdict"] == "the amount matters (uniform harmless)"
    none = report.controls.verdict_table(_control_tables(uniform=False)["specificity"]).set_index("zone")
    assert none.loc["P2P", "verdict"] == "no valid control" and none.loc["P2P", "control"] == "none"


def test_abstract_states_the_planted_verdicts_in_a_few_sentences_and_a_table():
    """Today's failure in miniature (tests/unit/test_controls.py::planted_grid): P2Q specific in layers 2-4
    (1-based) where 5-8% of its null draws miss; the abstract must say specific, never "exceeds ... in none"."""
    from support.planted_controls import planted_grid

    tables = _control_tables(planted_grid(p2p_uniform=(2, 10, 20, 8, 4, 0)))
    data = report.inputs.ReportData(Path("."), Path("."), tables, {}, {"min_clusters": 10})
    data.tables["baselines"] = pd.DataFrame({"model": ["m"], "eval_set": ["e"], "n_seeds": [1], "metric": ["f1"]})
    prose = report.abstract.abstract_markdown(data)
    frame, caption = report.abstract.abstract_table(data)
    table = frame.to_csv(sep="|", index=False)
    assert len(prose.split()) <= 200 and "(s)" not in prose and "nan" not in (prose + table).lower()
    assert "We fine-tuned one model (m), one seed each, evaluated it on one evaluation set" in prose
    assert "P2Q: specific (beyond a size-matched null) in the one grid" in prose
    assert "P2P: the pattern matters (uniform as damaging as removal) in the one grid" in prose
    assert "m|e|P2Q|3|" in table and "specific (beyond a size-matched null in layers 2, 3, 4)" in table
    assert "in none" not in prose + table and caption.startswith("Read the verdict column first.")


def test_figure_html_is_the_same_bytes_whichever_json_engine_plotly_would_pick(monkeypatch):
    """plotly's "auto" engine is orjson where installed (UTF-8) and json otherwise (escaped): the report
    pins one, so another environment renders the same results to the same bytes."""
    import importlib.util

    import plotly.graph_objects as go
    import plotly.io

    figure = go.Figure(go.Scatter(x=[1, 2], y=[0.5, -0.25], name="ΔF1"), layout={"title": "P2Q · ΔF1"})
    engines = ["json", "auto"] + (["orjson"] if importlib.util.find_spec("orjson") else [])
    rendered = set()
    for engine in engines:
        monkeypatch.setattr(plotly.io.json.config, "default_engine", engine)
        rendered.add(report.blocks.figure_html(figure, "caption"))
        assert plotly.io.json.config.default_engine == engine  # restored after the figure
    assert len(rendered) == 1
    assert "\\u0394F1" in rendered.pop()


def test_controls_section_shows_zone_beside_null_and_operator_profiles_with_captions():
    tables = _control_tables()
    data = report.inputs.ReportData(Path("."), Path("."), tables, {},
                                    {"null_tolerance": 0.1, "min_clusters": 10, "min_null_feasible_share": 0.9,
                                     "null_contrast_correction_family": ["model", "metric"]})
    document = report.controls.controls_section_html(data, "paper")
    assert document.count('<figure class="mrc-figure"') == 3  # overview, zone vs null, operator profiles
    assert document.index("under uniform, which keeps the zone") < document.index("zone vs size-matched null")
    assert "1 null draw per cell, tolerance ±10% of the zone's mass per row" in document
    assert "at least 90% of its questions' draws matched" in document
    assert "no valid null (too few questions whose draw matched the zone's mass): P2P in layers 1, 2" in document
    # figure titles sit in the figure's JSON, which escapes non-ASCII (report.blocks.PLOTLY_JSON_ENGINE)
    assert json.dumps("operator profiles (ΔF1)")[1:-1] in document
    assert "renorm: the paper's blank; uniform, zero" in document
    assert "The controls of P2Q and P2P per layer" in document and "No grid has" not in document
    # the figures draw the tables' numbers
    nulls = tables["null_contrasts"]
    p2q = nulls[(nulls.metric == "f1") & (nulls.zone == "p2q")].sort_values("layer")
    figure = report.controls.null_figure(nulls)
    zone_trace = next(t for t in figure.data if t.name == "zone" and t.hovertemplate.startswith("P2Q layer"))
    assert np.allclose(zone_trace.y, p2q["zone_delta"])
    effects = tables["control_effects"]
    overview = report.controls.overview_figure(effects, "paper")
    p2p = effects[(effects.measure == "f1") & (effects.zone == "p2p")].sort_values("layer")
    uniform = [t for t in overview.data if t.name == "uniform (mass kept)"]
    assert len(uniform) == 2 and np.allclose(uniform[1].y, p2p["uniform_delta"])
    empty = report.inputs.ReportData(Path("."), Path("."), {}, {}, {})
    text = report.controls.controls_section_html(empty)
    assert "No grid has size-matched null cells" in text and "other than <code>renorm</code>" in text


# --------------------------------------------------------------------------------------------------
# The fallback's page: pandoc with Quarto's skeleton
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "identifier"),
    [
        ("Zone × layer masking", "zone--layer-masking"),
        ("Appendix: reproducibility", "appendix-reproducibility"),
        ("Cross-lingual consistency", "cross-lingual-consistency"),
        ("3.5 Question types", "question-types"),
        ("The `p_holm` column and *emphasis*", "the-p_holm-column-and-emphasis"),
        ("Ranks v1.2 [linked](https://x.example)", "ranks-v1.2-linked"),
        ("中文 标题", "中文-标题"),
        ("2024", "section"),
    ],
)
def test_quarto_heading_id_follows_pandoc_auto_identifiers(heading, identifier):
    assert headings.quarto_heading_id(heading) == identifier


def test_headings_get_quarto_ids_explicit_ones_kept_and_repeats_numbered():
    markdown = "## Abstract\n\n```\n## not a heading\n```\n\n## Setup {#sec-setup .unnumbered}\n\n## Abstract\n"
    assert headings.document_heading_ids(markdown) == [
        (2, "Abstract", "abstract"), (2, "Setup", "sec-setup"), (2, "Abstract", "abstract-1")]
    assert "## not a heading\n" in headings.assign_heading_ids(markdown)


def test_display_date_reads_today_from_source_date_epoch(monkeypatch):
    import datetime as dt

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert pandoc.display_date("today") == "November 14, 2023"
    assert pandoc.display_date(dt.date(2022, 3, 1)) == "March 1, 2022"
    assert pandoc.display_date("2022-03-01") == "March 1, 2022"
    assert pandoc.display_date("spring 2022") == "spring 2022"
    assert pandoc.display_date(None) == ""


def test_fallback_page_has_quartos_skeleton(rendered):
    """Title block (title, subtitle, date), side TOC, one <section> per heading with Quarto's id, and
    every TOC link landing on a section."""
    _, document = rendered
    front = parse_qmd(QMD.read_text(encoding="utf-8")).front_matter
    assert '<header id="title-block-header" class="quarto-title-block default">' in document
    assert f'<h1 class="title">{front["title"]}</h1>' in document
    assert '<p class="subtitle lead">A reproduction and extension of Cui et al.' in document
    assert re.search(r'<p class="date">[A-Z][a-z]+ \d{1,2}, \d{4}</p>', document)
    assert '<nav id="TOC" role="doc-toc"' in document
    sections = re.findall(r'<section id="([^"]+)" class="level2[^"]*">\s*<h2[^>]*>([^<]+)</h2>', document)
    assert [title for _, title in sections] == list(SECTIONS)
    assert all(identifier == headings.quarto_heading_id(title) for identifier, title in sections)
    assert ("zone--layer-masking", "Zone × layer masking") in sections
    toc = document[document.index('<nav id="TOC"'):document.index("</nav>")]
    targets = re.findall(r'<a href="#([^"]+)"', toc)
    assert targets == [identifier for identifier, _ in sections]
    assert document.count("<h1") == 1  # the title; sections start at h2


# --------------------------------------------------------------------------------------------------
# Numbers, captions and words
# --------------------------------------------------------------------------------------------------


def test_captions_are_numbered_per_kind_and_carry_their_anchor():
    numbering = report.blocks.Numbering()
    first = numbering.caption("figure", "Look first at P2P.")
    assert first == '<span class="mrc-number">Figure 1.</span> Look first at P2P.' and first.anchor == "fig-1"
    assert numbering.caption("table", "Read the verdict first.").anchor == "tbl-1"
    assert numbering.ref("zone-layer") == '<a href="#fig-zone-layer">Figure 2</a>'  # forward reference
    labelled = numbering.caption("figure", "x", label="zone-layer")
    assert labelled.startswith('<span class="mrc-number">Figure 2.</span>') and labelled.anchor == "fig-zone-layer"
    assert numbering.caption("figure", "y").startswith('<span class="mrc-number">Figure 3.</span>')
    numbering.reset()
    assert numbering.caption("table", "z").startswith('<span class="mrc-number">Table 1.</span>')
    with pytest.raises(ValueError):
        numbering.caption("chart", "z")


def test_figure_and_table_html_put_the_caption_anchor_on_their_block():
    import plotly.graph_objects as go

    report.blocks.reset_numbering()
    figure = report.blocks.figure_html(go.Figure(go.Bar(x=[1], y=[2])), report.blocks.figure_caption("a"))
    assert figure.startswith('<figure class="mrc-figure" id="fig-1">')
    assert '<figcaption><span class="mrc-number">Figure 1.</span> a</figcaption>' in figure
    table = report.blocks.table_html(pd.DataFrame({"x": [1.5]}), report.blocks.table_caption("b"))
    assert table.startswith('<div class="mrc-table-block" id="tbl-1"><p class="mrc-caption">'
                            '<span class="mrc-number">Table 1.</span> b</p><table')
    assert report.blocks.table_html(pd.DataFrame({"x": [1]}), "plain").startswith('<div class="mrc-table-block">')


def test_tables_print_missing_values_as_a_dash_and_config_integers_as_integers():
    frame = pd.DataFrame({"text": ["a", None], "count": pd.array([240, None], dtype="Int64"), "value": [1.5, np.nan]})
    document = report.blocks.table_html(frame)
    assert "None" not in document and "&lt;NA&gt;" not in document and document.count("<td>–</td>") == 3
    splits = report.setup._integers_as_integers(pd.DataFrame(
        [{"split": "a", "max_questions": 240.0}, {"split": "b", "max_questions": np.nan}]))
    assert str(splits["max_questions"].dtype) == "Int64"
    rendered = report.blocks.table_html(splits)
    assert "<td>240</td>" in rendered and "240.00" not in rendered


def test_words_counts_ranges_and_layers():
    assert report.blocks.plural(1, "model") == "1 model"
    assert report.blocks.plural(2, "set") == "2 sets"
    assert report.blocks.plural(3, "analysis", "analyses") == "3 analyses"
    assert report.blocks.fmt_range(0.47, 0.4701) == "0.47"
    assert report.blocks.fmt_range(0.11, 0.31) == "0.11 to 0.31"
    assert report.blocks.layer_number(0) == 1
    frame = report.blocks.format_p_columns(pd.DataFrame({"p_value": [0.0001], "pearson_p": [0.25], "delta": [0.5]}))
    assert frame.to_dict("records") == [{"p_value": "<0.001", "pearson_p": "0.250", "delta": 0.5}]


def test_strongest_drop_names_the_darkest_cell_with_layers_and_heads_from_one():
    cells = pd.DataFrame({"mode": ["layer"] * 3, "metric": ["f1"] * 3, "variant": ["paper"] * 3,
                          "zone": ["p2q", "p2p", "q2q"], "layer": [0, 2, 1], "head": [-1] * 3,
                          "delta": [-3.0, -7.25, 0.5]})
    assert report.masking.strongest_drop_text(cells, "f1", "paper") == (
        "Look first at the darkest blue cell: masking P2P in layer 3 costs 7.2 F1 points (paper variant).")
    heads = cells.assign(mode="head", head=[0, 3, 1])
    assert "P2P in layer 3, head 4 costs" in report.masking.strongest_drop_text(heads, "f1")
    assert report.masking.strongest_drop_text(cells.assign(delta=[0.0, 0.5, 1.0]), "f1") == (
        "No cell lowers F1; look at the red cells, gains of up to 1.0 points.")
    assert report.masking.strongest_drop_text(cells.assign(delta=0.0), "f1").startswith("Masking changes no F1 score")


def test_notebook_markdown_keeps_every_output_and_fences_raw_html_safely():
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("## Zone × layer masking"),
        nbformat.v4.new_code_cell("show()", outputs=[
            nbformat.v4.new_output("display_data", data={"text/html": "<script>var s = `a\n```\nb`;</script>"}),
            nbformat.v4.new_output("display_data", data={"text/markdown": "**bold** text"}),
            nbformat.v4.new_output("stream", name="stdout", text="printed\n"),
            nbformat.v4.new_output("display_data", data={"image/png": "aGVsbG8=\n", "text/plain": "<Figure>"}),
        ]),
        nbformat.v4.new_code_cell("hidden = 1", outputs=[]),
    ]
    nb.cells[1].metadata["tags"] = ["remove_input"]
    nb.cells[2].metadata["tags"] = ["remove_cell"]
    markdown = notebook.notebook_markdown(nb)
    assert markdown.startswith("## Zone × layer masking {#zone--layer-masking}")
    assert "````{=html}\n<script>var s = `a\n```\nb`;</script>\n````" in markdown  # longer than any run inside
    assert "**bold** text" in markdown and "show()" not in markdown and "hidden" not in markdown
    assert "::: {.cell-output .cell-output-stdout}\n```\nprinted\n```\n:::" in markdown
    assert '<img src="data:image/png;base64,aGVsbG8=" alt="">' in markdown
    page = pandoc.pandoc_html(markdown, {"title": "T", "format": {"html": {"toc": True}}})
    assert "<script>var s = `a\n```\nb`;</script>" in page and "<strong>bold</strong>" in page
    assert '<section id="zone--layer-masking" class="level2">' in page and '<nav id="TOC"' in page


@pytest.mark.parametrize(("table", "damage", "needle"), [
    ("baselines.parquet", "delete", "missing; `mrcbench stats` writes it"),
    ("headline.parquet", "delete", "missing; `mrcbench stats` writes it"),
    ("zone_mass.parquet", "empty", "unreadable ("),
    ("settings.json", "delete", "missing; `mrcbench stats` writes it"),
])
def test_report_refuses_a_missing_or_unreadable_table_in_one_line(synthetic_tree, tmp_path, capsys, table, damage,
                                                                   needle):
    import shutil

    from mrcbench import cli

    results = tmp_path / "results"
    shutil.copytree(synthetic_tree / "stats", results / "stats")
    path = results / "stats" / table
    if damage == "delete":
        path.unlink()
    else:
        path.write_bytes(b"")
    out = tmp_path / "report.html"
    code = cli.main(["report", "--qmd", str(QMD), "--results", str(results), "--out", str(out), "--engine", "fallback"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert err.count("\n") == 0 and err.startswith(f"error: {path}: ") and needle in err
    # The report's own first cell refuses it the same way (a notebook run outside the CLI).
    with pytest.raises(MrcbenchError, match=needle.replace("(", r"\(")):
        report.inputs.load_report_data(results)
