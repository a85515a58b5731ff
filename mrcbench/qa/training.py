"""Span-extraction fine-tuning with the paper's recipe (docs/method.md §2).

Defaults: lr 3e-5, 10% linear warm-up then linear decay to 0, AdamW with weight decay 0.01 on
everything except biases and LayerNorm weights, global-norm clipping at 1.0, effective batch 64.
Differences from the authors' TF1 BERT optimizer, kept on purpose and recorded in the summary:
torch's AdamW applies bias correction (BERT's did not), and the number of steps is computed from
the number of training *windows* (features), as the CMRC script does, not from examples.

On CPU the effective batch is reached by gradient accumulation over length-grouped micro-batches
with dynamic padding, which changes no gradient but avoids computing on padding. Same seed and same
data give bit-identical weights for a fixed thread count (tested).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mrcbench import data as data_mod
from mrcbench.config import Features, FinetuneJob, Recipe
from mrcbench.errors import MrcbenchError
from mrcbench.models.sources import load_for_qa
from mrcbench.qa import features as feat_mod
from mrcbench.runtime import files, layout
from mrcbench.runtime.files import replace_directory, staging_dir


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Biases and LayerNorm weights are excluded from weight decay (BERT's recipe)."""
    lowered = name.lower()
    return lowered.endswith("bias") or "layernorm" in lowered or "layer_norm" in lowered or param.ndim == 1


def optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if no_decay(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def select_windows(
    train: feat_mod.TrainFeatures, impossible: set[str], answerless_keep: float, cap: int | None, seed: int
) -> tuple[list[int], dict]:
    """Indices of the training windows used, and counts of what was dropped.

    ``answerless_keep`` is the probability of keeping a window that lacks the gold answer of an
    *answerable* question (labelled with the [CLS] position). Such windows are most of a long
    passage's windows (CMRC 2018 at 256 tokens), teach only "not here", and cost as much as a window
    with the answer; downsampling them is the usual remedy (e.g. Natural Questions baselines).
    Windows of unanswerable questions are always kept (they teach the null answer). Then ``cap``
    windows are drawn without replacement (seeded). Both draws use ``seed`` only, so a recipe picks
    the same windows on every machine.
    """
    rng = np.random.default_rng(seed)
    n_all = len(train.input_ids)
    answerless = {
        i for i in range(n_all) if train.start_positions[i] == 0 and train.example_ids[i] not in impossible
    }
    keep = [
        i for i in range(n_all)
        if i not in answerless or answerless_keep >= 1.0 or rng.random() < answerless_keep
    ]
    dropped = n_all - len(keep)
    if cap and cap < len(keep):
        keep = sorted(np.asarray(keep)[rng.choice(len(keep), size=cap, replace=False)].tolist())
    counts = {
        "windows_total": n_all,
        "answerless_windows_of_answerable_questions": len(answerless),
        "answerless_windows_dropped": dropped,
        "windows_used": len(keep),
        "answerless_windows_used": len(answerless.intersection(keep)),
    }
    return keep, counts


def freeze_word_embeddings(model: torch.nn.Module) -> int:
    """Freeze the input (word-piece) embedding matrix; returns its number of parameters.

    For a multilingual model with a large vocabulary (multilingual-e5-small: 250k x 384, 80% of its
    weights) this saves the optimizer's work on rows a small English or Chinese training set barely
    touches, and keeps the pre-trained cross-lingual alignment of the embeddings intact, which
    zero-shot transfer relies on. Position/type embeddings and every layer stay trainable.
    """
    weight = model.get_input_embeddings().weight
    weight.requires_grad_(False)
    return weight.numel()


def finetune(
    model_dir: Path,
    train_json: Path,
    out_dir: Path,
    features_cfg: Features,
    training_cfg: Recipe,
    seed: int,
    init_checkpoint: Path | None,
) -> dict:
    """Fine-tune ``model_dir`` on the SQuAD-format file ``train_json`` with the recipe ``training_cfg``
    (the ``training`` keys fine-tuning reads); write ``out_dir``.

    ``init_checkpoint`` (a fine-tuned QA checkpoint, config key ``training.init_from``; None: the
    pre-trained weights) replaces the pre-trained weights as the starting point: a second fine-tuning
    stage, e.g. CMRC 2018 after English SQuAD. Its tokenizer must be the model's own.

    ``out_dir`` receives ``checkpoint/`` (``save_pretrained``: config, safetensors, tokenizer),
    ``training_log.jsonl`` (one line per optimizer step: step, epoch, loss, lr) and
    ``train_summary.json``. Written to a temporary folder and renamed at the end, so an interrupted
    run leaves no checkpoint that looks finished.
    """
    out_dir = Path(out_dir)
    tmp = staging_dir(out_dir)
    tmp.mkdir(parents=True)
    if training_cfg.threads:
        torch.set_num_threads(int(training_cfg.threads))
    set_seed(seed)

    model, tokenizer = load_for_qa(init_checkpoint or model_dir)
    frozen = freeze_word_embeddings(model) if training_cfg.freeze_embeddings else 0
    dataset = data_mod.loading.load_squad_json(train_json)
    examples = [ex for ex in data_mod.filters.flatten(dataset)]
    if not examples:
        raise MrcbenchError(f"{train_json}: no training questions left")
    train = feat_mod.prepare_train_features(
        examples,
        tokenizer,
        max_seq_length=features_cfg.max_seq_length,
        doc_stride=features_cfg.doc_stride,
        max_query_length=features_cfg.max_query_length,
    )
    n_all = len(train.input_ids)
    impossible = {str(ex["id"]) for ex in examples if ex.get("is_impossible") or not ex["answers"]["text"]}
    order, window_counts = select_windows(
        train, impossible, float(training_cfg.answerless_window_keep),
        training_cfg.max_train_features, seed,
    )
    lengths = [len(train.input_ids[i]) for i in order]

    micro = int(training_cfg.micro_batch_size)
    effective = int(training_cfg.train_batch_size)
    accumulation = max(1, effective // micro)
    epochs = float(training_cfg.epochs)
    micro_per_epoch = math.ceil(len(order) / micro)
    steps_per_epoch = math.ceil(micro_per_epoch / accumulation)
    total_steps = max(1, math.ceil(steps_per_epoch * epochs))
    warmup = int(training_cfg.warmup_ratio * total_steps)

    from transformers import get_linear_schedule_with_warmup  # when training (seconds to import)

    optimizer = torch.optim.AdamW(
        optimizer_groups(model, training_cfg.weight_decay),
        lr=training_cfg.learning_rate,
        betas=tuple(training_cfg.adam_betas),
        eps=training_cfg.adam_epsilon,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)

    model.train()
    started = time.time()
    step, seen = 0, 0
    log_lines = []
    bar = tqdm(total=total_steps, desc=f"fine-tune {Path(model_dir).name}", unit="step", dynamic_ncols=True)
    epoch = 0
    while step < total_steps:
        batches = feat_mod.length_grouped_batches(lengths, micro, seed=seed + epoch)
        for start in range(0, len(batches), accumulation):
            if step >= total_steps:
                break
            group = batches[start:start + accumulation]
            n_group = sum(len(b) for b in group)
            loss_sum = 0.0
            for micro_batch in group:
                batch = train.batch([order[i] for i in micro_batch])
                batch = {k: v.to(model.device) for k, v in batch.items()}
                loss = model(**batch).loss
                (loss * len(micro_batch) / n_group).backward()
                loss_sum += loss.item() * len(micro_batch)
            torch.nn.utils.clip_grad_norm_(model.parameters(), training_cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += n_group
            mean_loss = loss_sum / n_group
            record = {"step": step, "epoch": epoch, "loss": round(mean_loss, 6), "lr": scheduler.get_last_lr()[0]}
            log_lines.append(json.dumps(record))
            bar.set_postfix(loss=f"{mean_loss:.3f}", epoch=epoch)
            bar.update(1)
        epoch += 1
    bar.close()

    model.eval()
    model.to("cpu")
    try:  # a full disk: one line naming the folder; the staging copy goes, an earlier checkpoint stays
        files.save_pretrained(model, layout.checkpoint_dir(tmp), safe_serialization=True)
        files.save_pretrained(tokenizer, layout.checkpoint_dir(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / "training_log.jsonl").write_text("\n".join(log_lines) + "\n")
    summary = {
        "seed": seed,
        "train_file": str(train_json),
        "questions": len(examples),
        "features_total": n_all,
        "features_used": len(order),
        "windows": window_counts,
        "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
        "frozen_embedding_parameters": frozen,
        "alignment": train.stats,
        "unaligned_ids": train.unaligned_ids[:50],
        "optimizer_steps": total_steps,
        "warmup_steps": warmup,
        "micro_batch_size": micro,
        "gradient_accumulation": accumulation,
        "sequences_seen": seen,
        "final_loss": json.loads(log_lines[-1])["loss"] if log_lines else None,
        "seconds": round(time.time() - started, 1),
        "features": features_cfg.as_dict(),
        "training": training_cfg.as_dict(),
        "notes": "torch AdamW with bias correction; steps from training windows (features)",
    }
    (tmp / "train_summary.json").write_text(json.dumps(summary, indent=2))
    replace_directory(tmp, out_dir)
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mrcbench finetune", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the finetune job spec (JSON, mrcbench.config.jobs)")
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--train-json", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--init-checkpoint", default="",
        help="start from this fine-tuned checkpoint instead of the pre-trained model (training.init_from); "
             "empty: the pre-trained model",
    )
    args = parser.parse_args(argv)
    spec = FinetuneJob.from_json(args.spec)
    summary = finetune(
        args.model_dir, args.train_json, args.out, spec.features, spec.training, spec.seed,
        init_checkpoint=Path(args.init_checkpoint) if args.init_checkpoint else None,
    )
    print(json.dumps({k: summary[k] for k in ("questions", "features_used", "optimizer_steps", "final_loss", "seconds")}))
    return 0
