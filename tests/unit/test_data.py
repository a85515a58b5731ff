"""Tests of mrcbench.data: reading, validation, splitting, sub-sampling, leakage filtering, preparation."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from mrcbench import config as cfg
from mrcbench import data
from mrcbench.errors import MrcbenchError

# ---------------------------------------------------------------------------------------------------------
# Hand-made SQuAD dicts
# ---------------------------------------------------------------------------------------------------------


def qa(
    qid: str, question: str, context: str, answer: str | None, start: int | None = None, **extra: Any
) -> dict[str, Any]:
    """A question whose answer offset is found in ``context`` unless given explicitly."""
    if answer is None:
        return {"id": qid, "question": question, "answers": [], "is_impossible": True} | extra
    offset = context.index(answer) if start is None else start
    return {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": offset}]} | extra


def article(title: str, *paragraphs: tuple[str, list[tuple]]) -> dict[str, Any]:
    """``paragraphs``: (context, [(qid, answer or None[, start]), ...])."""
    return {
        "title": title,
        "paragraphs": [
            {"context": context, "qas": [qa(q[0], f"question {q[0]}?", context, *q[1:]) for q in questions]}
            for context, questions in paragraphs
        ],
    }


def squad(*articles: dict[str, Any], version: str = "1.1") -> dict[str, Any]:
    return {"version": version, "data": list(articles)}


def many_articles(prefix: str, n_articles: int, questions_per_article: int = 3) -> dict[str, Any]:
    """n articles with one paragraph each; ids ``{prefix}{article}_{question}``."""
    return squad(
        *[
            article(
                f"{prefix}Title {a}",
                (
                    f"Context of {prefix} article {a} mentions word{a} here.",
                    [(f"{prefix}{a}_{q}", f"word{a}") for q in range(questions_per_article)],
                ),
            )
            for a in range(n_articles)
        ]
    )


def titles(dataset: dict[str, Any]) -> list[str]:
    return [a["title"] for a in dataset["data"]]


def write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------
# load_squad_json
# ---------------------------------------------------------------------------------------------------------


def test_load_squad_json_reads_valid_file(tmp_path):
    dataset = squad(article("T", ("Paris is in France.", [("q1", "France")])))
    assert data.loading.load_squad_json(write_json(tmp_path / "ok.json", dataset)) == dataset


def test_load_squad_json_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"version": "1.1",\n "data": [}', encoding="utf-8")
    with pytest.raises(MrcbenchError, match=r"broken\.json: not valid JSON \(line 2"):
        data.loading.load_squad_json(path)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("data"), "top level: missing 'data'"),
        (lambda d: d["data"][1].pop("paragraphs"), r"data\[1\]: missing 'paragraphs'"),
        (
            lambda d: d["data"][1]["paragraphs"][0].pop("context"),
            r"data\[1\]\.paragraphs\[0\]: missing 'context'",
        ),
        (
            lambda d: d["data"][1]["paragraphs"][0]["qas"][1].pop("id"),
            r"data\[1\]\.paragraphs\[0\]\.qas\[1\]: missing 'id'",
        ),
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start="3"),
            r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers\[0\]\.answer_start: expected an integer, got str",
        ),
        (
            lambda d: d["data"][0]["paragraphs"][0].update(qas={}),
            r"data\[0\]\.paragraphs\[0\]\.qas: expected a list",
        ),
        (lambda d: d["data"].append("oops"), r"data\[2\]: expected an object, got str"),
    ],
)
def test_load_squad_json_structure_errors_name_the_json_path(tmp_path, mutate, expected):
    dataset = squad(
        article("A", ("Alpha beta.", [("a1", "beta")])),
        article("B", ("Gamma delta.", [("b1", "delta"), ("b2", "Gamma")])),
    )
    mutate(dataset)
    path = write_json(tmp_path / "bad.json", dataset)
    with pytest.raises(MrcbenchError, match=r"bad\.json: not SQuAD JSON: " + expected) as info:
        data.loading.load_squad_json(path)
    assert "\n" not in str(info.value)


def test_load_squad_json_missing_file_names_config_key(tmp_path):
    with pytest.raises(MrcbenchError, match=r"datasets\.squad\.local: dataset file not found: .*nope\.json"):
        data.loading.load_squad_json(tmp_path / "nope.json", config_key="datasets.squad.local")


# ---------------------------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------------------------

CONTEXT = "The Normans gave their name to Normandy, a region in France."


def dataset_with_problems() -> dict[str, Any]:
    return squad(
        article(
            "Normans",
            (
                CONTEXT,
                [
                    ("good", "Normandy"),
                    ("shifted", "Normandy", 29),
                    ("wrong", "France", 3),
                    ("good", "France"),
                ],
            ),  # duplicate id
            ("  ", [("empty_ctx", None)]),
            ("Only unanswerable bad ones here.", [("bad_only", "bad", 0)]),
        ),
        article("Other", ("Second article with text.", [("fine", "Second")])),
        version="v2.0",
    )


def test_validate_skips_bad_answers_and_reports_ids():
    clean, report = data.validation.validate(dataset_with_problems(), "toy.json", "skip", 0)
    assert data.filters.question_ids(clean) == ["good", "fine"]
    assert report.bad_ids["misaligned_answer"] == ["shifted", "wrong", "bad_only"]
    assert report.bad_ids["duplicate_id"] == ["good"]
    assert report.bad_ids["empty_context"] == ["empty_ctx"]
    assert (report.questions_in, report.questions_kept, report.questions_removed) == (7, 2, 5)
    # Paragraphs left without questions are dropped, the version is kept.
    assert [len(a["paragraphs"]) for a in clean["data"]] == [1, 1]
    assert clean["version"] == "v2.0"
    assert "kept 2 of 7 questions, removed 5" in report.summary()


def test_validate_fail_mode_lists_ids_and_source():
    with pytest.raises(
        MrcbenchError, match=r"toy\.json: 5 invalid questions .*misaligned_answer: shifted, wrong"
    ):
        data.validation.validate(dataset_with_problems(), "toy.json", "fail", 0)
    clean, report = data.validation.validate(
        squad(article("T", (CONTEXT, [("ok", "France")]))), "toy.json", "fail", 0
    )
    assert report.questions_removed == 0 and data.filters.question_ids(clean) == ["ok"]


def test_validate_realigns_small_offset_errors_only():
    dataset = squad(article("T", (CONTEXT, [("off_by_one", "Normandy", 30), ("far", "Normandy", 20)])))
    clean, report = data.validation.validate(dataset, "toy", "skip", 2)
    assert data.filters.question_ids(clean) == ["off_by_one"]
    assert report.realigned_ids == ["off_by_one"] and report.bad_ids["misaligned_answer"] == ["far"]
    fixed = clean["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]
    assert CONTEXT[fixed["answer_start"] :].startswith("Normandy")
    # The input is not modified.
    assert dataset["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] == 30


def test_one_realignment_for_validation_and_training_features():
    """data.validation.realign is the nearest occurrence within the shift, the earlier of two equally
    near; the training features (fixed shift 3, whitespace stripped) use the same function."""
    from mrcbench.qa import features

    assert data.validation.realign("abxxab", "ab", 2, 2) == 0  # tie: 0 and 4 are both 2 away
    assert data.validation.realign("abxxab", "ab", 3, 2) == 4
    assert data.validation.realign("abxxab", "ab", 2, 1) is None
    assert data.validation.realign("abxxab", "ab", 0, 0) == 0
    assert features.locate_answer("abxxab", "ab", 2) == (0, 2, True)
    assert features.locate_answer("abxxab", " ab ", 3) == (4, 6, False)  # leading space moves the start
    assert features.locate_answer("abxxxxxxab", "ab", 4) is None  # 4 away from both: beyond the fixed 3
    assert features.MAX_ANSWER_START_SHIFT == 3


def test_validate_drop_answer_keeps_question_with_an_aligned_answer():
    question = qa("multi", "Where?", CONTEXT, "France")
    question["answers"].append({"text": "in France", "answer_start": -1})
    dataset = squad({"title": "T", "paragraphs": [{"context": CONTEXT, "qas": [question]}]})
    assert data.validation.validate(dataset, "toy", "skip", 0)[1].bad_ids["misaligned_answer"] == ["multi"]
    clean, report = data.validation.validate(dataset, "toy", "drop_answer", 0)
    assert report.dropped_answer_ids == ["multi"]
    assert [a["text"] for a in clean["data"][0]["paragraphs"][0]["qas"][0]["answers"]] == ["France"]


def test_validate_flags_inconsistent_unanswerable_and_empty_question():
    answered = qa("imp_with_answer", "Where?", CONTEXT, "France", is_impossible=True)
    no_answers = {"id": "no_answers", "question": "Who?", "answers": [], "is_impossible": False}
    blank = qa("blank", "   ", CONTEXT, "France")
    unanswerable = qa("unanswerable", "Why?", CONTEXT, None)
    dataset = squad(
        {
            "title": "T",
            "paragraphs": [{"context": CONTEXT, "qas": [answered, no_answers, blank, unanswerable]}],
        }
    )
    clean, report = data.validation.validate(dataset, "toy", "skip", 0)
    assert data.filters.question_ids(clean) == ["unanswerable"]
    assert report.bad_ids["unanswerable_with_answers"] == ["imp_with_answer"]
    assert report.bad_ids["answerable_without_answers"] == ["no_answers"]
    assert report.bad_ids["empty_question"] == ["blank"]


def test_validate_rejects_unknown_policy():
    with pytest.raises(MrcbenchError, match="on_bad_record"):
        data.validation.validate(squad(), "toy", "ignore", 0)


# ---------------------------------------------------------------------------------------------------------
# article_split, subsample, filters, flatten
# ---------------------------------------------------------------------------------------------------------


def test_article_split_is_deterministic_disjoint_and_order_independent():
    dataset = many_articles("", 20)
    train, evaluation = data.filters.article_split(dataset, eval_fraction=0.25, seed=13)
    assert len(titles(evaluation)) == 5 and len(titles(train)) == 15
    assert not set(titles(train)) & set(titles(evaluation))
    assert sorted(titles(train) + titles(evaluation)) == sorted(titles(dataset))
    assert data.filters.article_split(dataset, 0.25, 13) == (train, evaluation)
    shuffled = squad(*random.Random(0).sample(dataset["data"], k=20))
    assert set(titles(data.filters.article_split(shuffled, 0.25, 13)[1])) == set(titles(evaluation))
    other_seeds = {tuple(sorted(titles(data.filters.article_split(dataset, 0.25, seed)[1]))) for seed in range(5)}
    assert len(other_seeds) > 1  # the seed matters
    with pytest.raises(MrcbenchError, match="eval_fraction"):
        data.filters.article_split(dataset, 1.0, 13)


def test_subsample_is_deterministic_and_consistent_across_parallel_files():
    english = many_articles("", 10, questions_per_article=4)
    # A "translation": same ids, other texts, other article order.
    german = squad(
        *reversed(
            [
                {
                    "title": a["title"],
                    "paragraphs": [
                        {
                            "context": "Übersetzt " + p["context"],
                            "qas": [q | {"question": "Frage?"} for q in p["qas"]],
                        }
                        for p in a["paragraphs"]
                    ],
                }
                for a in english["data"]
            ]
        )
    )
    sample = data.filters.subsample(english, 7, seed=13)
    assert len(data.filters.question_ids(sample)) == 7
    assert data.filters.subsample(english, 7, seed=13) == sample
    assert set(data.filters.question_ids(data.filters.subsample(german, 7, seed=13))) == set(data.filters.question_ids(sample))
    assert set(data.filters.question_ids(data.filters.subsample(english, 7, seed=14))) != set(data.filters.question_ids(sample))
    # Structure kept, no empty paragraphs or articles; the smaller sample is a subset of the larger one.
    assert all(p["qas"] for a in sample["data"] for p in a["paragraphs"])
    assert set(data.filters.question_ids(data.filters.subsample(english, 3, 13))) <= set(data.filters.question_ids(sample))
    assert data.filters.subsample(english, None, 13) == english
    assert data.filters.subsample(english, 1000, 13) == english


def test_remove_overlap_counts_by_title_and_by_context():
    shared_context = "This paragraph is shared   verbatim\nacross files."
    train = squad(
        article(
            "Super_Bowl_50", ("Broncos won.", [("t1", "Broncos")]), ("Panthers lost.", [("t2", "Panthers")])
        ),
        article("Physics", (shared_context, [("t3", "shared")]), ("Only in training.", [("t4", "training")])),
        article("Chemistry", ("Atoms bond.", [("t5", "Atoms"), ("t6", "bond")])),
    )
    evaluation = {
        "xquad_en": squad(
            article("Super Bowl 50", ("Another paragraph.", [("e1", "Another")])),
            article("Unrelated", ("This paragraph is shared verbatim across files.", [("e2", "shared")])),
        )
    }
    filtered, report = data.filters.remove_overlap(train, evaluation)
    assert data.filters.question_ids(filtered) == ["t4", "t5", "t6"]
    assert report.removed_titles == ["Super_Bowl_50"]
    assert (report.articles_removed, report.paragraphs_removed, report.questions_removed) == (1, 3, 3)
    assert (report.paragraphs_removed_by_title, report.paragraphs_removed_by_context) == (2, 1)
    assert report.against == ["xquad_en"]
    unchanged, nothing = data.filters.remove_overlap(train, {"other": many_articles("x", 2)})
    assert unchanged == train and nothing.questions_removed == 0


def test_exclude_articles_drops_whole_articles_on_title_or_context():
    dataset = squad(
        article("A", ("alpha one", [("a1", "alpha")]), ("alpha two", [("a2", "two")])),
        article("B", ("beta", [("b1", "beta")])),
        article("C", ("gamma", [("c1", "gamma")])),
    )
    others = {
        "train": squad(article("Other", ("alpha  two", [("x", "two")])), article("b", ("z", [("y", "z")])))
    }
    kept, report = data.filters.exclude_articles(dataset, others)
    assert titles(kept) == ["C"]
    assert report.removed_titles == ["A", "B"] and report.questions_removed == 3


def test_same_questions_as_requires_every_id():
    pool = many_articles("", 3)
    reference = data.filters.subsample(pool, 4, 13)
    assert data.filters.question_ids(data.filters.same_questions_as(pool, reference, "zh", "en")) == data.filters.question_ids(
        reference
    )
    with pytest.raises(MrcbenchError, match=r"splits\.zh\.same_questions_as: 3 question ids of 'en'"):
        data.filters.same_questions_as(pool, many_articles("", 4), "zh", "en")


def test_flatten_gives_one_example_per_question():
    dataset = squad(article("T", (CONTEXT, [("q1", "France"), ("q2", None)])), version="v2.0")
    first, second = data.filters.flatten(dataset)
    assert first == {
        "id": "q1",
        "title": "T",
        "context": CONTEXT,
        "question": "question q1?",
        "answers": {"text": ["France"], "answer_start": [CONTEXT.index("France")]},
        "is_impossible": False,
    }
    assert second["answers"] == {"text": [], "answer_start": []} and second["is_impossible"] is True


# ---------------------------------------------------------------------------------------------------------
# Hub loading
# ---------------------------------------------------------------------------------------------------------


def test_load_hub_converts_rows_to_squad(monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = datasets.Dataset.from_dict(
        {
            "id": ["q1", "q2", "q3", "q4"],
            "title": ["Normans", "Normans", "Normans", "Physics"],
            "context": [CONTEXT, CONTEXT, "Second paragraph.", "Force is mass times acceleration."],
            "question": ["Where?", "Unanswerable?", "Which?", "What is force?"],
            "answers": [
                {"text": ["France", "in France"], "answer_start": [53, 50]},
                {"text": [], "answer_start": []},
                {"text": ["Second"], "answer_start": [0]},
                {"text": ["mass times acceleration"], "answer_start": [9]},
            ],
        }
    )
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(data.loading, "_hub_hosts_resolve", lambda: True)  # no DNS lookup from a unit test
    converted = data.loading.load_hub(
        {"path": "rajpurkar/squad_v2", "name": None, "split": "validation"},
        key="squad_v2_half",
        metric="squad_v2",
    )
    assert calls == [("rajpurkar/squad_v2", None, "validation")]
    assert converted["version"] == "v2.0"
    assert titles(converted) == ["Normans", "Physics"]
    normans = converted["data"][0]["paragraphs"]
    assert [p["context"] for p in normans] == [CONTEXT, "Second paragraph."]
    assert [q["id"] for q in normans[0]["qas"]] == ["q1", "q2"]
    assert normans[0]["qas"][0]["answers"] == [
        {"text": "France", "answer_start": 53},
        {"text": "in France", "answer_start": 50},
    ]
    assert [q["is_impossible"] for q in normans[0]["qas"]] == [False, True]
    clean, report = data.validation.validate(converted, "hub", "skip", 0)  # the converted dict is valid SQuAD JSON
    assert report.questions_removed == 0 and data.loading.structure_problem(clean) is None


def test_hub_rows_without_title_get_context_derived_titles():
    rows = [
        {
            "id": "a",
            "context": "Same context.",
            "question": "Q?",
            "answers": {"text": ["Same"], "answer_start": [0]},
        },
        {
            "id": "b",
            "context": "Same context.",
            "question": "Q2?",
            "answers": [{"text": "context", "answer_start": 5}],
        },
        {
            "id": "c",
            "context": "Other context.",
            "question": "Q3?",
            "answers": {"text": ["Other"], "answer_start": [0]},
        },
    ]
    converted = data.loading.hub_rows_to_squad(rows, metric="cmrc2018")
    assert len(converted["data"]) == 2 and all(t.startswith("untitled-") for t in titles(converted))
    assert converted["version"] == "v1.0"
    assert "is_impossible" not in converted["data"][0]["paragraphs"][0]["qas"][0]
    with pytest.raises(MrcbenchError, match=r"lacks \['question'\]"):
        data.loading.hub_rows_to_squad([{"id": "x", "context": "c", "answers": []}])


def test_load_hub_offline_fails_fast_with_one_line(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from huggingface_hub import constants

    # Both libraries read the offline switch at import time; set the module constants as well as the env.
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    started = time.monotonic()
    with pytest.raises(MrcbenchError) as info:
        data.loading.load_hub({"path": "mrcbench-tests/no-such-dataset", "split": "validation"}, key="squad_v2_half")
    assert time.monotonic() - started < 30
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "dataset 'squad_v2_half': cannot load 'mrcbench-tests/no-such-dataset' from the hub (no network?"
    )
    assert message.endswith("set datasets.squad_v2_half.local to a local SQuAD JSON file under the data dir")


def test_load_hub_without_dns_switches_to_offline_instead_of_retrying(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from huggingface_hub import constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(data.loading, "_hub_hosts_resolve", lambda: False)
    seen = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        seen.append((datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE))
        raise ConnectionError("Couldn't reach the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(MrcbenchError, match="cannot load 'rajpurkar/squad' from the hub"):
        data.loading.load_hub({"path": "rajpurkar/squad", "split": "validation"}, key="squad")
    assert seen == [(True, True)]
    assert (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE) == (False, False)  # restored


# ---------------------------------------------------------------------------------------------------------
# prepare_splits on hand-made files
# ---------------------------------------------------------------------------------------------------------


def prepare(config: dict[str, Any], data_dir: Path | None, out_dir: Path, splits: list[str] | None = None) -> dict:
    """:func:`mrcbench.data.splits.prepare_splits` of ``config``'s datasets, splits, validation and seed."""
    return data.splits.prepare_splits(cfg.datasets(config), cfg.splits(config), cfg.validation_config(config),
                                      cfg.sample_seed(config), data_dir, out_dir, splits)


def toy_config(tmp_path: Path) -> dict[str, Any]:
    """A train file whose articles A0..A5 also appear (as titles) in a 10-article eval file."""
    write_json(tmp_path / "data" / "train.json", many_articles("A", 6, questions_per_article=5))
    evaluation = many_articles("A", 10, questions_per_article=2)
    write_json(tmp_path / "data" / "eval.json", evaluation)
    parallel = json.loads(json.dumps(evaluation))
    for art in parallel["data"]:
        for par in art["paragraphs"]:
            par["context"] = "ZH " + par["context"]
            for question in par["qas"]:
                question["answers"][0]["answer_start"] += 3
    write_json(tmp_path / "data" / "eval_zh.json", parallel)
    return {
        "datasets": {
            "train_src": {"local": "train.json", "metric": "squad", "language": "en"},
            "eval_src": {"local": "eval.json", "metric": "squad", "language": "en"},
            "eval_zh_src": {"local": "eval_zh.json", "metric": "squad", "language": "zh"},
        },
        "splits": {
            "train": {"dataset": "train_src", "max_questions": 5, "role": "train"},
            "heldout": {
                "dataset": "eval_src",
                "exclude_articles_of": ["train"],
                "max_questions": 6,
                "role": "eval",
            },
            "heldout_zh": {"dataset": "eval_zh_src", "same_questions_as": "heldout", "role": "eval"},
        },
        "validation": {"on_bad_record": "skip"},
        "sample_seed": 13,
    }


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_subsample_across_articles_spreads_over_every_article_and_keeps_parallel_ids():
    # Uneven articles: a plain hash sample of 12 from 20 articles of 1..40 questions favours the big ones.
    dataset = squad(
        *[
            article(
                f"Title {a}",
                (
                    f"Context {a} mentions word{a} here.",
                    [(f"{a}_{q}", f"word{a}") for q in range(40 if a < 2 else 2)],
                ),
            )
            for a in range(20)
        ]
    )
    assert data.filters.count(data.filters.subsample(dataset, 12, seed=13))["articles"] < 12  # the problem
    sample = data.filters.subsample_across_articles(dataset, 12, seed=13)
    counts = data.filters.count(sample)
    assert counts["questions"] == 12 and counts["articles"] == 12
    # 50 questions from 20 articles: every article, and no article gets a third before all have two.
    fifty = data.filters.subsample_across_articles(dataset, 50, seed=13)
    per_article = [sum(len(p["qas"]) for p in a["paragraphs"]) for a in fifty["data"]]
    assert len(per_article) == 20 and sum(per_article) == 50 and min(per_article) == 2
    # Deterministic, seed-dependent, and the same ids in a parallel file with another article order.
    assert data.filters.subsample_across_articles(dataset, 12, seed=13) == sample
    assert set(data.filters.question_ids(data.filters.subsample_across_articles(dataset, 12, seed=14))) != set(
        data.filters.question_ids(sample)
    )
    parallel = squad(*reversed([a | {"title": "Übersetzt " + a["title"]} for a in dataset["data"]]))
    assert set(data.filters.question_ids(data.filters.subsample_across_articles(parallel, 12, seed=13))) == set(
        data.filters.question_ids(sample)
    )
    assert data.filters.subsample_across_articles(dataset, None, 13) == dataset
    with pytest.raises(MrcbenchError, match="max_questions"):
        data.filters.subsample_across_articles(dataset, -1, 13)


def test_prepare_splits_excludes_against_the_train_pool_not_its_subsample(tmp_path, capsys):
    config = toy_config(tmp_path)
    written = prepare(config, tmp_path / "data", tmp_path / "out")
    assert set(written) == {"train", "heldout", "heldout_zh"}
    train, heldout, heldout_zh = (read(written[name]) for name in ("train", "heldout", "heldout_zh"))
    # Train keeps 5 questions, which come from at most 5 of its 6 articles...
    assert len(data.filters.question_ids(train)) == 5
    # ...but the eval split excludes all 6 train articles (the pool), whatever the subsample kept.
    assert not {f"ATitle {a}" for a in range(6)} & set(titles(heldout))
    assert len(data.filters.question_ids(heldout)) == 6 and set(titles(heldout)) <= {
        f"ATitle {a}" for a in range(6, 10)
    }
    assert data.filters.question_ids(heldout_zh) == data.filters.question_ids(heldout)
    assert all(
        c.startswith("ZH ") for c in (p["context"] for a in heldout_zh["data"] for p in a["paragraphs"])
    )
    summary = read(tmp_path / "out" / "heldout.summary.json")
    assert summary["removed"]["exclusion"] == 12 and summary["removed"]["subsampling"] == 2
    assert summary["counts"]["questions"] == 6 and summary["exclusion"]["articles_removed"] == 6
    assert read(tmp_path / "out" / "train.summary.json")["removed"]["overlap"] == 0
    assert not list((tmp_path / "out").glob(".*.tmp"))
    err = capsys.readouterr().err
    assert "split 'heldout' (eval, eval_src): kept 6 questions" in err
    assert "exclusion 12" in err and "dataset 'train_src' (train.json): kept 30 of 30 questions" in err


def test_prepare_splits_removes_leakage_from_train_splits_automatically(tmp_path):
    config = toy_config(tmp_path)
    config["splits"]["heldout"].pop("exclude_articles_of")  # now the eval split can hold train articles
    prepare(config, tmp_path / "data", tmp_path / "out")
    train = read(tmp_path / "out" / "train.json")
    heldout = read(tmp_path / "out" / "heldout.json")
    summary = read(tmp_path / "out" / "train.summary.json")
    assert summary["overlap"]["articles_removed"] > 0
    assert not set(titles(train)) & set(titles(heldout))
    assert summary["removed"]["overlap"] == 5 * summary["overlap"]["articles_removed"]
    assert summary["counts"]["questions"] == 5 and summary["overlap"]["against"] == ["heldout", "heldout_zh"]


def test_prepare_splits_article_split_and_answerable_only(tmp_path):
    dataset = many_articles("", 8, questions_per_article=2)
    for art in dataset["data"]:
        art["paragraphs"][0]["qas"].append(qa(art["title"] + " unanswerable", "Why?", "", None))
    write_json(tmp_path / "v2.json", dataset | {"version": "v2.0"})
    config = {
        "datasets": {
            "v2": {
                "local": str(tmp_path / "v2.json"),
                "metric": "squad_v2",
                "language": "en",
                "article_split": {"eval_fraction": 0.25, "seed": 13},
            }
        },
        "splits": {
            "tr": {"dataset": "v2", "part": "train", "answerable_only": True, "role": "train"},
            "ev": {"dataset": "v2", "part": "eval", "role": "eval"},
        },
    }
    written = prepare(config, None, tmp_path / "out")  # absolute path: no data dir needed
    train, evaluation = read(written["tr"]), read(written["ev"])
    assert train["version"] == "v2.0" and len(titles(train)) == 6 and len(titles(evaluation)) == 2
    assert data.filters.count(train)["unanswerable"] == 0 and data.filters.count(evaluation)["unanswerable"] == 2
    assert read(tmp_path / "out" / "tr.summary.json")["removed"]["answerable_only"] == 6


def test_prepare_splits_only_writes_requested_splits_but_resolves_dependencies(tmp_path):
    config = toy_config(tmp_path)
    written = prepare(config, tmp_path / "data", tmp_path / "out", splits=["heldout_zh"])
    assert list(written) == ["heldout_zh"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "heldout_zh.json",
        "heldout_zh.summary.json",
    ]
    full = prepare(config, tmp_path / "data", tmp_path / "full")
    assert read(written["heldout_zh"]) == read(full["heldout_zh"])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda c: c["splits"]["train"].update(dataset="nope"),
            r"splits\.train\.dataset: unknown dataset 'nope'",
        ),
        (
            lambda c: c["splits"]["heldout"].update(exclude_articles_of=["nope"]),
            r"splits\.heldout\.exclude_articles_of: unknown split 'nope'",
        ),
        (
            lambda c: c["splits"]["heldout_zh"].update(same_questions_as="nope"),
            r"splits\.heldout_zh\.same_questions_as: unknown split 'nope'",
        ),
        (
            lambda c: c["splits"]["heldout"].update(same_questions_as="train", max_questions=None),
            "circular dependency",
        ),
        (
            lambda c: c["splits"]["heldout_zh"].update(max_questions=3),
            "same_questions_as and max_questions exclude",
        ),
        (
            lambda c: c["splits"]["train"].update(part="train"),
            r"splits\.train\.part needs datasets\.train_src\.article_split",
        ),
        (lambda c: c["datasets"]["train_src"].update(metric="bleu"), r"datasets\.train_src\.metric"),
        (
            lambda c: c["datasets"]["train_src"].update(local="missing.json"),
            r"datasets\.train_src\.local: dataset file not found: .*missing\.json",
        ),
        (
            lambda c: c["splits"]["heldout_zh"].update(dataset="train_src"),
            r"splits\.heldout_zh\.same_questions_as: 6 question ids of 'heldout'",
        ),
    ],
)
def test_prepare_splits_config_errors_name_the_key(tmp_path, change, expected):
    """What `mrcbench prepare-data` does: validate once (mrcbench.config), then prepare the splits."""
    config = toy_config(tmp_path) | {
        "models": {"m": {"source": "local", "path": "/models/m"}},
        "experiments": {"x": {"models": ["m"], "train": "train", "eval": ["heldout"]}},
    }
    change(config)
    with pytest.raises(MrcbenchError, match=expected):
        prepare(cfg.validate(config), tmp_path / "data", tmp_path / "out")


def test_prepare_splits_unknown_requested_split(tmp_path):
    with pytest.raises(MrcbenchError, match="--splits: unknown split 'nope'"):
        prepare(toy_config(tmp_path), tmp_path / "data", tmp_path / "out", splits=["nope"])


def test_data_dir_comes_from_config_then_environment(tmp_path, monkeypatch):
    """The one resolver (mrcbench.config.resolve_data_dir): the config key wins over the variable."""
    monkeypatch.setenv("MRCBENCH_DATA_DIR", str(tmp_path))
    elsewhere = tmp_path / "configured"
    elsewhere.mkdir()
    assert cfg.resolve_data_dir(str(elsewhere)) == elsewhere.resolve()
    assert cfg.resolve_data_dir(None) == tmp_path.resolve()


def test_relative_local_file_without_data_dir_asks_for_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MRCBENCH_DATA_DIR", raising=False)
    with pytest.raises(MrcbenchError, match="MRCBENCH_DATA_DIR"):
        prepare(toy_config(tmp_path), None, tmp_path / "out")


def test_main_reads_its_job_spec_and_reports_errors_in_one_line(tmp_path, capsys):
    config = toy_config(tmp_path) | {
        "data_dir": str(tmp_path / "data"),
        "models": {"m": {"source": "local", "path": "/models/m"}},
        "experiments": {"x": {"models": ["m"], "train": "train", "eval": ["heldout"]}},
    }
    spec = cfg.job_spec(cfg.validate(config), "prepare_data").to_json()
    assert data.splits.main(["--spec", spec, "--out", str(tmp_path / "out"), "--splits", "train"]) == 0
    assert (tmp_path / "out" / "train.json").is_file() and not (tmp_path / "out" / "heldout.json").exists()
    capsys.readouterr()
    assert data.splits.main(["--spec", spec[:-1], "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --spec (prepare_data): not JSON") and "\n" not in err


# ---------------------------------------------------------------------------------------------------------
# The local mirror
# ---------------------------------------------------------------------------------------------------------

MIRROR_CONFIG = {
    "data_dir": None,
    "datasets": {
        "squad_v2_half": {
            "local": "squad_v2/dev-v2.0-half.json",
            "hub": {"path": "rajpurkar/squad_v2", "name": None, "split": "validation"},
            "source": "local",
            "metric": "squad_v2",
            "language": "en",
            "article_split": {"eval_fraction": 0.25, "seed": 13},
        },
        "xquad_en": {
            "local": "xquad/xquad.en.json",
            "hub": {"path": "google/xquad", "name": "xquad.en", "split": "validation"},
            "metric": "squad",
            "language": "en",
        },
        "xquad_zh": {
            "local": "xquad/xquad.zh.json",
            "hub": {"path": "google/xquad", "name": "xquad.zh", "split": "validation"},
            "metric": "squad",
            "language": "zh",
        },
    },
    "splits": {
        "squad_train": {
            "dataset": "squad_v2_half",
            "part": "train",
            "answerable_only": True,
            "max_questions": 1200,
            "role": "train",
        },
        "squad_heldout": {"dataset": "squad_v2_half", "part": "eval", "max_questions": 150, "role": "eval"},
        "xquad_en": {
            "dataset": "xquad_en",
            "exclude_articles_of": ["squad_train"],
            "max_questions": 150,
            "role": "eval",
        },
        "xquad_zh": {"dataset": "xquad_zh", "same_questions_as": "xquad_en", "role": "eval"},
    },
    "validation": {"on_bad_record": "skip"},
    "sample_seed": 13,
}


def test_mirror_splits_are_leakage_free_and_parallel(data_dir, tmp_path, capsys):
    written = prepare(MIRROR_CONFIG, data_dir, tmp_path)
    splits = {name: read(path) for name, path in written.items()}
    train, heldout, xquad_en, xquad_zh = (
        splits[n] for n in ("squad_train", "squad_heldout", "xquad_en", "xquad_zh")
    )

    def contexts(dataset):
        return {data.filters.normalize_context(p["context"]) for a in dataset["data"] for p in a["paragraphs"]}

    assert not set(titles(train)) & set(titles(xquad_en))
    assert not contexts(train) & contexts(xquad_en)
    assert not set(titles(train)) & set(titles(heldout))
    assert data.filters.question_ids(xquad_zh) == data.filters.question_ids(xquad_en)
    assert len(data.filters.question_ids(xquad_en)) == 150 and len(data.filters.question_ids(heldout)) == 150
    assert data.filters.count(train) | {"articles": 0, "paragraphs": 0} == {
        "articles": 0,
        "paragraphs": 0,
        "questions": 1200,
        "answerable": 1200,
        "unanswerable": 0,
    }
    assert len(titles(train)) == 12 and train["version"] == "v2.0" and xquad_en["version"] == "1.1"
    # The 16 SQuAD titles are in XQuAD; the 12 training ones are excluded from the XQuAD pool of 48.
    summary = read(tmp_path / "xquad_en.summary.json")
    assert summary["exclusion"]["articles_removed"] == 12 and summary["counts"]["questions"] == 150
    assert (
        summary["provenance"]["local"] == "xquad/xquad.en.json" and len(summary["provenance"]["sha256"]) == 64
    )
    err = capsys.readouterr().err
    for name in written:
        assert f"split '{name}'" in err
    assert "dataset 'squad_v2_half' (squad_v2/dev-v2.0-half.json): kept 6078 of 6078 questions" in err


def test_mirror_cmrc_trial_offsets(data_dir):
    raw = data.loading.load_squad_json(data_dir / "cmrc2018" / "cmrc2018_trial.json")
    _, skipped = data.validation.validate(raw, "cmrc2018_trial", "skip", 0)
    assert (skipped.questions_in, skipped.questions_removed) == (1002, 7)
    assert sorted(skipped.bad_ids["empty_question"]) == ["TRIAL_20_QUERY_0", "TRIAL_776_QUERY_4"]
    # Five answers (all of TRIAL_210) start one character early; a 1-character realignment repairs them.
    assert len(skipped.bad_ids["misaligned_answer"]) == 5
    _, realigned = data.validation.validate(raw, "cmrc2018_trial", "skip", 1)
    assert realigned.questions_removed == 2 and not realigned.bad_ids["misaligned_answer"]
    assert sorted(realigned.realigned_ids) == sorted(skipped.bad_ids["misaligned_answer"])
