"""Tests of the official-equivalent scorers.

Expected values are worked out by hand in the comments, following the official scripts
(evaluate-v1.1.py, evaluate-v2.0.py, cmrc2018_evaluate.py, mlqa_evaluation_v1.py) step by step. The MLQA
scorer is also compared with a transcription of the official script (tests/support/mlqa_reference.py) on random
multilingual data.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mrcbench import metrics
from mrcbench.errors import MrcbenchError
from mrcbench.languages import MLQA_EXTENSION_LANGUAGES, MLQA_LANGUAGES, MLQA_OFFICIAL_LANGUAGES
from mrcbench.metrics.cmrc import (
    cmrc_exact,
    cmrc_f1,
    cmrc_remove_punctuation,
    longest_common_substring_length,
    mixed_segmentation,
)
from mrcbench.metrics.command import score_files
from mrcbench.metrics.mlqa import (
    mlqa_exact,
    mlqa_f1,
    mlqa_normalize,
)
from mrcbench.metrics.scoring import (
    METRICS,
    cmrc2018_evaluate,
    mlqa_evaluate,
    per_question_scores,
    squad_v1_evaluate,
    squad_v2_evaluate,
)
from mrcbench.metrics.squad import normalize_answer, squad_v2_exact, squad_v2_f1

from support import mlqa_reference


def make_dataset(questions: list[tuple[str, list[str]]], title: str = "Article") -> dict:
    """A one-paragraph SQuAD-format dataset; ``questions`` is [(qid, gold answer texts)]."""
    qas = [
        {
            "id": qid,
            "question": f"question {qid}?",
            "answers": [{"text": text, "answer_start": 0} for text in golds],
            "is_impossible": not golds,
        }
        for qid, golds in questions
    ]
    return {"version": "test", "data": [{"title": title, "paragraphs": [{"context": "ctx", "qas": qas}]}]}


# --------------------------------------------------------------------------------------------------
# SQuAD normalisation, EM and F1
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # lower -> "the  cat's  hat!" ; drop ASCII punctuation -> "the  cats  hat" ; drop articles and
        # collapse whitespace -> "cats hat"
        ("The  Cat's  hat!", "cats hat"),
        # all three articles go, as whole words only ("theater", "another", "banana" stay)
        ("An apple, a theater and the banana", "apple theater and banana"),
        ("another", "another"),
        # only ASCII punctuation is dropped: typographic quotes and the full-width comma survive
        ("“Quoted”，text", "“quoted”，text"),
        # accents are lower-cased but not folded
        ("Éclair  NAÏVE", "éclair naïve"),
        ("  \t\n ", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_f1_counts_repeated_tokens_once_per_gold_occurrence() -> None:
    # gold "the cat sat on the mat" -> [cat, sat, on, mat] (4 tokens)
    # pred "cat cat sat"            -> [cat, cat, sat]      (3 tokens)
    # multiset intersection: cat min(1, 2) = 1, sat 1 -> 2 tokens in common
    # P = 2/3, R = 2/4 -> F1 = 2 * (2/3) * (1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
    assert squad_v2_f1("the cat sat on the mat", "cat cat sat") == pytest.approx(4 / 7)
    assert squad_v2_exact("the cat sat on the mat", "cat cat sat") == 0


def test_accented_latin_is_not_folded() -> None:
    # case differs only: "Éclair" and "éclair" normalise to the same string
    assert squad_v2_exact("Éclair", "éclair") == 1
    # accents differ: no token in common -> F1 0
    assert squad_v2_exact("naïve café", "naive cafe") == 0
    assert squad_v2_f1("naïve café", "naive cafe") == 0.0
    # one of two tokens matches: P = 1/2, R = 1/2 -> F1 = 1/2
    assert squad_v2_f1("naïve café", "naïve cafe") == pytest.approx(0.5)


def test_squad_v2_takes_the_max_over_gold_answers() -> None:
    dataset = make_dataset(
        [
            # EM via the second gold: normalize("the Broncos") == normalize("Broncos") == "broncos"
            ("q1", ["Denver Broncos", "Broncos"]),
            # pred "Panthers": gold 1 "carolina panthers of nfl" (4 tokens) -> P 1, R 1/4, F1 = 0.4;
            # gold 2 "panthers team" (2 tokens) -> P 1, R 1/2, F1 = 2/3; max = 2/3, EM 0
            ("q2", ["Carolina Panthers of NFL", "Panthers team"]),
        ]
    )
    result = squad_v2_evaluate(dataset, {"q1": "the Broncos", "q2": "Panthers"})
    # exact = 100 * (1 + 0) / 2 = 50 ; f1 = 100 * (1 + 2/3) / 2 = 83.33...
    assert result["exact"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert result["total"] == 2
    assert result["HasAns_total"] == 2
    assert "NoAns_total" not in result


def test_squad_v2_unanswerable_questions() -> None:
    dataset = make_dataset(
        [
            ("empty_pred", []),  # gold [''] ; pred ""      -> EM 1, F1 1 (both have no tokens)
            ("article_pred", []),  # pred "the" normalises to "" -> also EM 1, F1 1
            ("wrong_pred", []),  # pred "Paris" -> EM 0, F1 0
            # an answer that normalises to nothing is dropped, so the only gold is '' -- but the
            # question still counts as HasAns (the official has_ans test is bool(answers))
            ("punct_gold", ["!!!"]),
        ]
    )
    preds = {"empty_pred": "", "article_pred": "the", "wrong_pred": "Paris", "punct_gold": ""}
    result = squad_v2_evaluate(dataset, preds)
    # exact = f1 = 100 * (1 + 1 + 0 + 1) / 4 = 75
    assert result["exact"] == pytest.approx(75.0)
    assert result["f1"] == pytest.approx(75.0)
    assert result["HasAns_total"] == 1 and result["HasAns_exact"] == pytest.approx(100.0)
    # NoAns: (1 + 1 + 0) / 3
    assert result["NoAns_total"] == 3
    assert result["NoAns_exact"] == pytest.approx(200 / 3)
    assert list(result) == [
        "exact",
        "f1",
        "total",
        "HasAns_exact",
        "HasAns_f1",
        "HasAns_total",
        "NoAns_exact",
        "NoAns_f1",
        "NoAns_total",
    ]


def test_missing_predictions_skipped_by_v2_counted_zero_by_v1() -> None:
    dataset = make_dataset([("q1", ["Paris"]), ("q2", ["London"]), ("q3", [])])
    preds = {"q1": "Paris", "q3": ""}  # q2 has no prediction
    v2 = squad_v2_evaluate(dataset, preds)
    # v2 skips q2: total 2, both correct -> 100; the splits are over the predicted questions too
    assert v2["total"] == 2
    assert v2["exact"] == pytest.approx(100.0)
    assert v2["HasAns_total"] == 1 and v2["NoAns_total"] == 1

    answerable = make_dataset([("q1", ["Paris"]), ("q2", ["London"])])
    v1 = squad_v1_evaluate(answerable, {"q1": "Paris"})
    # v1 counts q2 as 0: 100 * 1 / 2 = 50
    assert v1 == {"exact_match": pytest.approx(50.0), "f1": pytest.approx(50.0)}


def test_squad_v1_empty_strings_and_unanswerable() -> None:
    # evaluate-v1.1.py has no empty special case: "" vs "" is EM 1 but F1 0 (no common token)
    dataset = make_dataset([("q1", ["the"])])
    assert squad_v1_evaluate(dataset, {"q1": ""}) == {"exact_match": 100.0, "f1": 0.0}
    # ...whereas evaluate-v2.0.py drops the gold "the" (normalises to "") and gives F1 1
    assert squad_v2_evaluate(dataset, {"q1": ""})["f1"] == 100.0
    with pytest.raises(MrcbenchError, match="no gold answer.*squad_v2"):
        squad_v1_evaluate(make_dataset([("q1", [])]), {"q1": ""})


def test_squad_v2_no_answer_threshold_and_best_threshold_search() -> None:
    dataset = make_dataset(
        [
            ("a1", ["Paris"]),  # pred "Paris": exact 1, f1 1
            ("a2", ["big red dog"]),  # pred "red dog": exact 0, f1: P 1, R 2/3 -> 0.8
            ("n1", []),  # pred "London" (non-empty, wrong): exact 0, f1 0
            ("n2", []),  # pred "": exact 1, f1 1
        ]
    )
    preds = {"a1": "Paris", "a2": "red dog", "n1": "London", "n2": ""}
    na_probs = {"a1": 0.1, "a2": 0.5, "n1": 0.6, "n2": 0.9}

    # threshold 1.0: no score exceeds it, raw scores are used
    # exact = (1 + 0 + 0 + 1) / 4 = 50 ; f1 = (1 + 0.8 + 0 + 1) / 4 = 70
    result = squad_v2_evaluate(dataset, preds, na_probs=na_probs, na_prob_thresh=1.0)
    assert result["exact"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(70.0)
    assert result["HasAns_f1"] == pytest.approx(90.0)  # (1 + 0.8) / 2
    assert result["NoAns_exact"] == pytest.approx(50.0)  # (0 + 1) / 2

    # find_best_thresh: start at the number of unanswerable questions (2), walk by increasing na_prob
    #   exact: a1 +1 -> 3 (best, thresh 0.1); a2 +0 -> 3 (not better); n1 -1 -> 2; n2 +0 -> 2
    #          best_exact = 100 * 3 / 4 = 75 at 0.1
    #   f1:    a1 +1 -> 3 (0.1); a2 +0.8 -> 3.8 (best, 0.5); n1 -1 -> 2.8; n2 +0 -> 2.8
    #          best_f1 = 100 * 3.8 / 4 = 95 at 0.5
    assert result["best_exact"] == pytest.approx(75.0)
    assert result["best_exact_thresh"] == 0.1
    assert result["best_f1"] == pytest.approx(95.0)
    assert result["best_f1_thresh"] == 0.5
    assert list(result)[-4:] == ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]

    # threshold 0.55: n1 (0.6) and n2 (0.9) are answered "no answer" and both become right:
    # exact = (1 + 0 + 1 + 1) / 4 = 75 ; f1 = (1 + 0.8 + 1 + 1) / 4 = 95, matching best_f1 above
    thresholded = squad_v2_evaluate(dataset, preds, na_probs=na_probs, na_prob_thresh=0.55)
    assert thresholded["exact"] == pytest.approx(75.0)
    assert thresholded["f1"] == pytest.approx(95.0)
    # a threshold below every score turns a1 and a2 into (wrong) "no answer"s: (0 + 0 + 1 + 1) / 4
    everything_null = squad_v2_evaluate(dataset, preds, na_probs=na_probs, na_prob_thresh=0.0)
    assert everything_null["exact"] == pytest.approx(50.0)
    assert everything_null["HasAns_f1"] == 0.0

    # without na_probs there are no best_* keys
    assert "best_f1" not in squad_v2_evaluate(dataset, preds)
    with pytest.raises(MrcbenchError, match="na_probs has no entry for 1 predicted questions.*'n2'"):
        squad_v2_evaluate(dataset, preds, na_probs={k: v for k, v in na_probs.items() if k != "n2"})


def test_squad_v2_needs_at_least_one_prediction() -> None:
    with pytest.raises(MrcbenchError, match="none of the 1 questions"):
        squad_v2_evaluate(make_dataset([("q1", ["x"])]), {"other": "x"})


@pytest.mark.parametrize("metric", ["squad", "cmrc2018", "squad_v2"])
def test_a_prediction_file_matching_no_question_is_an_error(metric: str, tmp_path: Path, capsys) -> None:
    data = _write_json(tmp_path / "d.json", make_dataset([("q1", ["北京"]), ("q2", ["上海"])]))
    pred = _write_json(tmp_path / "p.json", {"other1": "北京", "other2": "x"})
    with pytest.raises(MrcbenchError, match="none of the 2 questions of the dataset has a prediction"):
        METRICS[metric](json.loads(data.read_text()), json.loads(pred.read_text()))
    assert metrics.command.main([metric, str(data), str(pred)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: scoring") and captured.err.count("\n") == 1


def test_predictions_for_unknown_questions_are_warned_about(caplog) -> None:
    dataset = make_dataset([("q1", ["Paris"]), ("q2", ["London"])])
    with caplog.at_level("WARNING", logger="mrcbench.metrics"):
        result = squad_v1_evaluate(dataset, {"q1": "Paris", "q2": "London", "stray": "x"})
    assert result["exact_match"] == pytest.approx(100.0)
    assert "1 of 3 predictions name no question of the dataset (first: 'stray')" in caplog.text


def test_na_prob_thresh_nan_is_rejected(tiny_files: dict[str, Path], capsys) -> None:
    args = ["squad_v2", str(tiny_files["data"]), str(tiny_files["pred"]), "--na-prob-file", str(tiny_files["na"])]
    assert metrics.command.main([*args, "--na-prob-thresh", "nan"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "na_prob_thresh must be a number, not nan" in captured.err
    assert captured.err.count("\n") == 1


# --------------------------------------------------------------------------------------------------
# CMRC 2018
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        # each CJK character is a segment; the non-CJK run "2018" is word-tokenised on its own
        ("北京大学2018年", ["北", "京", "大", "学", "2018", "年"]),
        # lower-cased English words and numbers between Chinese characters
        ("iPhone 6s发布", ["iphone", "6s", "发", "布"]),
        # full-width punctuation from the list is dropped
        ("《红楼梦》，作者", ["红", "楼", "梦", "作", "者"]),
        # ASCII , is not in the list: nltk splits it off and it stays a segment
        ("Hello, World", ["hello", ",", "world"]),
        # a dropped '-' does not split the run: "e-mail" -> "email"
        ("e-mail", ["email"]),
        # '……' is listed as one two-character string, so single '…' chars never match it
        ("等等……", ["等", "等", "……"]),
        # pinned Treebank-style tokenisation of nltk's word tokenizer
        ("it's 3.5% (approx)", ["it", "'s", "3.5", "%", "(", "approx", ")"]),
        ('"Quoted" can\'t', ["``", "quoted", "''", "ca", "n't"]),
        ("Café au lait，很好", ["café", "au", "lait", "很", "好"]),
        ("", []),
    ],
)
def test_mixed_segmentation(text: str, segments: list[str]) -> None:
    assert mixed_segmentation(text) == segments


def test_mixed_segmentation_keeps_punctuation_segments_without_removal() -> None:
    assert mixed_segmentation("《书》e-mail", remove_punctuation=False) == [
        "《",
        "书",
        "》",
        "e",
        "-",
        "mail",
    ]


def test_cmrc_remove_punctuation_strips_before_removing() -> None:
    assert cmrc_remove_punctuation(" 《红楼梦》，作者 ") == "红楼梦作者"
    # strip() runs first, so the space before the removed '-' survives
    assert cmrc_remove_punctuation("abc -") == "abc "
    assert cmrc_exact("abc", "abc -") == 0
    assert cmrc_f1("abc", "abc -") == 1.0  # segments ["abc"] vs ["abc"]
    # internal whitespace is kept by EM
    assert cmrc_exact("new york", "newyork") == 0


def test_cmrc_ellipsis_quirk() -> None:
    # "。" is removed, "……" is not: gold "等等"
    assert cmrc_exact("等等", "等等。") == 1
    assert cmrc_f1("等等", "等等。") == 1.0
    assert cmrc_exact("等等", "等等……") == 0
    # segments [等, 等] vs [等, 等, ……]: L = 2, P = 2/3, R = 1 -> F1 = 2 * (2/3) / (5/3) = 0.8
    assert cmrc_f1("等等", "等等……") == pytest.approx(0.8)


def test_cmrc_f1_uses_longest_common_substring_not_subsequence() -> None:
    # gold [北, 京, 大, 学] (4), pred [北, 京, 的, 大, 学] (5)
    # longest common *substring* is 2 (北京 or 大学): P = 2/5, R = 2/4 -> F1 = 0.4 / 0.9 = 4/9
    # (a subsequence LCS would give 4: P = 4/5, R = 1 -> 8/9)
    assert longest_common_substring_length(list("北京大学"), list("北京的大学")) == 2
    assert cmrc_f1("北京大学", "北京的大学") == pytest.approx(4 / 9)
    # mixed Chinese, English and numbers: gold [2018, 年, iphone, 发, 布] (5), pred [iphone, 发, 布] (3)
    # L = 3 -> P = 1, R = 3/5 -> F1 = 2 * 0.6 / 1.6 = 0.75
    assert cmrc_f1("2018年iPhone发布", "iPhone发布") == pytest.approx(0.75)
    # nothing in common -> 0 (also when the prediction is empty)
    assert cmrc_f1("北京", "上海") == 0.0
    assert cmrc_f1("北京", "") == 0.0


def _reference_find_lcs_length(first: list[str], second: list[str]) -> int:
    """The DP of cmrc2018_evaluate.py's find_lcs, to check difflib against."""
    table = [[0] * (len(second) + 1) for _ in range(len(first) + 1)]
    best = 0
    for i, a in enumerate(first):
        for j, b in enumerate(second):
            if a == b:
                table[i + 1][j + 1] = table[i][j] + 1
                best = max(best, table[i + 1][j + 1])
    return best


def test_longest_common_substring_matches_the_official_dynamic_programme() -> None:
    rng = random.Random(0)
    for _ in range(500):
        first = [rng.choice("abc") for _ in range(rng.randint(0, 9))]
        second = [rng.choice("abc") for _ in range(rng.randint(0, 9))]
        assert longest_common_substring_length(first, second) == _reference_find_lcs_length(first, second)


def test_cmrc2018_evaluate_counts_missing_as_zero() -> None:
    dataset = make_dataset(
        [
            ("q1", ["北京大学", "北大"]),  # pred "北大": EM 1 via the second gold, F1 1
            ("q2", ["北京大学"]),  # pred "北京的大学": EM 0, F1 4/9 (see above)
            ("q3", ["上海"]),  # no prediction: counts 0, reported in SKIP
        ]
    )
    result = cmrc2018_evaluate(dataset, {"q1": "北大", "q2": "北京的大学"})
    # EM = 100 * 1 / 3 ; F1 = 100 * (1 + 4/9) / 3 ; AVERAGE = (EM + F1) / 2
    assert result["EM"] == pytest.approx(100 / 3)
    assert result["F1"] == pytest.approx(100 * (13 / 9) / 3)
    assert result["AVERAGE"] == pytest.approx((result["EM"] + result["F1"]) / 2)
    assert (result["TOTAL"], result["SKIP"]) == (3, 1)
    assert list(result) == ["AVERAGE", "F1", "EM", "TOTAL", "SKIP"]


def test_cmrc2018_looks_predictions_up_by_stripped_id() -> None:
    dataset = make_dataset([(" q1 ", ["北京"])])
    assert cmrc2018_evaluate(dataset, {"q1": "北京"})["EM"] == 100.0


# --------------------------------------------------------------------------------------------------
# Per-question scores
# --------------------------------------------------------------------------------------------------


def test_per_question_scores_columns_and_values() -> None:
    dataset = make_dataset([("q1", ["the cat sat on the mat"]), ("q2", ["x"]), ("q3", [])], title="Cats")
    frame = per_question_scores("squad_v2", dataset, {"q1": "cat cat sat", "q3": ""})
    assert list(frame.columns) == ["qid", "article", "question", "has_answer", "predicted", "em", "f1"]
    assert frame["qid"].tolist() == ["q1", "q2", "q3"]
    assert frame["article"].tolist() == ["Cats"] * 3
    assert frame["has_answer"].tolist() == [True, True, False]
    assert frame["predicted"].tolist() == [True, False, True]
    assert frame.loc[0, "f1"] == pytest.approx(100 * 4 / 7)
    assert frame.loc[2, ["em", "f1"]].tolist() == [100.0, 100.0]
    # squad_v2 skips a missing prediction (NaN); the other two metrics count it as 0
    assert math.isnan(frame.loc[1, "em"])
    answerable = make_dataset([("q1", ["北京"]), ("q2", ["上海"])])
    for metric in ("squad", "cmrc2018"):
        other = per_question_scores(metric, answerable, {"q1": "北京"})
        assert other["em"].tolist() == [100.0, 0.0]
    with pytest.raises(MrcbenchError, match="unknown metric 'bleu'"):
        per_question_scores("bleu", dataset, {})


def _assert_frame_reproduces(metric: str, dataset: dict, preds: dict[str, str]) -> None:
    frame = per_question_scores(metric, dataset, preds)
    result = METRICS[metric](dataset, preds)
    if metric == "squad_v2":
        assert frame["em"].mean() == pytest.approx(result["exact"])
        assert frame["f1"].mean() == pytest.approx(result["f1"])
        assert frame["predicted"].sum() == result["total"]
        by_answerability = frame[frame["predicted"]].groupby("has_answer")[["em", "f1"]].mean()
        if "HasAns_total" in result:
            assert by_answerability.loc[True, "em"] == pytest.approx(result["HasAns_exact"])
            assert by_answerability.loc[True, "f1"] == pytest.approx(result["HasAns_f1"])
        if "NoAns_total" in result:
            assert by_answerability.loc[False, "f1"] == pytest.approx(result["NoAns_f1"])
    elif metric == "squad":
        assert frame["em"].mean() == pytest.approx(result["exact_match"])
        assert frame["f1"].mean() == pytest.approx(result["f1"])
    else:
        assert frame["em"].mean() == pytest.approx(result["EM"])
        assert frame["f1"].mean() == pytest.approx(result["F1"])
        assert (~frame["predicted"]).sum() == result["SKIP"]
        assert len(frame) == result["TOTAL"]


@pytest.mark.parametrize("metric", ["squad", "squad_v2", "cmrc2018"])
def test_per_question_frame_reproduces_the_totals(metric: str) -> None:
    golds = [("q1", ["the big cat", "cat"]), ("q2", ["北京大学"]), ("q3", ["Paris"]), ("q4", ["red dog"])]
    if metric == "squad_v2":
        golds.append(("q5", []))
    preds = {"q1": "a cat", "q2": "北京的大学", "q4": "big red dog", "q5": "x"}
    _assert_frame_reproduces(metric, make_dataset(golds), preds)


# --------------------------------------------------------------------------------------------------
# Files and command line
# --------------------------------------------------------------------------------------------------


def _write_json(path: Path, content: object) -> Path:
    path.write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def tiny_files(tmp_path: Path) -> dict[str, Path]:
    dataset = make_dataset([("a1", ["Paris"]), ("a2", ["big red dog"]), ("n1", [])])
    return {
        "data": _write_json(tmp_path / "data.json", dataset),
        "pred": _write_json(tmp_path / "pred.json", {"a1": "Paris", "a2": "red dog", "n1": "x"}),
        "na": _write_json(tmp_path / "na.json", {"a1": -2.0, "a2": 0.5, "n1": 3.0}),
    }


def test_cli_prints_official_keys(tiny_files: dict[str, Path], tmp_path: Path, capsys) -> None:
    out_parquet = tmp_path / "sub" / "per_question.parquet"
    args = ["squad_v2", str(tiny_files["data"]), str(tiny_files["pred"])]
    status = metrics.command.main(
        [*args, "--na-prob-file", str(tiny_files["na"]), "--per-question", str(out_parquet)]
    )
    assert status == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == [
        "exact", "f1", "total",
        "HasAns_exact", "HasAns_f1", "HasAns_total",
        "NoAns_exact", "NoAns_f1", "NoAns_total",
        "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh",
    ]  # fmt: skip
    assert printed == score_files("squad_v2", *[tiny_files[k] for k in ("data", "pred", "na")])
    frame = pd.read_parquet(out_parquet)
    assert frame["qid"].tolist() == ["a1", "a2", "n1"]
    assert frame["f1"].mean() == pytest.approx(
        score_files("squad_v2", tiny_files["data"], tiny_files["pred"])["f1"]
    )

    # threshold 2.0: only n1 (3.0) becomes "no answer" and is then right -> exact (1 + 0 + 1) / 3
    assert metrics.command.main([*args, "--na-prob-file", str(tiny_files["na"]), "--na-prob-thresh", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["exact"] == pytest.approx(200 / 3)

    assert metrics.command.main(["cmrc2018", str(tiny_files["data"]), str(tiny_files["pred"])]) == 2
    captured = capsys.readouterr()
    # n1 has no gold answer, which the CMRC metric cannot score
    assert captured.err.startswith("error: scoring") and "no gold answer" in captured.err


def test_cli_squad_and_cmrc_keys(tmp_path: Path, capsys) -> None:
    data = _write_json(tmp_path / "d.json", make_dataset([("q1", ["北京"]), ("q2", ["上海"])]))
    pred = _write_json(tmp_path / "p.json", {"q1": "北京"})
    assert metrics.command.main(["cmrc2018", str(data), str(pred)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "AVERAGE": 50.0, "F1": 50.0, "EM": 50.0, "TOTAL": 2, "SKIP": 1
    }  # fmt: skip
    assert metrics.command.main(["squad", str(data), str(pred)]) == 0
    assert json.loads(capsys.readouterr().out) == {"exact_match": 50.0, "f1": 50.0}


def test_module_entry_point(tiny_files: dict[str, Path]) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mrcbench.metrics",
            "squad_v2",
            str(tiny_files["data"]),
            str(tiny_files["pred"]),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["total"] == 3


@pytest.mark.parametrize(
    ("which", "content", "message"),
    [
        ("pred", "{not json", r"prediction file .*pred\.json is not valid JSON"),
        ("pred", "[1, 2]", r"prediction file .*pred\.json must hold a JSON object"),
        ("pred", '{"a1": 3}', r"prediction file .*pred\.json: the prediction for 'a1' is a int"),
        ("data", '{"version": "1"}', r"data\.json: dataset top level: missing 'data'"),
        (
            "data",
            '{"data": [{"title": "t", "paragraphs": [{"qas": [{"question": "?"}]}]}]}',
            r"data\.json: dataset data\[0\]\.paragraphs\[0\]\.qas\[0\]: missing 'id'",
        ),
        ("na", '{"a1": "high"}', r"na-prob file .*na\.json: the value for 'a1' is not a finite number"),
        ("na", '{"a1": 0.1}', r"scoring .*pred\.json with .*na\.json: na_probs has no entry for 2"),
    ],
)
def test_malformed_files_give_one_line_errors(
    tiny_files: dict[str, Path], which: str, content: str, message: str, capsys
) -> None:
    tiny_files[which].write_text(content, encoding="utf-8")
    paths = [tiny_files["data"], tiny_files["pred"]]
    with pytest.raises(MrcbenchError, match=message):
        score_files("squad_v2", *paths, na_prob_path=tiny_files["na"])
    assert metrics.command.main(["squad_v2", *map(str, paths), "--na-prob-file", str(tiny_files["na"])]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1


def test_missing_file_unknown_metric_and_misplaced_na_file(
    tiny_files: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(MrcbenchError, match=r"prediction file .*absent\.json does not exist"):
        score_files("squad", tiny_files["data"], tmp_path / "absent.json")
    with pytest.raises(MrcbenchError, match="unknown metric 'squad_v3'"):
        score_files("squad_v3", tiny_files["data"], tiny_files["pred"])
    with pytest.raises(MrcbenchError, match="only used by the squad_v2 metric"):
        score_files("squad", tiny_files["data"], tiny_files["pred"], na_prob_path=tiny_files["na"])
    with pytest.raises(MrcbenchError, match=r"cannot read dataset file"):
        score_files("squad", tmp_path, tiny_files["pred"])  # a directory


def test_duplicate_question_ids_are_rejected() -> None:
    with pytest.raises(MrcbenchError, match="duplicate question id 'q1'"):
        squad_v2_evaluate(make_dataset([("q1", ["a"]), ("q1", ["b"])]), {"q1": "a"})


# --------------------------------------------------------------------------------------------------
# The real mirror: gold answers as predictions
# --------------------------------------------------------------------------------------------------


def _gold_predictions(dataset: dict) -> dict[str, str]:
    return {
        qa["id"]: (qa["answers"][0]["text"] if qa["answers"] else "")
        for article in dataset["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    }


@pytest.mark.parametrize(
    ("metric", "relative_path", "score_keys"),
    [
        ("squad_v2", "squad_v2/dev-v2.0-half.json", ("HasAns_exact", "HasAns_f1", "NoAns_exact", "exact")),
        ("squad", "xquad/xquad.en.json", ("exact_match", "f1")),
        ("squad_v2", "xquad/xquad.zh.json", ("HasAns_exact", "HasAns_f1")),
        ("cmrc2018", "cmrc2018/cmrc2018_dev.json", ("EM", "F1", "AVERAGE")),
    ],
)
def test_gold_answers_score_100_on_the_mirror(
    data_dir: Path, tmp_path: Path, metric: str, relative_path: str, score_keys: tuple[str, ...]
) -> None:
    data_path = data_dir / relative_path
    dataset = json.loads(data_path.read_text(encoding="utf-8"))
    preds = _gold_predictions(dataset)
    pred_path = _write_json(tmp_path / "pred.json", preds)
    result = score_files(metric, data_path, pred_path)
    for key in score_keys:
        assert result[key] == pytest.approx(100.0), key
    if metric == "squad_v2" and "NoAns_total" in result:
        assert result["HasAns_total"] + result["NoAns_total"] == result["total"] == len(preds)


def test_per_question_frame_reproduces_totals_on_the_mirror(data_dir: Path) -> None:
    dataset = json.loads((data_dir / "squad_v2/dev-v2.0-half.json").read_text(encoding="utf-8"))
    rng = random.Random(7)
    preds = {}
    for qid, gold in _gold_predictions(dataset).items():
        if rng.random() < 0.1:
            continue  # missing prediction
        words = gold.split()
        preds[qid] = " ".join(words[rng.randint(0, len(words)) :]) if words else rng.choice(["", "the", "x"])
    _assert_frame_reproduces("squad_v2", dataset, preds)


# --------------------------------------------------------------------------------------------------
# MLQA (mlqa_evaluation_v1.py), per answer language
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        # en: lower, drop punctuation, whole-word a/an/the -> " "; "theater" stays
        ("The Eiffel Tower, an icon!", "en", "eiffel tower icon"),
        ("A theater", "en", "theater"),
        # es: "¡" and "," are Unicode punctuation; los/el are articles, "ángeles" is not folded
        ("¡Los Ángeles, el río!", "es", "ángeles río"),
        # de: der/die/das go, "und" stays
        ("Der Rhein, die Donau und das Meer", "de", "rhein donau und meer"),
        # ar: every "ال" becomes a space, at the start of a word ...
        ("الكتاب", "ar", "كتاب"),
        # ... and inside one (the script's quirk): م ا ل ك -> "م" + " " + "ك"
        ("مالك", "ar", "م ك"),
        ("ال", "ar", ""),
        # hi: the danda "।" is punctuation (Po); no articles
        ("भारत की राजधानी।", "hi", "भारत की राजधानी"),
        # vi: cái/của are removed as whole words, "làm" keeps its "là"
        ("Cái bàn của tôi", "vi", "bàn tôi"),
        ("làm", "vi", "làm"),
        # zh: mixed segmentation, one token per U+4E00..U+9FA5 character, other runs split on whitespace
        ("北京2008年奥运会", "zh", "北 京 2008 年 奥 运 会"),
        ("《红楼梦》作者", "zh", "红 楼 梦 作 者"),
        ("iPhone 手机", "zh", "iphone 手 机"),
        # full-width digits, CJK extension A (U+3400..) and U+9FA6 (past the range) stay inside runs
        ("２００８年", "zh", "２００８ 年"),
        ("㐀㐁北\u9fa6\u9fa7", "zh", "㐀㐁 北 \u9fa6\u9fa7"),
        # ASCII symbols are in string.punctuation, hence removed; the ideographic space separates
        ("$5+3=8\u3000元", "zh", "538 元"),
        # el, ru, tr, ro (our extension): whitespace tokens, no article list ("η" stays)
        ("Η Αθήνα, η πρωτεύουσα;", "el", "η αθήνα η πρωτεύουσα"),
        ("Москва — столица России.", "ru", "москва столица россии"),
        # str.lower turns "İ" into "i" + U+0307 (a mark, not punctuation); the apostrophe goes
        ("İstanbul'un nüfusu", "tr", "i\u0307stanbulun nüfusu"),
        ("București, România", "ro", "bucurești românia"),
        # th (our extension): one token per non-space character, combining vowels included
        ("กข คง", "th", "ก ข ค ง"),
        ("สวัสดี", "th", "ส ว ั ส ด ี"),
        # punctuation-only answers normalise to nothing in every language
        ("!!! …", "en", ""),
        ("。，“”", "zh", ""),
        ("$+<=>^`|~", "th", ""),
    ],
)
def test_mlqa_normalize(text: str, language: str, expected: str) -> None:
    assert mlqa_normalize(text, language) == expected


@pytest.mark.parametrize(
    ("gold", "prediction", "language", "exact", "f1"),
    [
        # en: gold [eiffel, tower], prediction [eiffel] -> P 1, R 1/2, F1 2/3
        ("the Eiffel Tower", "Eiffel", "en", 0, 2 / 3),
        # es: gold [río, amazonas] (el removed), prediction [amazonas]
        ("el río Amazonas", "Amazonas", "es", 0, 2 / 3),
        # de: gold [vertrag, von, versailles], prediction [vertrag, versailles] -> P 1, R 2/3, F1 0.8
        ("der Vertrag von Versailles", "Vertrag Versailles", "de", 0, 0.8),
        # ar: "الطالب" loses its article and, by the quirk, the "ال" inside "طالب" too: gold "كتاب الطالب"
        # -> [كتاب, ط, ب], prediction -> [ط, ب]: P 1, R 2/3, F1 0.8
        ("كتاب الطالب", "الطالب", "ar", 0, 0.8),
        # ar: with and without the article both normalise to "مدينة"
        ("المدينة", "مدينة", "ar", 1, 1.0),
        # hi: gold 3 tokens, prediction 1 of them -> P 1, R 1/3, F1 1/2
        ("भारत की राजधानी", "राजधानी", "hi", 0, 0.5),
        # vi: "những cái bàn" loses both words -> "bàn"
        ("những cái bàn", "bàn", "vi", 1, 1.0),
        # zh: gold 北 京 2008 年 奥 运 会 (7), prediction 2008 年 北 京 (4, all shared) -> P 1, R 4/7, F1 8/11
        ("北京2008年奥运会", "2008年北京", "zh", 0, 8 / 11),
        # zh: gold 北 京 大 学 (4), prediction 北 京 的 大 学 (5), 4 shared -> P 4/5, R 1, F1 8/9
        ("北京大学", "北京的大学", "zh", 0, 8 / 9),
        # el: no article removal in the extension, so "η" counts: gold [η, αθήνα], prediction [αθήνα]
        ("η Αθήνα", "Αθήνα", "el", 0, 2 / 3),
        ("в Москве", "Москве", "ru", 0, 2 / 3),
        ("Türkiye'nin başkenti", "başkenti", "tr", 0, 2 / 3),
        ("Marea Neagră", "Neagră.", "ro", 0, 2 / 3),
        # th: gold ก ร ุ ง เ ท พ (7 characters), prediction ก ร ุ ง (4) -> P 1, R 4/7, F1 8/11
        ("กรุงเทพ", "กรุง", "th", 0, 8 / 11),
        # punctuation-only: both sides empty -> EM 1 but F1 0 (nothing in common)
        ("!!!", "?", "en", 1, 0.0),
        ("“”", "。", "zh", 1, 0.0),
        # gold made only of articles normalises to nothing, like an empty prediction
        ("the", "a", "en", 1, 0.0),
        ("los", "", "es", 1, 0.0),
        ("ال", "", "ar", 1, 0.0),
        # empty prediction against a non-empty gold, and the other way round
        ("Paris", "...", "en", 0, 0.0),
        ("—", "x", "ru", 0, 0.0),
    ],
)
def test_mlqa_exact_and_f1(gold: str, prediction: str, language: str, exact: int, f1: float) -> None:
    assert mlqa_exact(gold, prediction, language) == exact
    assert mlqa_f1(gold, prediction, language) == pytest.approx(f1)


def test_mlqa_chinese_f1_is_not_the_squad_f1() -> None:
    # The reason for the metric: SQuAD v1.1 sees each Chinese answer as one token, so its F1 equals EM.
    dataset = make_dataset([("q1", ["北京2008年奥运会"]), ("q2", ["北京大学"])])
    preds = {"q1": "2008年北京", "q2": "北京的大学"}
    assert squad_v1_evaluate(dataset, preds) == {"exact_match": 0.0, "f1": 0.0}
    assert mlqa_evaluate(dataset, preds, "zh")["f1"] == pytest.approx(100 * (8 / 11 + 8 / 9) / 2)


def test_mlqa_evaluate_counts_missing_predictions_as_zero(caplog) -> None:
    # q1 right (EM 1, F1 1), q2 half (gold [red, dog], prediction [dog]: F1 2/3), q3 and q4 unanswered
    dataset = make_dataset(
        [("q1", ["Paris", "paris!"]), ("q2", ["the red dog"]), ("q3", ["x"]), ("q4", ["y"])]
    )
    with caplog.at_level("WARNING", logger="mrcbench.metrics"):
        result = mlqa_evaluate(dataset, {"q1": "Paris", "q2": "a dog", "other": "z"}, "en")
    assert result == {"exact_match": pytest.approx(100 * 1 / 4), "f1": pytest.approx(100 * (1 + 2 / 3) / 4)}
    assert list(result) == ["exact_match", "f1"]
    assert "2 of 4 questions have no prediction" in caplog.text and "'q3'" in caplog.text


def test_mlqa_file_matching_no_question_scores_zero_but_says_so(tmp_path: Path, caplog) -> None:
    """As mlqa_evaluation_v1.py, 0 for a file that answers nothing, but never silently (cf. the error of
    test_a_prediction_file_matching_no_question_is_an_error for the other metrics)."""
    dataset = make_dataset([("q1", ["北京"]), ("q2", ["上海"])])
    with caplog.at_level("WARNING", logger="mrcbench.metrics"):
        assert mlqa_evaluate(dataset, {"other1": "北京", "other2": "x"}, "zh") == {"exact_match": 0.0, "f1": 0.0}
    assert "WARNING: mlqa (zh): none of the 2 questions of the dataset has a prediction" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mrcbench.metrics"):
        mlqa_evaluate(dataset, {"q1": "北京"}, "zh")  # one match: the ordinary missing-prediction line
    assert "none of the" not in caplog.text and "1 of 2 questions have no prediction" in caplog.text

    # `mrcbench score mlqa` prints the official number and the warning on stderr (a fresh process: no
    # pytest logging handlers in the way).
    data = _write_json(tmp_path / "d.json", dataset)
    pred = _write_json(tmp_path / "p.json", {"other1": "北京", "other2": "x"})
    proc = subprocess.run([sys.executable, "-m", "mrcbench.metrics", "mlqa", str(data), str(pred), "--language", "zh"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"exact_match": 0.0, "f1": 0.0}
    assert "WARNING: mlqa (zh): none of the 2 questions of the dataset has a prediction" in proc.stderr

    # The pipeline's prediction step scores through predict.score: the same warning lands in its log.
    from mrcbench.qa import decoding, predict

    caplog.clear()
    with caplog.at_level("WARNING", logger="mrcbench.metrics"):
        result = predict.score("mlqa", dataset, decoding.Predictions(answers={"other1": "北京"}), "zh")
    assert result == {"exact_match": 0.0, "f1": 0.0} and "none of the 2 questions" in caplog.text


def test_mlqa_max_over_gold_answers_with_duplicates() -> None:
    # golds [cat] [cat] [black cat]; prediction "black" -> F1 max(0, 0, 2/3), EM 0
    dataset = make_dataset([("q1", ["cat", "cat", "black cat"])])
    assert mlqa_evaluate(dataset, {"q1": "black"}, "en") == {"exact_match": 0.0, "f1": pytest.approx(200 / 3)}
    assert mlqa_evaluate(dataset, {"q1": "The cat."}, "en") == {"exact_match": 100.0, "f1": 100.0}


def test_mlqa_unknown_or_missing_language_is_one_line_error() -> None:
    dataset = make_dataset([("q1", ["x"])])
    with pytest.raises(
        MrcbenchError, match=r"language 'fr'; supported: en es hi vi de ar zh .*el ru tr ro th"
    ) as info:
        mlqa_evaluate(dataset, {"q1": "x"}, "fr")
    assert "\n" not in str(info.value)
    with pytest.raises(MrcbenchError, match="language 'fr'"):
        mlqa_normalize("x", "fr")
    with pytest.raises(MrcbenchError, match="needs the answer language"):
        per_question_scores("mlqa", dataset, {"q1": "x"})
    with pytest.raises(MrcbenchError, match="has no gold answer; the mlqa metric needs one"):
        mlqa_evaluate(make_dataset([("q1", [])]), {"q1": "x"}, "en")


def test_mlqa_per_question_scores_reproduce_the_total() -> None:
    dataset = make_dataset(
        [("q1", ["北京2008年奥运会"]), ("q2", ["北京大学", "北大"]), ("q3", ["上海"]), ("q4", ["“”"])]
    )
    preds = {"q1": "2008年北京", "q2": "北京的大学", "q4": "。"}
    frame = per_question_scores("mlqa", dataset, preds, "zh")
    assert frame["em"].tolist() == [0.0, 0.0, 0.0, 100.0]
    assert frame["f1"].tolist() == pytest.approx([100 * 8 / 11, 100 * 8 / 9, 0.0, 0.0])
    assert frame["predicted"].tolist() == [True, True, False, True]
    result = mlqa_evaluate(dataset, preds, "zh")
    assert frame["em"].mean() == pytest.approx(result["exact_match"])
    assert frame["f1"].mean() == pytest.approx(result["f1"])
    assert metrics.scoring.evaluate("mlqa", dataset, preds, "zh") == result
    # the other metrics ignore the language
    assert metrics.scoring.evaluate("squad", dataset, preds, "zh") == squad_v1_evaluate(dataset, preds)


def test_mlqa_cli(tmp_path: Path, capsys) -> None:
    data = _write_json(tmp_path / "d.json", make_dataset([("q1", ["北京2008年奥运会"]), ("q2", ["上海"])]))
    pred = _write_json(tmp_path / "p.json", {"q1": "2008年北京"})
    out = tmp_path / "per_question.parquet"
    assert metrics.command.main(["mlqa", str(data), str(pred), "--language", "zh", "--per-question", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"exact_match": 0.0, "f1": pytest.approx(100 * (8 / 11) / 2)}
    assert pd.read_parquet(out)["f1"].mean() == pytest.approx(printed["f1"])
    for argv, message in [
        (["mlqa", str(data), str(pred)], "needs the answer language"),
        (["mlqa", str(data), str(pred), "--language", "xx"], "does not support language 'xx'"),
        (["squad", str(data), str(pred), "--language", "zh"], "--language is only used by the mlqa metric"),
    ]:
        assert metrics.command.main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and message in captured.err and captured.err.count("\n") == 1


# --- equivalence with a transcription of the official script ----------------------------------------

# Pieces random answers are made of: words and articles of every language, characters at the edges of
# the script's CJK range, full-width digits, Unicode and ASCII punctuation, symbols, odd whitespace.
# fmt: off
_PIECES = {
    "latin": ["Paris", "the", "The", "a", "An", "theater", "cat", "İstanbul", "Straße", "ÉCOLE", "x2", "O'Neil"],
    "es": ["el", "la", "Los", "unas", "río", "Ángeles", "ñandú", "un"],
    "de": ["der", "Die", "das", "einem", "Rhein", "Vertrag", "des", "dessen"],
    "vi": ["của", "là", "làm", "cái", "chiếc", "những", "Hà", "Nội", "bàn"],
    "ar": ["ال", "الكتاب", "مالك", "مدينة", "كتاب", "والقلم", "١٢"],
    "hi": ["भारत", "की", "राजधानी", "।", "दिल्ली"],
    # U+4E00 and U+9FA5 end the script's range; U+9FA6 and U+4DFF lie just outside it
    "zh": ["北", "京", "北京", "奥运会", "年", "\u4e00", "\u9fa5", "\u9fa6", "\u4dff", "㐀", "２００８", "ＡＢ", "𠀀"],
    "other": ["Αθήνα", "η", "Москва", "столица", "Türkiye", "București", "กรุงเทพ", "ฯ", "12", "3.5"],
    "punct": [",", ".", "!", "?", "'", '"', "-", "—", "…", "，", "。", "《", "》", "“", "”", "¡", "¿", "«", "»", "·"],
    "symbol": ["$", "+", "<", "=", ">", "^", "`", "|", "~", "%", "€", "°", "©"],
}
# fmt: on
_SEPARATORS = [" ", " ", " ", "", "  ", "\t", "\n", "\u3000", "\xa0", " - "]


def _random_answer(rng: random.Random) -> str:
    kinds = list(_PIECES)
    pieces = [rng.choice(_PIECES[rng.choice(kinds)]) for _ in range(rng.randint(0, 6))]
    text = ""
    for piece in pieces:
        text += rng.choice(_SEPARATORS) + piece
    return text if rng.random() > 0.1 else text.upper()


def _random_prediction(rng: random.Random, golds: list[str]) -> str:
    roll = rng.random()
    if roll < 0.25:
        return rng.choice(golds)
    if roll < 0.6:  # a slice of a gold answer: partial overlaps
        gold = rng.choice(golds)
        start = rng.randint(0, len(gold))
        return gold[start : rng.randint(start, len(gold))]
    if roll < 0.8:
        return rng.choice(golds) + rng.choice(_SEPARATORS) + _random_answer(rng)
    return _random_answer(rng)


def _random_case(rng: random.Random) -> tuple[dict, dict[str, str]]:
    questions, preds = [], {}
    for index in range(rng.randint(1, 6)):
        golds = [_random_answer(rng) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.2:
            golds.append(golds[0])  # duplicates are allowed
        qid = f"q{index}"
        questions.append((qid, golds))
        if rng.random() > 0.15:
            preds[qid] = _random_prediction(rng, golds)
    return make_dataset(questions), preds


def _reference_normalize_extension(text: str, language: str) -> str:
    """Our extension in terms of the official functions: Hindi's treatment (whitespace tokens, no
    articles) for el/ru/tr/ro; for th the same, then one token per non-space character."""
    normalized = mlqa_reference.normalize_answer(text, "hi")
    if language == "th":
        return " ".join(char for char in normalized if not char.isspace())
    return normalized


@pytest.mark.parametrize("language", MLQA_OFFICIAL_LANGUAGES)
def test_mlqa_equals_the_official_script_on_random_data(language: str) -> None:
    rng = random.Random(f"mlqa-{language}")
    compared = 0
    for _ in range(60):
        dataset, preds = _random_case(rng)
        assert mlqa_evaluate(dataset, preds, language) == mlqa_reference.evaluate(
            dataset["data"], preds, language
        )
        for qa in dataset["data"][0]["paragraphs"][0]["qas"]:
            prediction = preds.get(qa["id"], _random_answer(rng))
            for answer in qa["answers"]:
                gold = answer["text"]
                assert mlqa_normalize(gold, language) == mlqa_reference.normalize_answer(gold, language)
                assert mlqa_exact(gold, prediction, language) == mlqa_reference.exact_match_score(
                    prediction, gold, language
                )
                assert mlqa_f1(gold, prediction, language) == mlqa_reference.f1_score(
                    prediction, gold, language
                )
                compared += 1
    assert compared > 300


@pytest.mark.parametrize("language", MLQA_EXTENSION_LANGUAGES)
def test_mlqa_extension_languages_follow_the_official_hindi_branch(language: str) -> None:
    rng = random.Random(f"mlqa-{language}")
    for _ in range(300):
        text = _random_answer(rng)
        assert mlqa_normalize(text, language) == _reference_normalize_extension(text, language)


def test_mlqa_sum_is_accumulated_like_the_official_script() -> None:
    # Many questions with F1 values whose float sum depends on the order and method of accumulation.
    rng = random.Random(11)
    questions = [(f"q{i}", ["a b c d e f g"[: 2 * rng.randint(1, 7) - 1]]) for i in range(500)]
    preds = {qid: "a b c d e f g"[: 2 * rng.randint(1, 7) - 1] for qid, _ in questions}
    dataset = make_dataset(questions)
    assert mlqa_evaluate(dataset, preds, "hi") == mlqa_reference.evaluate(dataset["data"], preds, "hi")


@pytest.mark.parametrize("language", ["en", "es", "de", "ar", "vi", "zh", "el", "ru", "tr", "ro"])
def test_mlqa_on_the_xquad_mirror(data_dir: Path, language: str) -> None:
    """Gold answers score 100; perturbed answers score as the official script (official languages)."""
    dataset = json.loads((data_dir / f"xquad/xquad.{language}.json").read_text(encoding="utf-8"))
    golds = _gold_predictions(dataset)
    assert mlqa_evaluate(dataset, golds, language) == {"exact_match": 100.0, "f1": 100.0}
    rng = random.Random(language)
    preds = {}
    for qid, gold in golds.items():
        if rng.random() < 0.1:
            continue
        start = rng.randint(0, len(gold) // 2)
        preds[qid] = gold[start : rng.randint(len(gold) // 2, len(gold))]
    result = mlqa_evaluate(dataset, preds, language)
    assert 0 < result["exact_match"] < result["f1"] < 100
    if language in MLQA_OFFICIAL_LANGUAGES:
        assert result == mlqa_reference.evaluate(dataset["data"], preds, language)
    frame = per_question_scores("mlqa", dataset, preds, language)
    assert frame["f1"].mean() == pytest.approx(result["f1"])


def test_predict_scores_mlqa_in_the_dataset_language() -> None:
    from mrcbench.qa import decoding, predict

    dataset = make_dataset([("q1", ["北京2008年奥运会"]), ("q2", ["上海"])])
    preds = decoding.Predictions(answers={"q1": "2008年北京", "q2": "上海"})
    assert predict.score("mlqa", dataset, preds, "zh") == mlqa_evaluate(dataset, preds.answers, "zh")
    # whitespace tokens would make the Chinese answer one token: F1 (0 + 1) / 2
    assert predict.score("squad", dataset, preds, "zh")["f1"] == 50.0
    with pytest.raises(MrcbenchError, match="needs the answer language"):
        predict.score("mlqa", dataset, preds, None)


# The scorers as local `evaluate` modules
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["squad", "squad_v2", "cmrc2018", "mlqa"])
def test_evaluate_modules_load_offline_and_match_mrcbench_score(metric: str, tmp_path: Path, monkeypatch,
                                                                capsys) -> None:
    import evaluate

    from mrcbench.metrics import evaluate_modules as evaluate_metrics

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    golds = {"q1": ["北京大学", "北大"], "q2": ["the big red dog"], "q3": ["1923年"], "q4": ["Paris"]}
    if metric == "squad_v2":
        golds["q5"] = []
    predictions = {"q1": "北京", "q2": "a big dog", "q3": "1923年", "q4": "London", "q5": "Paris"}
    predictions = {qid: text for qid, text in predictions.items() if qid in golds}  # evaluate pairs the rows
    na_probs = {"q1": -1.5, "q2": 0.25, "q3": -3.0, "q4": 0.5, "q5": 2.0}
    data = _write_json(tmp_path / "data.json", make_dataset(list(golds.items())))
    pred = _write_json(tmp_path / "pred.json", predictions)
    args = [metric, str(data), str(pred)]
    if metric == "squad_v2":
        args += ["--na-prob-file", str(_write_json(tmp_path / "na.json", na_probs)), "--na-prob-thresh", "1.0"]
    if metric == "mlqa":
        args += ["--language", "en"]
    assert metrics.command.main(args) == 0
    expected = json.loads(capsys.readouterr().out)

    module = evaluate.load(evaluate_metrics.module_path(metric))
    references = [{"id": qid, "answers": {"text": texts, "answer_start": [0] * len(texts)}}
                  for qid, texts in golds.items()]
    preds = [{"id": qid, "prediction_text": text} for qid, text in predictions.items()]
    kwargs = {}
    if metric == "squad_v2":
        preds = [{**p, "no_answer_probability": na_probs[p["id"]]} for p in preds]
        kwargs["no_answer_threshold"] = 1.0
    if metric == "mlqa":
        kwargs["language"] = "en"
    result = module.compute(predictions=preds, references=references, **kwargs)
    assert result == expected
    assert 0 < result.get("f1", result.get("F1")) < 100


def test_scorers_and_data_preparation_share_one_squad_structure_reader() -> None:
    from mrcbench.data.loading import structure_problem

    broken = {"data": [{"paragraphs": [{"qas": [{"id": "q1", "answers": [{"text": 3}]}]}]}]}
    expected = "data[0].paragraphs[0].qas[0].answers[0].text: expected a string, got int"
    assert structure_problem(broken, scoring=True) == expected
    with pytest.raises(MrcbenchError) as info:
        metrics.questions.iter_questions(broken)
    assert str(info.value) == f"dataset {expected}"
    # What the official scripts do not read is not required to score a file, but is to prepare one.
    minimal = {"data": [{"paragraphs": [{"qas": [{"id": "q1", "answers": [{"text": "a"}]}]}]}]}
    assert [q.gold_answers for q in metrics.questions.iter_questions(minimal)] == [("a",)]
    assert structure_problem(minimal) == "data[0]: missing 'title'"


@pytest.mark.parametrize("language", MLQA_LANGUAGES)
def test_the_mlqa_scorer_normalises_every_language_of_the_vocabulary(language):
    """Every language mrcbench/languages.py names (what config validation accepts) has a tokeniser and
    an article rule in the scorer: normalising in it does not fail."""
    assert mlqa_normalize("The  answer, 2008.", language)
