"""A throw-away single-node SLURM cluster on localhost, for tests of the SLURM execution path.

Why a real cluster: the Snakemake SLURM executor builds ``sbatch`` command lines from rule resources,
re-enters Snakemake inside the job through ``srun`` (the ``slurm-jobstep`` executor) and polls job
states. Mocking ``sbatch`` would test none of that; a real ``slurmctld`` + ``slurmd`` pair tests all of
it and starts in about three seconds.

What the cluster looks like and why:

* Everything (munge key and socket, ``slurm.conf``, state, spool, logs, pid files) lives in one
  fresh directory under the system temp dir; nothing in ``/etc`` or ``/run`` is read or written, so
  it runs in a container without systemd and next to a system SLURM or another test cluster.
  The directory is short on purpose: a unix socket path must stay under 108 bytes.
* ``munged`` runs with its own key and socket; ``slurm.conf`` points at that socket via
  ``AuthInfo=socket=...``, and every client command finds ``slurm.conf`` through ``SLURM_CONF``
  (see :meth:`SlurmCluster.env`).
* One node ``localhost`` (``slurmd -N localhost``) in two partitions, ``debug`` (the default) and
  ``batch``; controller and node ports are picked free at start-up.
* No cgroups: ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``,
  ``JobAcctGatherType=jobacct_gather/none`` (containers rarely delegate a cgroup tree).
* No accounting storage (no ``slurmdbd``): ``sacct`` is unavailable, so job states are read with
  ``squeue``. ``MinJobAge=600`` keeps finished jobs visible to ``squeue`` for ten minutes, which is
  what the Snakemake SLURM executor's ``status_command: squeue`` mode requires.
* ``SlurmdParameters=config_overrides`` lets the node advertise at least 4 CPUs on a smaller CI
  runner, so rules declaring a few threads can still be scheduled (jobs then share cores).

Daemons run as root (``slurmd`` must, to start job steps); callers are skipped when not root or when
the binaries are missing (install them with ``.ci/setup_slurm.sh``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

CLUSTER_NAME = "mrcbench-test"
# Two partitions over the same node: ``debug`` is the default, ``batch`` must be asked for, so a test
# can tell whether a requested partition reached sbatch.
PARTITIONS = ("debug", "batch")
NODE_NAME = "localhost"
# Binaries the cluster needs: daemons, the key generator, and the client commands the tests and the
# Snakemake executor call.
REQUIRED_BINARIES = (
    "munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel",
)
# Memory left to the operating system when the node's RealMemory is derived from the host.
RESERVED_MEMORY_MB = 512
MIN_ADVERTISED_CPUS = 4


class SlurmClusterError(RuntimeError):
    """The local test cluster could not be started; the message carries the daemon log tails."""


@dataclass(frozen=True)
class SlurmCluster:
    """A running local cluster: where its configuration lives and how to talk to it."""

    root: Path
    conf_path: Path
    partitions: tuple[str, ...]
    node_name: str
    cpus: int
    real_memory_mb: int

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for client commands (``sbatch``, ``squeue``, Snakemake).

        ``base`` (default ``os.environ``) plus ``SLURM_CONF``, with the cluster's ``bin`` (the ``srun``
        wrapper of :func:`write_srun_wrapper`) first on ``PATH``. Inherited ``SLURM_*`` variables are
        dropped so that a test run inside a real SLURM job neither talks to nor inherits job settings
        from the outer cluster.
        """
        env = {key: value for key, value in (os.environ if base is None else base).items()
               if not key.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf_path)
        env["PATH"] = os.pathsep.join([str(self.root / "bin"), env.get("PATH", os.defpath)])
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster and capture its output."""
        return subprocess.run(list(args), env=self.env(), capture_output=True, text=True, check=check,
                              timeout=timeout)

    def job_states(self) -> dict[str, tuple[str, str]]:
        """``{job id: (job name, state)}`` for every job the controller still remembers."""
        listing = self.run("squeue", "--states=all", "--noheader", "--format=%i|%j|%T").stdout
        states = {}
        for line in listing.splitlines():
            job_id, name, state = line.strip().split("|")
            states[job_id] = (name, state)
        return states

    def job_details(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` of one job as ``{field: value}`` (e.g. ``NumCPUs``, ``TimeLimit``)."""
        record = self.run("scontrol", "--oneliner", "show", "job", job_id).stdout
        details = {}
        for token in record.split():
            key, sep, value = token.partition("=")
            if sep:
                details[key] = value
        return details

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of each daemon log, for failure messages."""
        return _log_tails(self.root, lines)


def missing_binaries() -> list[str]:
    """Names from :data:`REQUIRED_BINARIES` that are not on ``PATH`` (``/usr/sbin`` included)."""
    search_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    return [name for name in REQUIRED_BINARIES if shutil.which(name, path=search_path) is None]


def skip_reason() -> str | None:
    """Why a local cluster cannot be started here, or ``None`` when it can."""
    missing = missing_binaries()
    if missing:
        return f"SLURM/munge not installed (missing {', '.join(missing)}); run .ci/setup_slurm.sh"
    if os.geteuid() != 0:
        return "the local SLURM test cluster needs root (slurmd starts job steps as the submitting user)"
    return None


def _binary(name: str) -> str:
    search_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    found = shutil.which(name, path=search_path)
    if found is None:
        raise SlurmClusterError(f"{name} not found; run .ci/setup_slurm.sh")
    return found


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _total_memory_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise SlurmClusterError("MemTotal missing from /proc/meminfo")


def _log_tails(root: Path, lines: int) -> str:
    parts = []
    for log in sorted((root / "log").glob("*")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {log.name} ---\n" + "\n".join(text))
    return "\n".join(parts) or "(no daemon logs written)"


def render_slurm_conf(root: Path, *, munge_socket: Path, controller_port: int, node_port: int, cpus: int,
                      real_memory_mb: int) -> str:
    """The ``slurm.conf`` of the test cluster (see the module docstring for the choices)."""
    default_memory_per_cpu = max(256, min(1024, real_memory_mb // (2 * cpus)))
    return "\n".join([
        f"ClusterName={CLUSTER_NAME}",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={controller_port}",
        f"SlurmdPort={node_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'run' / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SwitchType=switch/none",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        # Memory is a consumable resource, so a rule's mem_mb is enforced at scheduling time.
        "SelectTypeParameters=CR_Core_Memory",
        f"DefMemPerCPU={default_memory_per_cpu}",
        "SlurmdParameters=config_overrides",
        "ReturnToService=2",
        "MinJobAge=600",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "InactiveLimit=0",
        "KillWait=5",
        f"NodeName={NODE_NAME} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={real_memory_mb} State=UNKNOWN",
        *(f"PartitionName={name} Nodes={NODE_NAME} Default={'YES' if index == 0 else 'NO'} MaxTime=INFINITE "
          "State=UP" for index, name in enumerate(PARTITIONS)),
        "",
    ])


def write_srun_wrapper(bin_dir: Path, conf_path: Path) -> Path:
    """Write ``bin_dir/srun``: the real ``srun`` with ``SLURM_CONF`` set to this cluster's configuration.

    Why: inside a job, the Snakemake ``slurm-jobstep`` executor (0.6) removes every ``SLURM_*``
    variable except the job identity -- ``SLURM_CONF`` included -- before it calls ``srun``. A real
    cluster keeps ``slurm.conf`` where ``srun`` looks without being told (``/etc/slurm`` or the
    configless cache of ``slurmd``); this private cluster cannot, so ``srun`` is told again here.
    """
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "srun"
    wrapper.write_text("#!/bin/sh\n"
                       "# srun for the mrcbench test cluster; see tests/support/slurm_cluster.py:write_srun_wrapper\n"
                       f"SLURM_CONF='{conf_path}'\n"
                       "export SLURM_CONF\n"
                       f"exec '{_binary('srun')}' \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


class _Daemon:
    """A daemon started in the foreground (``-D``/``-F``) as our own child, stopped by its pid."""

    def __init__(self, name: str, argv: list[str], root: Path, env: dict[str, str]):
        self.name = name
        self._output = open(root / "log" / f"{name}.stdout", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(argv, stdout=self._output, stderr=subprocess.STDOUT, env=env,
                                        stdin=subprocess.DEVNULL, start_new_session=True)

    def exited(self) -> int | None:
        return self.process.poll()

    def stop(self, timeout: float = 15) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._output.close()


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str, root: Path, daemons: list[_Daemon]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for daemon in daemons:
            if daemon.exited() is not None:
                raise SlurmClusterError(f"{daemon.name} exited with status {daemon.exited()} while waiting for "
                                        f"{what}\n{_log_tails(root, 30)}")
        if predicate():
            return
        time.sleep(0.25)
    raise SlurmClusterError(f"timed out after {timeout:.0f} s waiting for {what}\n{_log_tails(root, 30)}")


def _cancel_jobs_and_wait(cluster: SlurmCluster, timeout: float = 20) -> None:
    """Cancel every job of this cluster so that no job step outlives the daemons."""
    cluster.run("scancel", "--full", f"--partition={','.join(cluster.partitions)}", check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = cluster.run("squeue", "--noheader", "--states=PENDING,RUNNING,COMPLETING,CONFIGURING",
                              "--format=%i", check=False)
        if listing.returncode != 0 or not listing.stdout.strip():
            return
        time.sleep(0.5)


@contextmanager
def local_slurm_cluster(*, cpus: int | None = None, real_memory_mb: int | None = None,
                        startup_timeout: float = 60, keep_dir: bool = False) -> Iterator[SlurmCluster]:
    """Start ``munged``, ``slurmctld`` and ``slurmd`` for a one-node cluster; stop and delete it on exit.

    ``cpus`` defaults to ``max(4, os.cpu_count())`` and ``real_memory_mb`` to the host's memory minus
    512 MiB. Returns once ``sinfo`` reports the node idle. Raises :class:`SlurmClusterError` (with the
    daemon log tails) when a daemon dies or the node does not come up within ``startup_timeout`` s.
    ``keep_dir`` leaves the directory (configuration, logs) in place for debugging.
    """
    reason = skip_reason()
    if reason:
        raise SlurmClusterError(reason)
    cpus = cpus or max(MIN_ADVERTISED_CPUS, os.cpu_count() or 1)
    real_memory_mb = real_memory_mb or max(1024, _total_memory_mb() - RESERVED_MEMORY_MB)

    root = Path(tempfile.mkdtemp(prefix="mrcslurm-"))
    with ExitStack() as stack:
        if not keep_dir:
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        # munged warns unless every directory above its socket is searchable by everybody.
        root.chmod(0o755)
        for sub in ("munge", "state", "spool", "run", "log"):
            (root / sub).mkdir()
        (root / "munge").chmod(0o700)  # holds the key
        munge_key = root / "munge" / "munge.key"
        munge_socket = root / "run" / "munge.socket"
        conf_path = root / "slurm.conf"
        conf_path.write_text(render_slurm_conf(root, munge_socket=munge_socket, controller_port=_free_port(),
                                               node_port=_free_port(), cpus=cpus, real_memory_mb=real_memory_mb))
        write_srun_wrapper(root / "bin", conf_path)
        cluster = SlurmCluster(root=root, conf_path=conf_path, partitions=PARTITIONS, node_name=NODE_NAME,
                               cpus=cpus, real_memory_mb=real_memory_mb)
        env = cluster.env()

        subprocess.run([_binary("mungekey"), "--create", f"--keyfile={munge_key}"], check=True,
                       capture_output=True)
        daemons: list[_Daemon] = []

        def stop_daemons() -> None:
            for daemon in reversed(daemons):
                daemon.stop()

        # Registered before the job cancellation below, so the daemons stop after it.
        stack.callback(stop_daemons)

        daemons.append(_Daemon("munged", [
            _binary("munged"), "--foreground", "--force", f"--socket={munge_socket}", f"--key-file={munge_key}",
            f"--pid-file={root / 'run' / 'munged.pid'}", f"--seed-file={root / 'munge' / 'munged.seed'}",
            f"--log-file={root / 'log' / 'munged.log'}",
        ], root, env))
        _wait_until(munge_socket.exists, 15, "the munge socket", root, daemons)

        daemons.append(_Daemon("slurmctld", [_binary("slurmctld"), "-D", "-f", str(conf_path)], root, env))
        daemons.append(_Daemon("slurmd", [_binary("slurmd"), "-D", "-N", NODE_NAME, "-f", str(conf_path)],
                               root, env))

        def node_idle() -> bool:
            state = cluster.run("sinfo", "--noheader", "--Node", f"--nodes={NODE_NAME}", "--format=%T",
                                check=False, timeout=10)
            # One line per partition the node belongs to.
            return state.returncode == 0 and set(state.stdout.split()) == {"idle"}

        _wait_until(node_idle, startup_timeout, f"node {NODE_NAME} to become idle", root, daemons)
        stack.callback(_cancel_jobs_and_wait, cluster)
        yield cluster


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A running local cluster for the tests of one module; skips when SLURM cannot run here."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with local_slurm_cluster() as cluster:
        yield cluster
