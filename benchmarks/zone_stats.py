"""On-the-fly zone statistics vs statistics from ``output_attentions=True``, at sequence length 384.

    python benchmarks/zone_stats.py --quick            # random 12-layer model, < 1 min on 2 cores
    python benchmarks/zone_stats.py --model PATH       # a local HF QA checkpoint, synthetic inputs

Three ways to run the same batches through the same weights:

``plain``
    eager attention, no statistics (the reference cost);
``on_the_fly``
    the ``"mrcbench"`` attention function accumulating per-layer/head zone masses inside the call
    (:meth:`mrcbench.masking.controller.ZoneAttention.record_stats`);
``output_attentions``
    eager attention returning every attention map, then the same zone masses computed from the maps.

Time: mean wall-clock seconds per method over rounds in rotated order, same process, same inputs;
reported as ratios to ``plain``. Memory: peak resident-memory increase of one pass over the batches
(after one warm-up pass), each method measured in a fresh subprocess with a fixed glibc mmap threshold
so that large tensors are returned to the OS when freed (CPU), or ``torch.cuda.max_memory_allocated``
increase (GPU). Prints one JSON line; also checks that both statistics agree.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mrcbench.runtime import kernels

kernels.apply()  # the CPU kernels of $MRCBENCH_CPU_KERNELS (portable by default), before torch loads

import numpy as np
import torch
from ablation_grid import load_model, synthetic_batches

from mrcbench.errors import MrcbenchError
from mrcbench.masking.controller import ZoneAttention
from mrcbench.masking.recorders import zone_mass_from_probs
from mrcbench.qa.features import model_inputs

METHODS = ("plain", "on_the_fly", "output_attentions")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small random model, < 1 min")
    parser.add_argument("--model", help="local HF question-answering checkpoint dir (default: random BERT)")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--n-seqs", type=int, default=None, help="default 8 (--quick) / 64")
    parser.add_argument("--seq-len", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 with --quick)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure-memory", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.n_seqs = args.n_seqs or (8 if args.quick else 64)
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
    return args


class Runner:
    """The three methods over the same batches; each returns zone masses [N, L, H, 3, 3] (or None)."""

    def __init__(self, args: argparse.Namespace):
        model, cls_id, sep_id, self.name = load_model(args)
        self.eager = model.to(args.device).eval()
        self.eager.set_attn_implementation("eager")
        self.zone_model = copy.deepcopy(self.eager)
        self.controller = ZoneAttention(self.zone_model)
        self.device = torch.device(args.device)
        self.batches = synthetic_batches(
            self.eager.config, args.n_seqs, args.seq_len, args.batch_size, cls_id, sep_id, args.seed
        )

    @torch.inference_mode()
    def run(self, method: str) -> np.ndarray | None:
        masses = []
        for batch in self.batches:
            inputs = model_inputs(batch, self.device)
            if method == "plain":
                self.eager(**inputs)
            elif method == "on_the_fly":
                with self.controller.record_stats(batch["zone_ids"]) as stats:
                    self.zone_model(**inputs)
                masses.append(stats.mass)
            else:
                attentions = self.eager(**inputs, output_attentions=True).attentions
                zone_ids = batch["zone_ids"].to(self.device)
                masses.append(
                    torch.stack([zone_mass_from_probs(probs, zone_ids) for probs in attentions], dim=1).cpu().numpy()
                )
        self.synchronize()
        return np.concatenate(masses) if masses else None

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise MrcbenchError(f"/proc/self/status has no {field}")


def measure_memory(args: argparse.Namespace) -> dict:
    """Peak memory increase of one pass of ``args.measure_memory`` after a warm-up pass (this process)."""
    runner = Runner(args)
    runner.run(args.measure_memory)  # warm-up: lazy initialisation, first-touch of weights
    gc.collect()
    if runner.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        runner.run(args.measure_memory)
        return {"peak_mb": (torch.cuda.max_memory_allocated() - before) / 2**20, "kind": "cuda_max_memory_allocated"}
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    before = _proc_status_kib("VmRSS")
    runner.run(args.measure_memory)
    return {"peak_mb": (_proc_status_kib("VmHWM") - before) / 1024, "kind": "rss_high_water_mark"}


def memory_in_subprocess(method: str, argv: list[str]) -> float | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # fixed threshold: big buffers via mmap, freed to the OS
    completed = subprocess.run(
        [sys.executable, __file__, *argv, "--measure-memory", method],
        env=env, capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        print(completed.stderr, file=sys.stderr)
        return None
    return round(json.loads(completed.stdout.strip().splitlines()[-1])["peak_mb"], 1)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.measure_memory:
        print(json.dumps(measure_memory(args)))
        return {}
    runner = Runner(args)
    for method in METHODS:  # warm-up
        runner.run(method)
    seconds = {method: [] for method in METHODS}
    results = {}
    for round_index in range(args.repeats):
        order = METHODS[round_index % 3 :] + METHODS[: round_index % 3]
        for method in order:
            start = time.perf_counter()
            results[method] = runner.run(method)
            seconds[method].append(time.perf_counter() - start)
    mean = {method: float(np.mean(values)) for method, values in seconds.items()}
    max_diff = float(np.nanmax(np.abs(results["on_the_fly"] - results["output_attentions"])))
    config = runner.eager.config
    memory = {method: memory_in_subprocess(method, argv) for method in METHODS}
    maps_mb = (
        config.num_hidden_layers * args.batch_size * config.num_attention_heads * args.seq_len**2 * 4 / 2**20
    )
    result = {
        "benchmark": "zone_stats",
        "model": runner.name,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "n_sequences": args.n_seqs,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "layers": config.num_hidden_layers,
        "heads": config.num_attention_heads,
        "repeats": args.repeats,
        **{f"{method}_seconds": round(mean[method], 3) for method in METHODS},
        "on_the_fly_time_ratio": round(mean["on_the_fly"] / mean["plain"], 3),
        "output_attentions_time_ratio": round(mean["output_attentions"] / mean["plain"], 3),
        **{f"{method}_peak_mb": memory[method] for method in METHODS},
        "attention_maps_mb_per_batch": round(maps_mb, 1),
        "memory_measure": "cuda_max_memory_allocated" if args.device.startswith("cuda") else "rss_high_water_mark",
        "max_abs_stats_diff": max_diff,
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
