"""The declared result tables (mrcbench.tables): a table that differs from its declaration is refused in
one line naming the file and the column, and what the code writes matches the declarations."""
import gzip

import numpy as np
import pandas as pd
import pytest
import yaml

from mrcbench import config as cfg
from mrcbench import tables
from mrcbench.errors import MrcbenchError
from mrcbench.grid.zone_stats import zone_stats_frame
from mrcbench.metrics.scoring import per_question_scores
from mrcbench.qa.predict import write_scores
from mrcbench.runtime import layout
from mrcbench.stats.results import ResultFiles, load_results

from support import REPO_ROOT

REFERENCE = REPO_ROOT / "reference" / "default"


def _scores() -> pd.DataFrame:
    return pd.DataFrame({"model": ["m", "m"], "train_set": ["t", "t"], "eval_set": ["e", "e"], "seed": [1, 1],
                         "qid": ["q1", "q2"], "article": ["a", "a"], "question": ["Who?", "What?"],
                         "has_answer": [True, False], "predicted": [True, True], "em": [100.0, 0.0],
                         "f1": [100.0, 50.0]})


def _refused(frame: pd.DataFrame, table: tables.Table = tables.SCORES) -> str:
    with pytest.raises(MrcbenchError) as caught:
        table.check(frame, "x/scores.parquet")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("x/scores.parquet: "), message
    return message


def test_a_table_as_declared_passes():
    tables.SCORES.check(_scores(), "x/scores.parquet")
    # text as a categorical (concatenated zone statistics), no rows, a column without any value: accepted
    tables.SCORES.check(_scores().astype({"model": "category"}), "x")
    tables.SCORES.check(tables.SCORES.empty(), "x")
    tables.SCORES.check(_scores().assign(article=None), "x")


def test_a_planted_wrong_column_is_refused_in_one_line_naming_it():
    assert "no column 'question'" in _refused(_scores().drop(columns="question"))
    assert "unexpected column 'extra'" in _refused(_scores().assign(extra=1))
    swapped = _scores()[["qid", *[c for c in tables.SCORES.names if c != "qid"]]]
    assert "column 'qid' at position 1, expected 'model'" in _refused(swapped)
    twice = pd.concat([_scores(), _scores()[["f1"]]], axis=1)
    assert "column 'f1' twice" in _refused(twice)
    assert _refused(_scores().drop(columns="f1")).endswith("(the scores.parquet table of mrcbench/tables.py)")


@pytest.mark.parametrize("column, value, found", [
    ("seed", 1.0, "float64"), ("em", "100", "str"), ("has_answer", 1, "int64"), ("qid", 7, "int64"),
])
def test_a_planted_wrong_dtype_is_refused_in_one_line_naming_the_column(column, value, found):
    message = _refused(_scores().assign(**{column: value}))
    declared = tables.SCORES.columns[column]
    assert f"column {column!r} is {found}, expected {declared}" in message


def test_zone_statistics_are_categorical_and_a_categorical_of_integers_counts_as_integers():
    frame = pd.DataFrame({key: pd.Categorical(["k"]) for key in tables.RUN_KEYS})
    frame["seed"] = pd.Categorical([1])  # how zone_stats_frame builds it; the parquet file stores int64
    frame = frame.assign(qid=pd.Categorical(["q"]), article=pd.Categorical(["a"]),
                         layer=np.int16(0), head=np.int16(0), row_zone=pd.Categorical(["question"]),
                         col_zone=pd.Categorical(["passage"]), mass=0.5, precision="fp32")
    tables.ZONE_STATS.check(frame, "zone_stats.parquet")
    with pytest.raises(MrcbenchError, match=r"column 'qid' is str, expected category"):
        tables.ZONE_STATS.check(frame.astype({"qid": str}), "zone_stats.parquet")
    with pytest.raises(MrcbenchError, match=r"column 'layer' is int64, expected int16"):
        tables.ZONE_STATS.check(frame.astype({"layer": "int64"}), "zone_stats.parquet")


def test_the_stats_refuse_a_result_file_that_differs_from_its_declaration(tmp_path):
    good, bad = tmp_path / "good" / "scores.parquet", tmp_path / "bad" / "scores.parquet"
    for path, frame in ((good, _scores()), (bad, _scores().assign(seed=["1", "1"]))):
        path.parent.mkdir()
        frame.to_parquet(path, index=False)
    assert len(load_results(tmp_path, ResultFiles([], [], [good], [])).scores) == 2
    with pytest.raises(MrcbenchError) as caught:
        load_results(tmp_path, ResultFiles([], [], [good, bad], []))
    assert str(caught.value) == (f"{bad}: column 'seed' is str, expected int64 (the scores.parquet table of "
                                 "mrcbench/tables.py)")


SQUAD = {"version": "v2.0", "data": [{"title": "A", "paragraphs": [{"context": "Paris is in France.", "qas": [
    {"id": "q1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}],
     "is_impossible": False},
    {"id": "q2", "question": "Who?", "answers": [], "is_impossible": True},
]}]}]}
KEYS = {"model": "m", "train_set": "t", "eval_set": "e", "seed": 1}


def test_the_scores_and_zone_statistics_writers_write_the_declared_tables(tmp_path):
    for metric in ("squad", "squad_v2"):
        path = tmp_path / metric / "scores.parquet"
        write_scores(path, per_question_scores(metric, SQUAD, {"q1": "France"}), KEYS)
        tables.SCORES.check(pd.read_parquet(path), path)
    mass = np.random.default_rng(0).random((3, 2, 2, 3, 3))
    frame = zone_stats_frame(mass, ["q1", "q1", "q2"], KEYS, articles={"q1": "A", "q2": "A"})
    frame["precision"] = "fp32"  # as mrcbench extract-attention adds it
    tables.ZONE_STATS.check(frame, "zone_stats.parquet")
    frame.to_parquet(tmp_path / "zone_stats.parquet", index=False)
    tables.ZONE_STATS.check(pd.read_parquet(tmp_path / "zone_stats.parquet"), "zone_stats.parquet")
    with pytest.raises(MrcbenchError, match=r"bad/scores.parquet: no column 'eval_set'"):
        write_scores(tmp_path / "bad" / "scores.parquet", per_question_scores("squad", SQUAD, {}),
                     {"model": "m", "train_set": "t", "seed": 1})
    assert not (tmp_path / "bad").exists()


def test_the_reference_run_holds_every_table_as_declared():
    """The repository's fresh-clone default run (reference/default): every grid, score, zone-statistics
    and statistics table matches its declaration, so the declarations are those of a full run."""
    checked = 0
    for table in tables.RESULT_TABLES.values():
        for path in sorted(REFERENCE.glob(f"*/*/*/*/*/{table.file}")):
            table.check(pd.read_parquet(path), path)
            checked += 1
    for table in tables.STATS_TABLES.values():
        table.check(pd.read_parquet(REFERENCE / "stats" / table.file), table.file)
    assert checked >= 3 * 4


def test_the_run_key_vocabulary_maps_paths_to_columns():
    assert tables.RUN_SEED_KEYS == (*tables.RUN_KEYS, "seed")
    assert set(tables.PATH_KEYS) == set(tables.RUN_SEED_KEYS)
    assert tables.run_columns({"model": "m", "train": "t", "seed": 3, "eval": "e", "part": "all"}) == {
        "model": "m", "train_set": "t", "eval_set": "e", "seed": 3}
    # the path keys are the run layout's and the workflow's wildcards
    assert set(tables.PATH_KEYS.values()) <= set(layout.KEYS)
    config = yaml.safe_load(gzip.decompress((REFERENCE / "config.resolved.yaml.gz").read_bytes()))
    run = next(cfg.runs(config))
    assert set(run.keys) == set(tables.PATH_KEYS.values())
    # every result table starts with the key columns; the grid's cell keys are grid columns
    for table in tables.RESULT_TABLES.values():
        assert tuple(table.names[:4]) == tables.RUN_SEED_KEYS
    assert set(tables.GRID_CELL_KEYS) <= set(tables.GRID.names)
    assert tables.GRID_COLUMNS == tuple(tables.GRID.names[:-1])
