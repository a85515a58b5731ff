"""The Snakemake process a job belongs to: a job whose Snakemake is gone stops without writing results.

Snakemake killed with no chance to clean up (``kill -9``, a closed terminal's SIGKILL) leaves its
running jobs behind: a fine-tuning job would go on for minutes and rename its checkpoint into the
results after the user has restarted the run, under the restarted job's feet. The workflow
(``rules/common.smk``) records its own process in the environment every job inherits
(:data:`ENV`, :func:`token`); every ``mrcbench`` command (:mod:`mrcbench.cli`) watches that process
(:func:`watch`) and, once it is gone, stops as if it had received SIGTERM: temporary files are
removed, nothing is renamed into the results, and the log says why.

The token names the host, the process id and the process's start time (``/proc/PID/stat``), so a
reused process id is not mistaken for Snakemake, and a job on another host (a cluster node, where
Snakemake's job step records its own process) never watches a process it cannot see. Without
``/proc`` (not Linux) nothing is watched.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

ENV = "MRCBENCH_WORKFLOW_PROCESS"
"""The environment variable holding the workflow's process token (``HOST:PID:START``)."""

POLL_SECONDS = 2.0
"""How often a job looks for its Snakemake."""

GRACE_SECONDS = 60.0
"""How long a job that was told to stop may take before it is ended outright."""


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/PID/stat``), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count fields after it.
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def token(pid: int | None = None) -> str | None:
    """The token of process ``pid`` (default: this one), or None where it cannot be read."""
    pid = os.getpid() if pid is None else pid
    start = _start_time(pid)
    return None if start is None else f"{socket.gethostname()}:{pid}:{start}"


def _parse(value: str) -> tuple[str, int, str] | None:
    parts = value.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    host, pid, start = parts
    return host, int(pid), start


def alive(value: str) -> bool:
    """Whether the process of a token still runs (the same process: same host, id and start time)."""
    parsed = _parse(value)
    if parsed is None:
        return False
    host, pid, start = parsed
    return host == socket.gethostname() and _start_time(pid) == start


def watch(environ: dict[str, str] | None = None) -> threading.Thread | None:
    """Watch the workflow process named in the environment (:data:`ENV`), if this host runs it; once it
    is gone, print one line and send this process SIGTERM (the CLI unwinds it like Ctrl-C), and end it
    outright if it is still running :data:`GRACE_SECONDS` later. Returns the watching thread, or None
    when there is nothing to watch (no token, another host, no ``/proc``, or already gone)."""
    value = (os.environ if environ is None else environ).get(ENV)
    if not value or not alive(value):
        return None
    pid = _parse(value)[1]

    def run() -> None:
        while alive(value):
            time.sleep(POLL_SECONDS)
        print(f"error: Snakemake (pid {pid}) is gone: this job stops without writing its results",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(GRACE_SECONDS)
        os._exit(128 + signal.SIGTERM)

    thread = threading.Thread(target=run, name="mrcbench-supervisor", daemon=True)
    thread.start()
    return thread
