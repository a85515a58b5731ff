"""``mrcbench compare``'s verdict (identical / equivalent / differs), the reference tables it reads
(``mrcbench reference export``), and its refusals of inputs it cannot compare."""
import hashlib
import json
import os
import shutil
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mrcbench.cli import main as cli
from mrcbench.provenance import environment, manifest
from mrcbench.provenance.compare import MEANING, column_class, tolerance_table
from mrcbench.report import appendix

from support import REPO_ROOT
from support.tiny_run import CHECKPOINT, RUN, compare, copy_run, run_config


@pytest.fixture()
def run(tiny_run) -> Path:
    """The tiny run with its manifest."""
    manifest.write(tiny_run, run_config())
    return tiny_run


def _perturb_floats(results: Path, relative: float = 3e-7) -> None:
    """What another CPU does: every float not a score moves in its last bits; answers, scores, decisions stay."""
    deltas = pd.read_parquet(results / "stats" / "deltas.parquet")
    for column in ("delta", "p_holm", "removed_mass", "new_float"):
        deltas[column] = deltas[column] * (1 + relative)
    deltas.to_parquet(results / "stats" / "deltas.parquet", index=False)
    deltas.to_csv(results / "stats" / "deltas.csv", index=False)
    odds = json.loads((results / RUN / "null_odds.json").read_text(encoding="utf-8"))
    (results / RUN / "null_odds.json").write_text(json.dumps({q: v * (1 + relative) for q, v in odds.items()}),
                                                 encoding="utf-8")
    metrics = json.loads((results / RUN / "metrics.json").read_text(encoding="utf-8"))
    metrics["best_f1_thresh"] *= 1 + relative
    (results / RUN / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    weights = results / CHECKPOINT / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")


# --------------------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------------------


def test_columns_are_meaning_or_floats_by_one_declaration():
    assert column_class("stats/deltas.parquet", "significant_holm", False) == MEANING
    assert column_class("stats/specificity.parquet", "verdict", False) == MEANING
    assert column_class(f"{RUN}/scores.parquet", "f1", True) == MEANING
    assert column_class(f"{RUN}/metrics.json", "HasAns_exact", True) == MEANING
    assert column_class(f"{RUN}/metrics.json", "best_f1_thresh", True) == "logit"
    assert column_class(f"{RUN}/null_odds.json", "value", True) == "logit"
    assert column_class("stats/zone_mass.parquet", "mass", True) == "mass"
    assert column_class("stats/correlations.parquet", "spearman_rho", True) == "correlation"
    assert column_class("stats/deltas.parquet", "p_bh", True) == "p_value"
    # A column added later is judged by its type: a string or flag is meaning, a float has the default.
    assert column_class("stats/null_contrasts.parquet", "valid_control", False) == MEANING
    assert column_class("stats/null_contrasts.parquet", "feasible_share_new", True) == "mass"
    assert column_class("stats/specificity.parquet", "some_new_statistic", True) == "default"
    table = {row["class"]: row for row in tolerance_table()}
    assert table["mass"]["tolerance"] == "abs 1e-05" and "*mass*" in table["mass"]["columns"]
    assert table["default"]["columns"] == "(any other float)" and table["default"]["why"]


def test_float_noise_with_every_answer_and_decision_kept_is_equivalent(run, tmp_path, capsys):
    other = copy_run(run, tmp_path / "b")
    _perturb_floats(other)
    code, out = compare(capsys, run, other)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[-1].startswith("equivalent: 5 files differ in bytes only;")
    assert "changed in meaning" not in out and "beyond tolerance" not in out
    # The largest difference per table, with its tolerance.
    assert any(line.strip().startswith("stats/deltas.parquet: delta: max |diff| 3.75e-06") for line in lines), out
    assert f"  {RUN}/null_odds.json: value: max |diff|" in out and "logit tolerance" in out
    assert "checkpoint/model.safetensors: bytes differ (weights or arrays" in out
    assert "stats/deltas.csv: " in out


def test_a_changed_answer_differs_and_is_named_first(run, tmp_path, capsys):
    other = copy_run(run, tmp_path / "b")
    _perturb_floats(other)
    answers = json.loads((other / RUN / "predictions.json").read_text(encoding="utf-8"))
    answers["q3"] = "the Seine"
    (other / RUN / "predictions.json").write_text(json.dumps(answers), encoding="utf-8")
    code, out = compare(capsys, run, other)
    assert code == 1
    lines = out.splitlines()
    assert lines[2] == "changed in meaning (answers, scores, decisions, headline):"
    assert lines[3] == f"  {RUN}/predictions.json:"
    assert lines[4].strip() == "value: 1 of 4 differ: q3: 'the river Seine' vs 'the Seine'"
    assert lines[-1] == f"differs: 1 file changed in meaning, 0 with floats beyond tolerance; first: {RUN}/predictions.json"


def test_a_flipped_test_decision_and_a_float_past_its_tolerance_differ(run, tmp_path, capsys):
    other = copy_run(run, tmp_path / "b")
    deltas = pd.read_parquet(other / "stats" / "deltas.parquet")
    deltas.loc[1, "significant_holm"] = True
    deltas.loc[2, "removed_mass"] += 0.01
    deltas.to_parquet(other / "stats" / "deltas.parquet", index=False)
    code, out = compare(capsys, run, other)
    assert code == 1
    assert "significant_holm: 1 of 4 rows differ: row 1 (zone q2p): False vs True" in out
    assert "removed_mass: max |diff| 0.01, 1 of 4 values beyond mass tolerance (abs 1e-05)" in out
    assert out.index("changed in meaning") < out.index("floats beyond tolerance")
    assert out.splitlines()[-1].startswith("differs: 1 file changed in meaning, 1 with floats beyond tolerance")


def test_an_exact_test_p_value_one_step_away_with_the_same_decision_is_equivalent(run, tmp_path, capsys):
    """Measured with native kernels: a near-tie in an exact sign-flip test resolves the other way and its
    p-value moves by 2/256; the decision (significant_holm) is what is compared exactly."""
    other = copy_run(run, tmp_path / "b")
    deltas = pd.read_parquet(other / "stats" / "deltas.parquet")
    deltas.loc[1, "p_holm"] += 2 / 256
    deltas.to_parquet(other / "stats" / "deltas.parquet", index=False)
    code, out = compare(capsys, run, other)
    assert code == 0, out
    assert "stats/deltas.parquet: p_holm: max |diff| 0.00781, 1 of 4 values within p_value tolerance (abs 0.01)" in out


def test_a_package_version_difference_is_named_as_a_likely_cause(run, tmp_path, capsys):
    other = copy_run(run, tmp_path / "b")
    _perturb_floats(other, relative=1e-3)
    written = json.loads((other / "manifest.json").read_text(encoding="utf-8"))
    written["environment"]["packages"]["scipy"] = "1.0.0"
    (other / "manifest.json").write_text(json.dumps(written), encoding="utf-8")
    code, out = compare(capsys, run, other)
    assert code == 1 and "floats beyond tolerance:" in out
    causes = out.splitlines().index("environment differences (likely causes, likeliest first):")
    assert f"environment differs: packages scipy {metadata.version('scipy')} vs 1.0.0" in out.splitlines()[causes:]


def test_the_manifest_records_every_package_that_can_change_a_byte_and_the_native_libraries(run):
    env = json.loads((run / "manifest.json").read_text(encoding="utf-8"))["environment"]
    assert set(env["packages"]) >= {
        "python", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "pyarrow", "scipy",
        "statsmodels", "datasets", "evaluate", "snakemake", "snakemake-executor-plugin-slurm",
        "snakemake-executor-plugin-cluster-generic", "plotly", "nbconvert", "nbclient", "jsonschema"}
    assert env["packages"]["snakemake"] == metadata.version("snakemake")
    assert env["packages"]["statsmodels"] == metadata.version("statsmodels")
    assert env["libraries"]["torch_blas_info"]  # the BLAS torch was built with (mkl, openblas)
    assert any(name.startswith(("torch_openmp", "openmp:")) for name in env["libraries"])


# --------------------------------------------------------------------------------------------------
# Reference tables
# --------------------------------------------------------------------------------------------------


def test_the_reference_export_is_deterministic_and_a_run_matches_it(run, tmp_path, capsys):
    reference = tmp_path / "reference" / "default"
    assert cli(["reference", "export", str(run), str(reference)]) == 0
    capsys.readouterr()
    first = {p.relative_to(reference): p.read_bytes() for p in sorted(reference.rglob("*")) if p.is_file()}
    assert cli(["reference", "export", str(run), str(reference)]) == 0
    capsys.readouterr()
    again = {p.relative_to(reference): p.read_bytes() for p in sorted(reference.rglob("*")) if p.is_file()}
    assert first == again
    # No checkpoint, no data, no CSV copy of a statistics table; the manifest beside the folder.
    names = {p.as_posix() for p in first}
    assert not any("safetensors" in name or name.startswith("data/") or name.endswith(".csv") for name in names)
    assert f"{RUN}/predictions.json.gz" in names and "stats/deltas.parquet" in names
    assert json.loads((reference.parent / "default.json").read_text(encoding="utf-8")) == json.loads(
        (run / "manifest.json").read_text(encoding="utf-8"))
    assert compare(capsys, run, reference) == (0, "identical\n")
    other = copy_run(run, tmp_path / "b")
    _perturb_floats(other)
    code, out = compare(capsys, other, reference)
    assert code == 0 and out.splitlines()[-1].startswith("equivalent:"), out
    assert "stats/deltas.csv: not read here: its values are those of deltas.parquet" in out
    answers = json.loads((other / RUN / "predictions.json").read_text(encoding="utf-8"))
    answers["q1"] = "Lyon"
    (other / RUN / "predictions.json").write_text(json.dumps(answers), encoding="utf-8")
    (other / "data" / "squad_heldout.json").write_text('{"version": "v2.0", "data": [1]}\n', encoding="utf-8")
    code, out = compare(capsys, other, reference)
    assert code == 1
    lines = out.splitlines()
    assert lines[3:5] == ["  data/squad_heldout.json:", "      input differs (digest)"]
    assert lines[5] == f"  {RUN}/predictions.json:" and "q1: 'Lyon' vs 'Paris'" in lines[6]
    # Against the manifest alone: only digests, and where the tables are.
    code, out = compare(capsys, other, reference.parent / "default.json")
    assert code == 1
    assert out.splitlines()[-1].endswith(f"only digests can be compared: compare with the reference tables instead"
                                         f" (mrcbench compare RESULTS {reference})")


def test_the_reference_export_refuses_what_it_cannot_vouch_for(run, tmp_path, capsys):
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    (reference_dir / "amd.json").write_text("{}", encoding="utf-8")
    # Not over a folder that is no reference folder (the repository's reference/ itself).
    _one_line_refusal(capsys, ["reference", "export", str(run), str(reference_dir)], "is not a reference folder")
    assert (reference_dir / "amd.json").is_file()
    # Not a table changed after the manifest was written, nor a run without a manifest.
    (run / RUN / "predictions.json").write_text("{}", encoding="utf-8")
    _one_line_refusal(capsys, ["reference", "export", str(run), str(reference_dir / "default")],
                      "predictions.json: changed since")
    (run / "manifest.json").unlink()
    _one_line_refusal(capsys, ["reference", "export", str(run), str(reference_dir / "default")], "no manifest")
    assert not (reference_dir / "default").exists()


def test_the_appendix_shows_the_verdict_against_the_reference_and_the_largest_differences(run, tmp_path,
                                                                                          monkeypatch):
    reference = tmp_path / "reference" / "default"
    assert cli(["reference", "export", str(run), str(reference)]) == 0
    text, table = appendix.reference_verdict(run, reference)
    assert text.endswith(": identical") and table.empty
    # Without a folder named: the repository's reference made from the run's config, or none.
    monkeypatch.chdir(tmp_path)
    assert appendix.reference_verdict(run, config=run_config())[0] == "Against the reference `reference/default`: identical"
    assert appendix.reference_verdict(run, config={**run_config(), "sample_seed": 99})[0].startswith("No reference tables")
    _perturb_floats(run)
    text, table = appendix.reference_verdict(run, reference)
    assert "equivalent: 5 files differ in bytes only" in text
    assert list(table.columns) == ["file", "column", "status", "max |diff|", "tolerance", "detail"]
    assert set(table["status"]) == {"within tolerance", "bytes only"}
    top = table.iloc[0]
    assert top["status"] == "within tolerance" and top["max |diff|"] > 0
    note = appendix.reference_note(run, run_config(), reference.parent)
    assert "**equivalent** to" in note and str(reference) in note


@pytest.mark.slow
def test_the_smoke_run_matches_its_reference_and_one_changed_answer_differs(smoke_run, tmp_path, capsys):
    workdir, _ = smoke_run
    config = yaml.safe_load((REPO_ROOT / "config" / "smoke.yaml").read_text(encoding="utf-8"))
    results = workdir / config["results_dir"]
    reference = tmp_path / "reference" / "smoke"
    assert cli(["reference", "export", str(results), str(reference)]) == 0
    capsys.readouterr()
    total = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file())
    assert total < 5_000_000
    assert compare(capsys, results, reference) == (0, "identical\n")
    other = Path(shutil.copytree(results, tmp_path / "other"))
    for path in sorted(other.glob("attention/*/*/*/*/zone_stats.parquet")) + [other / "stats" / "zone_mass.parquet"]:
        frame = pd.read_parquet(path)
        frame["mass"] = frame["mass"] * (1 + 1e-7)
        frame.to_parquet(path, index=False)
    code, out = compare(capsys, other, reference)
    assert code == 0 and out.splitlines()[-1].startswith("equivalent:"), out
    predictions = min(other.glob("predict/*/*/*/*/predictions.json"))
    answers = json.loads(predictions.read_text(encoding="utf-8"))
    qid = min(answers)
    answers[qid] = answers[qid] + " (changed)"
    predictions.write_text(json.dumps(answers, ensure_ascii=False), encoding="utf-8")
    code, out = compare(capsys, other, reference)
    assert code == 1
    meaning = out.split("changed in meaning (answers, scores, decisions, headline):\n")[1]
    first_file = next(line for line in meaning.splitlines() if not line.startswith("  only in"))
    assert first_file == f"  {predictions.relative_to(other).as_posix()}:"


# --------------------------------------------------------------------------------------------------
# What compare and manifest refuse, on one line
# --------------------------------------------------------------------------------------------------


def _one_line_refusal(capsys, argv, *needles) -> str:
    code = cli(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("shape", [
    {"files": 3}, {"files": {"a": 1}}, {"files": None}, {"files": [{"path": "x.json", "size": 3}]},
    {"files": [{"path": "x.json", "size": 3, "sha256": "ab"}], "environment": "linux"},
    {"files": ["x.json"]}, [1, 2],
])
def test_a_manifest_of_another_shape_is_refused_on_one_line(run, tmp_path, capsys, shape):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(shape), encoding="utf-8")
    _one_line_refusal(capsys, ["compare", str(run), str(path)], str(path), "not a run manifest")
    # And as a folder's own manifest.
    other = copy_run(run, tmp_path / "b")
    (other / "manifest.json").write_text(json.dumps(shape), encoding="utf-8")
    _one_line_refusal(capsys, ["compare", str(run), str(other)], str(other / "manifest.json"))


def test_a_deeply_nested_json_is_refused_on_one_line(run, tmp_path, capsys):
    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "deep.json"
    path.write_text(deep, encoding="utf-8")
    _one_line_refusal(capsys, ["compare", str(run), str(path)], str(path))
    other = copy_run(run, tmp_path / "b")
    (run / RUN / "case.json").write_text("[1]", encoding="utf-8")
    (other / RUN / "case.json").write_text(deep, encoding="utf-8")
    _one_line_refusal(capsys, ["compare", str(run), str(other)], "case.json")


def test_a_symlink_out_of_the_results_folder_is_recorded_as_a_link_and_never_read(run, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text('{"token": "SECRET-FIRST-LINE"}\n', encoding="utf-8")
    (outside / "other.json").write_text('{"token": "OTHER-SECRET"}\n', encoding="utf-8")
    (outside / "folder").mkdir()
    (outside / "folder" / "inside.json").write_text("{}", encoding="utf-8")
    other = copy_run(run, tmp_path / "b")
    os.symlink(outside / "secret.json", run / RUN / "extra.json")
    os.symlink(outside / "other.json", other / RUN / "extra.json")
    os.symlink(outside / "folder", run / "stats" / "linked")
    os.symlink(outside / "folder", other / "stats" / "linked")
    assert cli(["manifest", "--config", str(run / "config.resolved.yaml"), "--results", str(run)]) == 0
    rows = {row["path"]: row for row in json.loads((run / "manifest.json").read_text(encoding="utf-8"))["files"]}
    secret_digest = hashlib.sha256((outside / "secret.json").read_bytes()).hexdigest()
    assert rows[f"{RUN}/extra.json"]["sha256"] != secret_digest
    assert rows[f"{RUN}/extra.json"]["link"] == str(outside / "secret.json")
    assert "stats/linked" in rows and not any(path.startswith("stats/linked/") for path in rows)
    code, out = compare(capsys, run, other)
    assert code == 1
    assert "SECRET" not in out
    # Nor for the environment: a linked prediction folder's metrics are not read for the precision.
    (outside / "run").mkdir()
    (outside / "run" / "metrics.json").write_text('{"precision": "bf16"}', encoding="utf-8")
    os.symlink(outside / "run", run / "predict" / "minilm" / "squad_train" / "seed42" / "linked_eval")
    assert environment.recorded_precisions(run) == ["fp32"]
    assert f"link: {outside / 'secret.json'} vs {outside / 'other.json'} (a symbolic link: its target, not read)" in out


def test_nothing_to_compare_is_an_error_not_identical(tmp_path, capsys):
    empty_a, empty_b = tmp_path / "ea", tmp_path / "eb"
    empty_a.mkdir()
    empty_b.mkdir()
    _one_line_refusal(capsys, ["compare", str(empty_a), str(empty_b)], "nothing to compare")
    # Two different runs, each inside a parent folder: the parents hold no result of their own.
    for parent, f1 in ((tmp_path / "pa", 0.5), (tmp_path / "pb", 0.75)):
        results = parent / "smoke"
        (results / RUN).mkdir(parents=True)
        (results / "config.resolved.yaml").write_text("{}\n", encoding="utf-8")
        (results / RUN / "metrics.json").write_text(json.dumps({"f1": f1}), encoding="utf-8")
    _one_line_refusal(capsys, ["compare", str(tmp_path / "pa"), str(tmp_path / "pb")], "nothing to compare", "smoke")


def test_a_file_name_that_is_not_utf8_is_recorded_not_a_crash(run, tmp_path, capsys):
    name = os.fsdecode(b"odd-\xff-name.json")
    (run / RUN / name).write_text("{}", encoding="utf-8")
    assert cli(["manifest", "--config", str(run / "config.resolved.yaml"), "--results", str(run)]) == 0
    written = (run / "manifest.json").read_bytes().decode("utf-8")  # valid UTF-8
    paths = [row["path"] for row in json.loads(written)["files"]]
    capsys.readouterr()
    assert f"{RUN}/odd-\\xff-name.json" in paths
    assert compare(capsys, run, run) == (0, "identical\n")
    assert compare(capsys, run / "manifest.json", run) == (0, "identical\n")
