"""Naive (one forward per cell) vs fast (prefix-reuse) ablation grid, same process, same inputs.

    python benchmarks/ablation_grid.py --quick            # random 12-layer model, < 1 min on 2 cores
    python benchmarks/ablation_grid.py --model PATH       # a local HF QA checkpoint, synthetic inputs

Three methods: ``naive``; ``fast_eager`` (prefix reuse, every replayed layer in eager attention);
``fast`` (prefix reuse, fused ``sdpa`` attention where no probabilities are read: the default of
``run_grid``). Prints one JSON line: mean wall-clock seconds of each over rounds in rotated order, the
speed-ups, whether every cell's predicted start/end positions agree with the naive grid, the largest
logit difference, and the number of transformer-layer evaluations of the naive and the fast grid.
"""
from __future__ import annotations

import argparse
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

from mrcbench.errors import MrcbenchError
from mrcbench.grid.cells import MODES, grid_cells
from mrcbench.grid.run import run_grid, run_grid_naive
from mrcbench.zones import PAD, PASSAGE, QUESTION, SPECIAL, VARIANTS, ZONES


def synthetic_batches(
    config, n_sequences: int, seq_len: int, batch_size: int, cls_id: int, sep_id: int, seed: int
) -> list[dict[str, torch.Tensor]]:
    """MRC-shaped features: [CLS] question(8-24) [SEP] passage [SEP] PAD, 0-25% padding, padded to seq_len."""
    rng = np.random.default_rng(seed)
    pad_id = config.pad_token_id if config.pad_token_id is not None else 0
    rows, zones, types = [], [], []
    for _ in range(n_sequences):
        question = int(rng.integers(8, 25))
        length = int(rng.integers(int(0.75 * seq_len), seq_len + 1))
        passage = length - question - 3
        ids = rng.integers(5, config.vocab_size, question + passage).tolist()
        rows.append([cls_id, *ids[:question], sep_id, *ids[question:], sep_id] + [pad_id] * (seq_len - length))
        zones.append([SPECIAL] + [QUESTION] * question + [SPECIAL] + [PASSAGE] * passage + [SPECIAL]
                     + [PAD] * (seq_len - length))
        types.append([0] * (question + 2) + [1] * (passage + 1) + [0] * (seq_len - length))
    batches = []
    for start in range(0, n_sequences, batch_size):
        zone_ids = torch.tensor(zones[start : start + batch_size])
        batch = {
            "input_ids": torch.tensor(rows[start : start + batch_size]),
            "attention_mask": (zone_ids != PAD).long(),
            "zone_ids": zone_ids,
        }
        if getattr(config, "type_vocab_size", 0) > 1:
            batch["token_type_ids"] = torch.tensor(types[start : start + batch_size])
        batches.append(batch)
    return batches


def load_model(args: argparse.Namespace) -> tuple[torch.nn.Module, int, int, str]:
    from transformers import AutoModelForQuestionAnswering, BertConfig, BertForQuestionAnswering

    if args.model is None:
        torch.manual_seed(args.seed)
        config = BertConfig(
            vocab_size=1000, hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
            intermediate_size=4 * args.hidden, max_position_embeddings=max(512, args.seq_len),
            initializer_range=0.1,
        )
        model = BertForQuestionAnswering(config)
        return model, 1, 2, f"random-bert-L{args.layers}-H{args.hidden}-A{args.heads}"
    path = Path(args.model)
    if not path.is_dir():
        raise MrcbenchError(f"--model {path} is not a local checkpoint directory")
    model = AutoModelForQuestionAnswering.from_pretrained(path, attn_implementation="eager")
    cls_id = model.config.bos_token_id if model.config.bos_token_id is not None else 1
    sep_id = model.config.eos_token_id if model.config.eos_token_id is not None else 2
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    except (OSError, ValueError):
        pass
    return model, cls_id, sep_id, str(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small random model (defaults below), < 1 min")
    parser.add_argument("--model", help="local HF question-answering checkpoint dir (default: random BERT)")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--n-seqs", type=int, default=None, help="default 32 (--quick) / 256")
    parser.add_argument("--seq-len", type=int, default=None, help="default 256 (--quick) / 384")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--zones", nargs="+", default=list(ZONES))
    parser.add_argument("--modes", nargs="+", default=["layer"], choices=[m for m in MODES if m != "baseline"])
    parser.add_argument("--variant", default="paper", choices=VARIANTS)
    parser.add_argument("--max-stack", type=int, default=None, help="cells per stacked batch (default: 1 on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 with --quick)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per method (default 2, ABBA)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.n_seqs = args.n_seqs or (8 if args.quick else 256)
    args.repeats = args.repeats or 2
    args.seq_len = args.seq_len or (256 if args.quick else 384)
    # On a shared small CPU box, OpenMP threads spinning against other processes inflate timings
    # several-fold and erratically; --quick therefore pins one thread unless told otherwise.
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)

    model, cls_id, sep_id, name = load_model(args)
    model = model.to(args.device).eval()
    config = model.config
    batches = synthetic_batches(config, args.n_seqs, args.seq_len, args.batch_size, cls_id, sep_id, args.seed)
    cells = grid_cells(config.num_hidden_layers, config.num_attention_heads, args.zones, args.modes, ["renorm"], 0,
                       {})

    def timed(function):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = function(model, batches, cells, args.variant)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return result, time.perf_counter() - start

    run_grid(model, batches[:1], cells[:2], args.variant)  # warm-up (allocator, kernels) for every method
    methods = {
        "naive": run_grid_naive,
        "fast_eager": lambda *a: run_grid(*a, max_stack=args.max_stack, fused=False),
        "fast": lambda *a: run_grid(*a, max_stack=args.max_stack),
    }
    # the order rotates over the rounds so that drifting machine load hits every method alike
    outputs, times = {}, {method: [] for method in methods}
    for round_index in range(args.repeats):
        names = list(methods)
        names = names[round_index % len(names):] + names[: round_index % len(names)]
        for method in names:
            outputs[method], seconds = timed(methods[method])
            times[method].append(seconds)
    seconds = {method: sum(values) / len(values) for method, values in times.items()}
    naive = outputs["naive"]

    def identical(fast):
        return all(
            np.array_equal(fast[cell].start_logits.argmax(1), naive[cell].start_logits.argmax(1))
            and np.array_equal(fast[cell].end_logits.argmax(1), naive[cell].end_logits.argmax(1))
            for cell in cells
        )

    def max_diff(fast):
        return max(
            float(np.abs(getattr(fast[cell], name) - getattr(naive[cell], name)).max())
            for cell in cells
            for name in ("start_logits", "end_logits")
        )

    n_layers = config.num_hidden_layers
    masked = [cell for cell in cells if cell.mode != "baseline"]
    result = {
        "benchmark": "ablation_grid",
        "model": name,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "n_sequences": args.n_seqs,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "max_stack": args.max_stack,
        "layers": n_layers,
        "cells": len(cells),
        "modes": args.modes,
        "variant": args.variant,
        "repeats": args.repeats,
        "naive_seconds": round(seconds["naive"], 3),
        "fast_eager_seconds": round(seconds["fast_eager"], 3),
        "fast_seconds": round(seconds["fast"], 3),
        "seconds_per_round": {method: [round(t, 3) for t in values] for method, values in times.items()},
        "speedup": round(seconds["naive"] / seconds["fast"], 3),
        "speedup_eager_replay": round(seconds["naive"] / seconds["fast_eager"], 3),
        "fused_replay_speedup": round(seconds["fast_eager"] / seconds["fast"], 3),
        "identical_predictions": identical(outputs["fast"]),
        "identical_predictions_eager_replay": identical(outputs["fast_eager"]),
        "max_abs_logit_diff": max_diff(outputs["fast"]),
        "max_abs_logit_diff_eager_replay": max_diff(outputs["fast_eager"]),
        "layer_evaluations_naive": len(cells) * n_layers,
        "layer_evaluations_fast": n_layers + sum(n_layers - cell.layer for cell in masked),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    try:
        main()
    except MrcbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
