"""CPU kernel pinning (mrcbench/runtime/kernels.py): what ``portable`` sets, where it sets nothing, that the
user's own variables win, that the workflow's ``native`` takes the import-time pins back, and that
importing mrcbench really changes the kernels torch computes with."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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
    with pytest.raises(MrcbenchError, match="cpu_kernels: 'fast' is not one of portable, native"):
        kernels.export("fast", {})


def test_a_bad_variable_warns_at_import_and_every_command_refuses_it_in_one_line():
    environ = {**os.environ, "MRCBENCH_CPU_KERNELS": "fast"}
    imported = subprocess.run([sys.executable, "-c", "import mrcbench"], env=environ, capture_output=True, text=True,
                              check=False)
    assert imported.returncode == 0 and "Traceback" not in imported.stderr
    assert "MRCBENCH_CPU_KERNELS: 'fast' is not one of portable, native; pinning the portable kernels" in imported.stderr
    command = subprocess.run([sys.executable, "-W", "ignore", "-m", "mrcbench.cli", "validate-config", "config.yaml"],
                             env=environ, capture_output=True, text=True, check=False)
    assert command.returncode == 2
    assert command.stderr == "error: MRCBENCH_CPU_KERNELS: 'fast' is not one of portable, native\n"


def test_export_native_takes_back_the_pins_importing_mrcbench_set(monkeypatch):
    """Snakemake imports mrcbench (portable pins in its environment) before it reads the config."""
    for name in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MRCBENCH_CPU_KERNELS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(kernels, "ADDED", {})
    monkeypatch.setattr(kernels, "portable_supported", lambda flags=None, machine=None: True)
    assert kernels.apply() == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
    seen = kernels.export("native")
    assert seen["MRCBENCH_CPU_KERNELS"] == "native"
    assert seen["ATEN_CPU_CAPABILITY"] is None and seen["MKL_CBWR"] is None
    assert "ATEN_CPU_CAPABILITY" not in os.environ
    seen = kernels.export("portable")
    assert seen["ATEN_CPU_CAPABILITY"] == "avx2" and seen["MKL_CBWR"] == "AVX2"


PROBE = """
import hashlib, json, sys
if sys.argv[1] == "mrcbench":
    import mrcbench  # noqa: F401
import torch
torch.manual_seed(0)
torch.set_num_threads(1)
x = torch.randn(64, 384)
w = torch.randn(384, 1536)
y = torch.softmax(x @ w, dim=-1)
q = torch.randn(1, 12, 128, 32)
a = torch.nn.functional.scaled_dot_product_attention(q, q, q)
print(json.dumps({"capability": str(torch.backends.cpu.get_cpu_capability()),
                  "digest": hashlib.sha256(y.numpy().tobytes() + a.numpy().tobytes()).hexdigest()}))
"""


def probe(mode: str, **extra: str) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MRCBENCH_CPU_KERNELS")}
    env.update(extra)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_importing_mrcbench_computes_with_the_pinned_kernels():
    """The pins are set before torch's first operation: importing mrcbench first gives the bits of a
    process started with the variables set, and (with ``native``) those of plain torch."""
    pinned = probe("mrcbench")
    explicit = probe("torch", ATEN_CPU_CAPABILITY="avx2", MKL_CBWR="AVX2")
    plain = probe("torch")
    native = probe("mrcbench", MRCBENCH_CPU_KERNELS="native")
    assert native == plain
    if kernels.portable_supported():
        assert pinned == explicit
        assert pinned["capability"] == "AVX2"
    else:  # nothing to pin on this CPU: importing mrcbench changes nothing
        assert pinned == plain
