"""CPU kernel pinning (mrcbench/runtime/kernels.py): what ``portable`` sets, where it sets nothing, that the
user's own variables win, what the workflow exports, and the import contract: importing mrcbench sets
nothing, every command computes with the pinned kernels and refuses an unknown setting in one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mrcbench import cli
from mrcbench.errors import MrcbenchError
from mrcbench.runtime import kernels

AVX2 = {"sse4_2", "avx", "avx2", "fma"}


def test_portable_pins_aten_and_mkl_to_avx2_on_an_avx2_x86_cpu():
    environ: dict[str, str] = {}
    added = kernels.apply(environ, flags=AVX2 | {"avx512f"}, machine="x86_64")
    assert added == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
    assert environ == added


@pytest.mark.parametrize(("flags", "machine"), [
    ({"sse4_2", "avx"}, "x86_64"),           # no AVX2: ATen would fault on AVX2 code
    ({"avx2"}, "x86_64"),                    # AVX2 without FMA
    ({"asimd", "sve"}, "aarch64"),           # another architecture
])
def test_portable_pins_nothing_where_the_avx2_paths_do_not_exist(flags, machine):
    environ: dict[str, str] = {}
    assert kernels.apply(environ, flags=flags, machine=machine) == {}
    assert environ == {}


def test_native_pins_nothing_and_the_users_own_variables_win():
    environ = {"MRCBENCH_CPU_KERNELS": "native"}
    assert kernels.apply(environ, flags=AVX2, machine="x86_64") == {}
    assert environ == {"MRCBENCH_CPU_KERNELS": "native"}
    environ = {"MKL_CBWR": "COMPATIBLE"}
    assert kernels.apply(environ, flags=AVX2, machine="x86_64") == {"ATEN_CPU_CAPABILITY": "avx2"}
    assert environ["MKL_CBWR"] == "COMPATIBLE"


def test_an_unknown_setting_is_one_line_naming_the_variable_or_key():
    with pytest.raises(MrcbenchError, match="MRCBENCH_CPU_KERNELS: 'fast' is not one of portable, native"):
        kernels.setting({"MRCBENCH_CPU_KERNELS": "fast"})
    with pytest.raises(MrcbenchError, match="MRCBENCH_CPU_KERNELS: 'fast' is not one of portable, native"):
        kernels.apply({"MRCBENCH_CPU_KERNELS": "fast"})
    with pytest.raises(MrcbenchError, match="cpu_kernels: 'fast' is not one of portable, native"):
        kernels.export("fast", {})


KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MRCBENCH_CPU_KERNELS")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the kernel variables (tests/conftest.py applied the pins)."""
    env = {key: value for key, value in os.environ.items() if key not in KERNEL_VARIABLES}
    env.update(extra)
    return env


def test_importing_mrcbench_sets_nothing_and_the_cli_loads_no_torch():
    """Every module of the package imported in a clean environment: no kernel variable appears. The CLI
    and what it imports before a command load no torch (the pin must come before it)."""
    script = """
import importlib, json, os, pkgutil, sys
import mrcbench.cli
cli_loads_torch = "torch" in sys.modules
import mrcbench
for module in pkgutil.walk_packages(mrcbench.__path__, "mrcbench."):
    if not module.name.endswith(".__main__"):  # a script: runs a command when imported
        importlib.import_module(module.name)
print(json.dumps({"cli_loads_torch": cli_loads_torch, "torch": "torch" in sys.modules,
                  "set": {name: os.environ.get(name) for name in sys.argv[1:]}}))
"""
    out = subprocess.run([sys.executable, "-c", script, *KERNEL_VARIABLES], env=clean_env(), check=True,
                         capture_output=True, text=True)
    seen = json.loads(out.stdout)
    assert seen["cli_loads_torch"] is False and seen["torch"] is True  # torch loaded, nothing pinned
    assert seen["set"] == dict.fromkeys(KERNEL_VARIABLES)


def test_export_passes_the_setting_and_its_pins_to_the_jobs(monkeypatch):
    """The workflow's side: Snakemake's environment, which every job inherits."""
    for name in KERNEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(kernels, "portable_supported", lambda flags=None, machine=None: True)
    seen = kernels.export("native")
    assert seen["MRCBENCH_CPU_KERNELS"] == "native"
    assert seen["ATEN_CPU_CAPABILITY"] is None and seen["MKL_CBWR"] is None
    assert "ATEN_CPU_CAPABILITY" not in os.environ
    seen = kernels.export("portable")
    assert seen["MRCBENCH_CPU_KERNELS"] == "portable"
    assert seen["ATEN_CPU_CAPABILITY"] == "avx2" and seen["MKL_CBWR"] == "AVX2"


def test_every_command_refuses_an_unknown_setting_in_one_line(monkeypatch, capsys):
    """Before it imports its module; the real entry point included."""
    monkeypatch.setenv("MRCBENCH_CPU_KERNELS", "fast")
    for command in cli.COMMANDS:
        assert cli.main([command, "--help"]) == 2, command
        assert capsys.readouterr().err == "error: MRCBENCH_CPU_KERNELS: 'fast' is not one of portable, native\n"
    refused = subprocess.run([sys.executable, "-m", "mrcbench.cli", "validate-config", "config.yaml"],
                             env=clean_env(MRCBENCH_CPU_KERNELS="fast"), capture_output=True, text=True,
                             check=False)
    assert refused.returncode == 2
    assert refused.stderr == "error: MRCBENCH_CPU_KERNELS: 'fast' is not one of portable, native\n"


PROBE = """
import hashlib, json, os
import torch
torch.manual_seed(0)
torch.set_num_threads(1)
x = torch.randn(64, 384)
w = torch.randn(384, 1536)
y = torch.softmax(x @ w, dim=-1)
q = torch.randn(1, 12, 128, 32)
a = torch.nn.functional.scaled_dot_product_attention(q, q, q)
print(json.dumps({"capability": str(torch.backends.cpu.get_cpu_capability()),
                  "digest": hashlib.sha256(y.numpy().tobytes() + a.numpy().tobytes()).hexdigest(),
                  "pins": {name: os.environ.get(name) for name in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}}))
"""

CLI_PROBE = """
import sys
from mrcbench import cli
cli.COMMANDS["probe"] = ("kernel_probe", "main", "computes with torch")
sys.exit(cli.main(["probe"]))
"""


def probe(tmp_path, through_cli: bool, **extra: str) -> dict:
    """The PROBE's bits and dispatch level: as a plain script, or as the module of a command that the
    CLI (:func:`mrcbench.cli.main`) dispatches to, which imports torch only when it runs."""
    (tmp_path / "kernel_probe.py").write_text(f"def main(argv):\n    exec({PROBE!r}, {{}})\n", encoding="utf-8")
    env = clean_env(PYTHONPATH=os.pathsep.join(filter(None, (str(tmp_path), os.environ.get("PYTHONPATH")))), **extra)
    out = subprocess.run([sys.executable, "-c", CLI_PROBE if through_cli else PROBE], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def test_a_command_computes_with_the_pinned_kernels(tmp_path):
    """The pins are set before torch's first operation: a command gives the bits of a process started
    with the variables set, and (with ``native``) those of plain torch. (On a CPU whose widest path is
    AVX2 the bits agree anyway; the pins the command saw still tell.)"""
    pinned = probe(tmp_path, through_cli=True)
    explicit = probe(tmp_path, through_cli=False, ATEN_CPU_CAPABILITY="avx2", MKL_CBWR="AVX2")
    plain = probe(tmp_path, through_cli=False)
    native = probe(tmp_path, through_cli=True, MRCBENCH_CPU_KERNELS="native")
    assert native == plain and native["pins"] == {"ATEN_CPU_CAPABILITY": None, "MKL_CBWR": None}
    if kernels.portable_supported():
        assert pinned == explicit
        assert pinned["capability"] == "AVX2" and pinned["pins"] == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
    else:  # nothing to pin on this CPU: the command computes as plain torch does
        assert pinned == plain
