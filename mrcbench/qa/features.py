"""Token windows for extractive MRC with BERT's sliding-window semantics on a fast tokenizer.

Every (question, passage) pair becomes one or more *features* (windows) laid out with the tokenizer's
own pair template: ``[CLS] question [SEP] passage-window [SEP]`` for BERT/ALBERT/ELECTRA and
``<s> question </s></s> passage-window </s>`` for RoBERTa/XLM-R.

Windowing follows Google's ``run_squad.py`` (the paper's code), not HF's ``stride`` argument:

* the question is truncated to its first ``max_query_length`` tokens;
* each window holds at most ``max_tokens_for_doc = max_seq_length - len(question) - n_special`` passage
  tokens;
* window *starts* step by ``doc_stride`` tokens (HF's ``stride`` is the *overlap* between windows, so
  HF windows only coincide with BERT's when ``stride = max_tokens_for_doc - doc_stride``, which depends
  on the question length);
* the last window is the first one that reaches the end of the passage (it may be shorter).

A passage token that appears in several windows is scored only in the window where it has the most
context (BERT's ``_check_is_max_context``: ``min(left, right) + 0.01 * window_length``, first window
wins ties); decoding lets an answer *start* only at such tokens.

The passage is tokenised once with character offsets (``add_special_tokens=False``), so windows never
re-tokenise a substring, and answers are read back from the original text through the offsets (no
spaces are inserted into Chinese, accents and case are kept). Offsets are trimmed of surrounding
whitespace: SentencePiece/Metaspace tokenizers (XLM-R) give a ``"▁word"`` token the span of the space
before it, which would otherwise make that space part of an extracted answer and misplace answer
starts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mrcbench.config import Features, passage_room
from mrcbench.data.validation import realign
from mrcbench.errors import MrcbenchError
from mrcbench.zones import PAD, zone_ids_from_sequence_ids

log = logging.getLogger(__name__)

Offset = tuple[int, int]

#: Examples tokenised per call to the fast tokenizer (one progress-bar step).
_TOKENIZE_CHUNK = 512
#: How far (in characters) an annotated ``answer_start`` may be off before the answer counts as
#: unaligned; CMRC 2018's own training script shifts misannotated starts back by up to 3 characters.
MAX_ANSWER_START_SHIFT = 3
#: Logit of a position past a window's end, where the logits of windows of different lengths are
#: stacked into one array (prediction, the grid); far below any real logit, never decoded.
PAD_LOGIT = -10000.0


# --------------------------------------------------------------------------------------------------
# The tokenizer's pair template
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts its special tokens around a (question, passage) pair.

    transformers 5 fast tokenizers no longer expose ``build_inputs_with_special_tokens``; the layout
    is read once from the tokenizer's own output on a probe pair, so every template that has the
    form ``prefix A middle B suffix`` (BERT, ALBERT, ELECTRA, RoBERTa, XLM-R) is handled the same way.
    """

    prefix_ids: tuple[int, ...]
    middle_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    prefix_type_ids: tuple[int, ...]
    middle_type_ids: tuple[int, ...]
    suffix_type_ids: tuple[int, ...]
    question_type_id: int
    passage_type_id: int

    @property
    def n_special(self) -> int:
        return len(self.prefix_ids) + len(self.middle_ids) + len(self.suffix_ids)

    @property
    def passage_offset(self) -> int:
        """Index of the first passage token, given the question length is added to it."""
        return len(self.prefix_ids) + len(self.middle_ids)

    def build(
        self, question_ids: Sequence[int], passage_ids: Sequence[int]
    ) -> tuple[list[int], list[int], list[int | None]]:
        """Input ids, token type ids and sequence ids (None = special, 0 = question, 1 = passage)."""
        n_q, n_p = len(question_ids), len(passage_ids)
        input_ids = [*self.prefix_ids, *question_ids, *self.middle_ids, *passage_ids, *self.suffix_ids]
        type_ids = [
            *self.prefix_type_ids,
            *([self.question_type_id] * n_q),
            *self.middle_type_ids,
            *([self.passage_type_id] * n_p),
            *self.suffix_type_ids,
        ]
        sequence_ids: list[int | None] = [
            *([None] * len(self.prefix_ids)),
            *([0] * n_q),
            *([None] * len(self.middle_ids)),
            *([1] * n_p),
            *([None] * len(self.suffix_ids)),
        ]
        return input_ids, type_ids, sequence_ids


def pair_template(tokenizer: Any) -> PairTemplate:
    """Read the special-token layout of ``tokenizer`` for a (question, passage) pair."""
    probe_q, probe_p = "a", "b"
    encoding = tokenizer(probe_q, probe_p, return_token_type_ids=True)
    sequence_ids = encoding.sequence_ids()
    ids, types = encoding["input_ids"], encoding["token_type_ids"]
    q_pos = [i for i, s in enumerate(sequence_ids) if s == 0]
    p_pos = [i for i, s in enumerate(sequence_ids) if s == 1]
    name = type(tokenizer).__name__
    contiguous = (
        q_pos
        and p_pos
        and q_pos == list(range(q_pos[0], q_pos[-1] + 1))
        and p_pos == list(range(p_pos[0], p_pos[-1] + 1))
        and q_pos[-1] < p_pos[0]
    )
    if not contiguous:
        raise MrcbenchError(f"tokenizer {name}: pair template is not 'prefix question middle passage suffix'")
    q0, q1, p0, p1 = q_pos[0], q_pos[-1] + 1, p_pos[0], p_pos[-1] + 1
    template = PairTemplate(
        prefix_ids=tuple(ids[:q0]),
        middle_ids=tuple(ids[q1:p0]),
        suffix_ids=tuple(ids[p1:]),
        prefix_type_ids=tuple(types[:q0]),
        middle_type_ids=tuple(types[q1:p0]),
        suffix_type_ids=tuple(types[p1:]),
        question_type_id=types[q0],
        passage_type_id=types[p0],
    )
    # The template must reproduce the probe exactly, or the tokenizer does something we do not model.
    rebuilt, rebuilt_types, rebuilt_seq = template.build(ids[q0:q1], ids[p0:p1])
    if (rebuilt, rebuilt_types, rebuilt_seq) != (list(ids), list(types), list(sequence_ids)):
        raise MrcbenchError(f"tokenizer {name}: could not reproduce its pair template")
    return template


def _require_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise MrcbenchError(
            f"tokenizer {type(tokenizer).__name__} is not a fast (Rust) tokenizer; offsets and sequence ids "
            "need one (load it with use_fast=True or convert it to tokenizer.json)"
        )


def _returns_token_type_ids(tokenizer: Any) -> bool:
    return "token_type_ids" in getattr(tokenizer, "model_input_names", ())


# --------------------------------------------------------------------------------------------------
# Windows and the max-context rule
# --------------------------------------------------------------------------------------------------
def doc_spans(n_passage_tokens: int, max_tokens_for_doc: int, doc_stride: int) -> list[tuple[int, int]]:
    """BERT's sliding windows over the passage as ``(start, length)`` in passage-token numbering.

    Starts step by ``doc_stride`` (never by more than the window length, so no token is skipped); the
    last window is the first that reaches the passage end. An empty passage gives one empty window,
    so that every question still gets a feature (and a null prediction).
    """
    if max_tokens_for_doc < 1 or doc_stride < 1:
        raise ValueError("max_tokens_for_doc and doc_stride must be positive")
    if n_passage_tokens == 0:
        return [(0, 0)]
    spans: list[tuple[int, int]] = []
    start = 0
    while start < n_passage_tokens:
        length = min(n_passage_tokens - start, max_tokens_for_doc)
        spans.append((start, length))
        if start + length == n_passage_tokens:
            break
        start += min(length, doc_stride)
    return spans


def max_context_window(spans: Sequence[tuple[int, int]], n_passage_tokens: int) -> np.ndarray:
    """For each passage token, the index of the window in which it has the most context.

    BERT's ``_check_is_max_context``: the score of token ``p`` in window ``(start, length)`` is
    ``min(p - start, start + length - 1 - p) + 0.01 * length``; the first window with the highest
    score wins (``np.argmax`` returns the first maximum, as BERT's strict ``>`` does).
    """
    if n_passage_tokens == 0:
        return np.zeros(0, dtype=np.int64)
    positions = np.arange(n_passage_tokens)[None, :]
    starts = np.array([s for s, _ in spans])[:, None]
    lengths = np.array([n for _, n in spans])[:, None]
    ends = starts + lengths - 1
    inside = (positions >= starts) & (positions <= ends)
    score = np.minimum(positions - starts, ends - positions) + 0.01 * lengths
    score = np.where(inside, score, -np.inf)
    return score.argmax(axis=0)


def trim_offsets(context: str, offsets: Sequence[Sequence[int]]) -> list[Offset]:
    """Character spans of passage tokens without surrounding whitespace.

    A Metaspace (``"▁"``) token's span starts at the space before its word; trimming makes the span
    start at the word, so answer starts align and extracted answers carry no leading space. A token
    that is only whitespace (a lone ``"▁"``) becomes an empty span ``(end, end)``.
    """
    trimmed: list[Offset] = []
    for start, end in offsets:
        while start < end and context[start].isspace():
            start += 1
        while end > start and context[end - 1].isspace():
            end -= 1
        trimmed.append((start, end))
    return trimmed


# --------------------------------------------------------------------------------------------------
# Tokenisation shared by training and evaluation features
# --------------------------------------------------------------------------------------------------
@dataclass
class _Window:
    """One feature before it is split into the training or evaluation layout."""

    example_index: int
    span_start: int  # first passage token of the window (passage-token numbering)
    span_length: int
    passage_begin: int  # index of that token inside the feature
    input_ids: list[int]
    token_type_ids: list[int]
    sequence_ids: list[int | None]
    is_max_context: np.ndarray  # bool [span_length]


@dataclass
class _TokenizedExample:
    context_offsets: list[Offset]
    windows: list[_Window]


def _field(example: Mapping[str, Any], key: str, index: int) -> Any:
    try:
        return example[key]
    except KeyError:
        qid = example.get("id", f"#{index}")
        raise MrcbenchError(f"example {qid}: missing key '{key}'") from None


def _check_lengths(
    template: PairTemplate, max_seq_length: int, doc_stride: int, max_query_length: int
) -> None:
    if max_query_length < 1 or doc_stride < 1:
        raise MrcbenchError("features: max_query_length and doc_stride must be positive")
    if passage_room(max_seq_length, max_query_length, template.n_special) < 1:
        raise MrcbenchError(
            f"features: max_seq_length={max_seq_length} leaves no room for the passage after a "
            f"{max_query_length}-token question and {template.n_special} special tokens"
        )


def _tokenize_examples(
    examples: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
    progress: bool,
    desc: str,
) -> Iterator[tuple[int, _TokenizedExample]]:
    """Yield ``(example_index, windows)`` for every example, tokenising in chunks."""
    _require_fast(tokenizer)
    template = pair_template(tokenizer)
    _check_lengths(template, max_seq_length, doc_stride, max_query_length)
    bar = tqdm(
        total=len(examples),
        desc=desc,
        unit="q",
        dynamic_ncols=True,
        disable=not progress or len(examples) < 1000,
    )
    for chunk_start in range(0, len(examples), _TOKENIZE_CHUNK):
        chunk = examples[chunk_start : chunk_start + _TOKENIZE_CHUNK]
        questions = [str(_field(ex, "question", chunk_start + i)).strip() for i, ex in enumerate(chunk)]
        contexts = [str(_field(ex, "context", chunk_start + i)) for i, ex in enumerate(chunk)]
        # SQuAD has ~5 questions per paragraph: tokenise each distinct passage once.
        unique_contexts = list(dict.fromkeys(contexts))
        q_ids = tokenizer(questions, add_special_tokens=False, verbose=False)["input_ids"]
        ctx_enc = tokenizer(
            unique_contexts, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        ctx_by_text = {
            text: (ids, trim_offsets(text, offsets))
            for text, ids, offsets in zip(unique_contexts, ctx_enc["input_ids"], ctx_enc["offset_mapping"])
        }
        for i, (question_ids, context) in enumerate(zip(q_ids, contexts)):
            passage_ids, passage_offsets = ctx_by_text[context]
            question_ids = question_ids[:max_query_length]
            max_tokens_for_doc = passage_room(max_seq_length, len(question_ids), template.n_special)
            spans = doc_spans(len(passage_ids), max_tokens_for_doc, doc_stride)
            best_window = max_context_window(spans, len(passage_ids))
            passage_begin = template.passage_offset + len(question_ids)
            windows = []
            for w, (start, length) in enumerate(spans):
                input_ids, type_ids, sequence_ids = template.build(
                    question_ids, passage_ids[start : start + length]
                )
                windows.append(
                    _Window(
                        example_index=chunk_start + i,
                        span_start=start,
                        span_length=length,
                        passage_begin=passage_begin,
                        input_ids=input_ids,
                        token_type_ids=type_ids,
                        sequence_ids=sequence_ids,
                        is_max_context=best_window[start : start + length] == w,
                    )
                )
            yield chunk_start + i, _TokenizedExample(passage_offsets, windows)
        bar.update(len(chunk))
    bar.close()


# --------------------------------------------------------------------------------------------------
# Padding and batching
# --------------------------------------------------------------------------------------------------
_SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "zone_ids")


def collate(
    items: Sequence[Mapping[str, Any]], pad_token_id: int, pad_to_length: int | None = None
) -> dict[str, torch.Tensor]:
    """Stack feature dicts into int64 tensors, padding sequences to the longest (or ``pad_to_length``).

    Sequence keys (``input_ids``, ``attention_mask``, ``token_type_ids``, ``zone_ids``) are padded with
    ``pad_token_id``, 0, 0 and ``zones.PAD``; scalar keys (``start_positions``, ``end_positions``) are
    stacked as they are. Keys absent from the items are absent from the batch.
    """
    if not items:
        raise ValueError("collate needs at least one feature")
    pad_values = {"input_ids": pad_token_id, "attention_mask": 0, "token_type_ids": 0, "zone_ids": PAD}
    longest = max(len(item["input_ids"]) for item in items)
    width = longest if pad_to_length is None else pad_to_length
    if width < longest:
        raise ValueError(f"a feature has {longest} tokens, more than pad_to_length={pad_to_length}")
    batch: dict[str, torch.Tensor] = {}
    for key in items[0]:
        if key in _SEQUENCE_KEYS:
            value = pad_values[key]
            rows = [list(item[key]) + [value] * (width - len(item[key])) for item in items]
            batch[key] = torch.tensor(rows, dtype=torch.long)
        else:
            batch[key] = torch.tensor([item[key] for item in items], dtype=torch.long)
    return batch


MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The tensors of a feature batch that the model takes, moved to ``device``."""
    return {key: batch[key].to(device) for key in MODEL_INPUT_KEYS if batch.get(key) is not None}


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, mega_batch_mult: int = 50
) -> list[list[int]]:
    """Shuffled batches of indices whose members have similar lengths (less padding on CPU).

    As transformers' ``LengthGroupedSampler``: a seeded permutation is cut into mega-batches of
    ``mega_batch_mult * batch_size`` indices, each mega-batch is sorted by decreasing length and cut
    into batches. The batch order is then shuffled with the same generator, so long and short batches
    are interleaved across the epoch. Only the last batch can be smaller than ``batch_size``.
    Deterministic for a given ``seed``.
    """
    if batch_size < 1 or mega_batch_mult < 1:
        raise ValueError("batch_size and mega_batch_mult must be positive")
    rng = np.random.default_rng(seed)
    lengths_arr = np.asarray(lengths)
    order = rng.permutation(len(lengths_arr))
    mega = batch_size * mega_batch_mult
    batches: list[list[int]] = []
    for m in range(0, len(order), mega):
        block = order[m : m + mega]
        block = block[np.argsort(-lengths_arr[block], kind="stable")]
        batches.extend(block[b : b + batch_size].tolist() for b in range(0, len(block), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


# --------------------------------------------------------------------------------------------------
# Evaluation features
# --------------------------------------------------------------------------------------------------
@dataclass
class EvalFeatures:
    """Evaluation windows (see docs/architecture.md, "Features").

    Lists are stored unpadded, one entry per window; ``batches`` pads. ``offset_mapping[f][t]`` is the
    (whitespace-trimmed) character span of token ``t`` in its example's context, or None for question,
    special and padding tokens. ``token_is_max_context[f]`` maps each passage token index of window
    ``f`` to whether this window gives it the most context. ``window_starts[f]`` is the window's first
    passage token in the passage's own token numbering.
    """

    input_ids: list[list[int]]
    attention_mask: list[list[int]]
    token_type_ids: list[list[int]] | None
    zone_ids: list[list[int]]
    offset_mapping: list[list[Offset | None]]
    example_ids: list[str]
    token_is_max_context: list[dict[int, bool]]
    window_starts: list[int]
    pad_token_id: int
    max_seq_length: int
    pad_to_max_length: bool

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def item(self, index: int) -> dict[str, list[int]]:
        """Model inputs of one window: ``input_ids``, ``attention_mask``, (``token_type_ids``), ``zone_ids``."""
        item = {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index]}
        if self.token_type_ids is not None:
            item["token_type_ids"] = self.token_type_ids[index]
        item["zone_ids"] = self.zone_ids[index]
        return item

    def batches(self, batch_size: int, order: Sequence[int] | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Consecutive batches in feature order (or in ``order``, a permutation of the feature indices),
        padded to the batch's longest window (or max_seq_length)."""
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        if order is None:
            order = range(len(self))
        elif sorted(order) != list(range(len(self))):
            raise ValueError(f"order must be a permutation of the {len(self)} feature indices")
        pad_to = self.max_seq_length if self.pad_to_max_length else None
        for start in range(0, len(self), batch_size):
            indices = order[start : start + batch_size]
            yield collate([self.item(i) for i in indices], self.pad_token_id, pad_to)

    def length_order(self) -> list[int]:
        """Feature indices from the longest window to the shortest (stable): batches taken in this order
        hold windows of similar length, so dynamic padding wastes little (see :func:`mrcbench.grid.table.ablate`)."""
        lengths = self.lengths
        return sorted(range(len(self)), key=lambda index: -lengths[index])

    def features_by_example(self) -> dict[str, list[int]]:
        """Window indices of each question, in window order."""
        grouped: dict[str, list[int]] = {}
        for index, qid in enumerate(self.example_ids):
            grouped.setdefault(qid, []).append(index)
        return grouped


def prepare_eval_features(
    examples: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
    pad_to_max_length: bool,
    progress: bool = True,
) -> EvalFeatures:
    """Windows, zone ids, offsets and max-context flags for every question of ``examples``.

    ``examples`` are flattened examples (``id``, ``question``, ``context``, ...). With
    ``pad_to_max_length`` every batch is padded to ``max_seq_length`` (the paper pads to 512, which
    matters when the ``all`` zone is replicated with padding columns unmasked).
    """
    _require_fast(tokenizer)
    with_types = _returns_token_type_ids(tokenizer)
    out = EvalFeatures(
        input_ids=[],
        attention_mask=[],
        token_type_ids=[] if with_types else None,
        zone_ids=[],
        offset_mapping=[],
        example_ids=[],
        token_is_max_context=[],
        window_starts=[],
        pad_token_id=_pad_token_id(tokenizer),
        max_seq_length=max_seq_length,
        pad_to_max_length=pad_to_max_length,
    )
    stream = _tokenize_examples(
        examples, tokenizer, max_seq_length, doc_stride, max_query_length, progress, "eval features"
    )
    for index, tokenized in stream:
        qid = str(_field(examples[index], "id", index))
        for window in tokenized.windows:
            attention = [1] * len(window.input_ids)
            offsets: list[Offset | None] = [None] * len(window.input_ids)
            max_context: dict[int, bool] = {}
            for k in range(window.span_length):
                offsets[window.passage_begin + k] = tokenized.context_offsets[window.span_start + k]
                max_context[window.passage_begin + k] = bool(window.is_max_context[k])
            out.input_ids.append(window.input_ids)
            out.attention_mask.append(attention)
            if out.token_type_ids is not None:
                out.token_type_ids.append(window.token_type_ids)
            out.zone_ids.append(list(zone_ids_from_sequence_ids(window.sequence_ids, attention)))
            out.offset_mapping.append(offsets)
            out.example_ids.append(qid)
            out.token_is_max_context.append(max_context)
            out.window_starts.append(window.span_start)
    return out


def eval_features(examples: Sequence[Mapping[str, Any]], tokenizer: Any, features_cfg: Features) -> EvalFeatures:
    """:func:`prepare_eval_features` with a run's ``features`` config (``mrcbench.config.features_config``)."""
    return prepare_eval_features(
        examples,
        tokenizer,
        max_seq_length=features_cfg.max_seq_length,
        doc_stride=features_cfg.doc_stride,
        max_query_length=features_cfg.max_query_length,
        pad_to_max_length=features_cfg.pad_to_max_length,
    )


def _pad_token_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        raise MrcbenchError(f"tokenizer {type(tokenizer).__name__} has no pad token; set one before batching")
    return int(pad)


# --------------------------------------------------------------------------------------------------
# Training features
# --------------------------------------------------------------------------------------------------
def locate_answer(context: str, text: str, answer_start: int) -> tuple[int, int, bool] | None:
    """The answer's character span ``[start, end)`` in ``context`` without surrounding whitespace.

    Returns ``(start, end, shifted)``, where ``shifted`` says the annotated start was off by up to
    ``MAX_ANSWER_START_SHIFT`` characters and was corrected to the nearest occurrence of ``text``
    (CMRC 2018 has such annotations). None when ``text`` is not found there (or is blank).
    """
    stripped = text.strip()
    if not stripped:
        return None
    # Leading whitespace inside the annotated text moves the real start to the right.
    start = answer_start + (len(text) - len(text.lstrip()))
    found = realign(context, stripped, start, MAX_ANSWER_START_SHIFT)
    if found is None:
        return None
    return found, found + len(stripped), found != start


def answer_token_span(offsets: Sequence[Offset], char_start: int, char_end: int) -> tuple[int, int] | None:
    """First and last passage token (inclusive) overlapping the characters ``[char_start, char_end)``.

    Tokens with an empty span (a lone ``"▁"``) never start or end an answer. When a token straddles
    the answer boundary (a multi-character Chinese token, a WordPiece inside a word), the token span is
    larger than the answer, as in HF's ``run_qa.py``.
    """
    if not offsets:
        return None
    spans = np.asarray(offsets, dtype=np.int64)
    starts, ends = spans[:, 0], spans[:, 1]
    overlapping = np.flatnonzero((ends > starts) & (ends > char_start) & (starts < char_end))
    if overlapping.size == 0:
        return None
    return int(overlapping[0]), int(overlapping[-1])


@dataclass
class TrainFeatures:
    """Training windows with start/end token labels.

    A window that does not contain the whole answer, and every window of an unanswerable question,
    is labelled with index 0 (the [CLS]/<s> token), as in BERT and HF. ``stats`` counts how answers
    were aligned: ``answers_exact`` (token span text equals the answer), ``answers_inexact`` (the
    token span is wider, e.g. a multi-character Chinese token), ``answers_start_shifted`` (annotated
    start corrected by a few characters), ``answers_unaligned`` (answer text not found at its start,
    or covered by no token: the question is dropped), ``impossible``, ``examples``, ``features``,
    ``windows_with_answer`` and ``windows_without_answer`` (answerable questions' windows labelled 0).
    """

    input_ids: list[list[int]]
    attention_mask: list[list[int]]
    token_type_ids: list[list[int]] | None
    zone_ids: list[list[int]]
    start_positions: list[int]
    end_positions: list[int]
    example_ids: list[str]
    pad_token_id: int
    max_seq_length: int
    stats: dict[str, int] = field(default_factory=dict)
    unaligned_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "input_ids": self.input_ids[index],
            "attention_mask": self.attention_mask[index],
        }
        if self.token_type_ids is not None:
            item["token_type_ids"] = self.token_type_ids[index]
        item["start_positions"] = self.start_positions[index]
        item["end_positions"] = self.end_positions[index]
        return item

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def batch(self, indices: Sequence[int], pad_to_length: int | None = None) -> dict[str, torch.Tensor]:
        """Model inputs and labels of ``indices`` (no ``zone_ids``: a QA head's forward takes none)."""
        return collate([self[i] for i in indices], self.pad_token_id, pad_to_length)


def prepare_train_features(
    examples: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
    progress: bool = True,
) -> TrainFeatures:
    """Training windows labelled with the first gold answer's token span (see ``TrainFeatures``)."""
    _require_fast(tokenizer)
    with_types = _returns_token_type_ids(tokenizer)
    out = TrainFeatures(
        input_ids=[],
        attention_mask=[],
        token_type_ids=[] if with_types else None,
        zone_ids=[],
        start_positions=[],
        end_positions=[],
        example_ids=[],
        pad_token_id=_pad_token_id(tokenizer),
        max_seq_length=max_seq_length,
    )
    stats = dict.fromkeys(
        (
            "examples",
            "features",
            "impossible",
            "answers_exact",
            "answers_inexact",
            "answers_start_shifted",
            "answers_unaligned",
            "windows_with_answer",
            "windows_without_answer",
        ),
        0,
    )
    stream = _tokenize_examples(
        examples, tokenizer, max_seq_length, doc_stride, max_query_length, progress, "train features"
    )
    for index, tokenized in stream:
        example = examples[index]
        qid = str(_field(example, "id", index))
        stats["examples"] += 1
        answers = example.get("answers") or {"text": [], "answer_start": []}
        impossible = bool(example.get("is_impossible", False)) or not answers["text"]
        token_span: tuple[int, int] | None = None
        if impossible:
            stats["impossible"] += 1
        else:
            context = str(example["context"])
            located = locate_answer(context, str(answers["text"][0]), int(answers["answer_start"][0]))
            if located is not None:
                token_span = answer_token_span(tokenized.context_offsets, located[0], located[1])
            if token_span is None:
                stats["answers_unaligned"] += 1
                out.unaligned_ids.append(qid)
                continue
            char_start, char_end, shifted = located
            stats["answers_start_shifted"] += int(shifted)
            first, last = tokenized.context_offsets[token_span[0]], tokenized.context_offsets[token_span[1]]
            exact = first[0] == char_start and last[1] == char_end
            stats["answers_exact" if exact else "answers_inexact"] += 1
        for window in tokenized.windows:
            start_label = end_label = 0
            if token_span is not None:
                window_end = window.span_start + window.span_length
                if window.span_start <= token_span[0] and token_span[1] < window_end:
                    start_label = window.passage_begin + token_span[0] - window.span_start
                    end_label = window.passage_begin + token_span[1] - window.span_start
                    stats["windows_with_answer"] += 1
                else:
                    stats["windows_without_answer"] += 1
            attention = [1] * len(window.input_ids)
            out.input_ids.append(window.input_ids)
            out.attention_mask.append(attention)
            if out.token_type_ids is not None:
                out.token_type_ids.append(window.token_type_ids)
            out.zone_ids.append(list(zone_ids_from_sequence_ids(window.sequence_ids, attention)))
            out.start_positions.append(start_label)
            out.end_positions.append(end_label)
            out.example_ids.append(qid)
    stats["features"] = len(out.input_ids)
    out.stats = stats
    if stats["answers_unaligned"]:
        log.warning(
            "train features: %d of %d answers could not be aligned to tokens and were dropped (e.g. %s)",
            stats["answers_unaligned"],
            stats["examples"],
            ", ".join(out.unaligned_ids[:5]),
        )
    return out
