"""Inference precision: resolving ``auto``, and the attention machinery under bf16 autocast."""
import numpy as np
import pytest
import torch

from mrcbench.errors import MrcbenchError
from mrcbench.grid.cells import grid_cells
from mrcbench.grid.run import run_grid, run_grid_naive
from mrcbench.grid.zone_stats import collect_zone_stats
from mrcbench.masking.controller import ZoneAttention
from mrcbench.masking.plan import blanked_cells
from mrcbench.masking.recorders import zone_mass_from_probs
from mrcbench.qa.features import model_inputs
from mrcbench.runtime import precision
from mrcbench.zones import PAD, PASSAGE, QUESTION, SPECIAL, ZONES

from support import REPO_ROOT
from support.grids import ARCHS, _one_thread, make_batches, tiny_model  # noqa: F401 (autouse fixture)

CPUINFO_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
CPUINFO_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme sse sse2 avx avx2 fma
"""


# --- resolving the setting ----------------------------------------------------------------------

def test_cpu_flags_are_read_from_cpuinfo_text():
    flags = precision.cpu_flags(CPUINFO_AMX)
    assert {"amx_bf16", "avx512_bf16", "avx2"} <= flags
    assert "GenuineIntel" not in flags
    assert precision.cpu_flags(CPUINFO_AVX2) == {"fpu", "vme", "sse", "sse2", "avx", "avx2", "fma"}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (precision.cpu_flags(CPUINFO_AMX), "bf16"),
        ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),  # AVX512-BF16 without AMX (e.g. Zen 4, Cooper Lake)
        ({"avx2", "amx_bf16"}, "bf16"),
        (precision.cpu_flags(CPUINFO_AVX2), "fp32"),
        ({"avx2", "avx512f", "amx_tile"}, "fp32"),  # AVX-512 and AMX tiles, but no bf16 instructions
    ],
)
def test_auto_on_cpu_follows_the_bf16_flags(flags, expected):
    assert precision.resolve("auto", "cpu", flags=flags) == expected


def test_auto_on_cuda_follows_bf16_support_and_explicit_settings_win():
    assert precision.resolve("auto", "cuda", cuda_bf16=True) == "bf16"
    assert precision.resolve("auto", "cuda", cuda_bf16=False) == "fp32"
    assert precision.resolve("auto", "mps") == "fp32"
    assert precision.resolve("fp32", "cpu", flags=precision.cpu_flags(CPUINFO_AMX)) == "fp32"
    assert precision.resolve("bf16", "cpu", flags=precision.cpu_flags(CPUINFO_AVX2)) == "bf16"
    with pytest.raises(MrcbenchError, match="inference.precision"):
        precision.resolve("fp16", "cpu")


def test_autocast_context():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with precision.autocast("fp32", "cpu"):
        assert torch.matmul(a, b).dtype == torch.float32
    with precision.autocast("bf16", "cpu"):
        assert torch.matmul(a, b).dtype == torch.bfloat16
    with pytest.raises(MrcbenchError, match="resolve 'auto' first"):
        precision.autocast("auto", "cpu")


def test_config_default_is_fp32_everywhere():
    """The default and the smoke profile give the same numbers on every machine (issue 17)."""

    import yaml

    from mrcbench import config as cfg

    assert cfg.inference_config({}).precision == "fp32"
    assert cfg.inference_config({"inference": {"precision": "bf16"}}).precision == "bf16"
    assert cfg.inference_config({"inference": {"precision": "auto"}}).precision == "auto"
    root = REPO_ROOT
    for name in ("config.yaml", "config/smoke.yaml"):
        config = yaml.safe_load((root / name).read_text(encoding="utf-8"))
        assert cfg.inference_config(config).precision == "fp32", name


# --- the attention machinery under bf16 -----------------------------------------------------------

def test_zone_mass_is_accumulated_in_fp32_under_autocast():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 3, 40, 40, generator=generator).softmax(-1)
    zone_ids = torch.tensor([[SPECIAL] + [QUESTION] * 9 + [SPECIAL] + [PASSAGE] * 28 + [SPECIAL]] * 2)
    reference = zone_mass_from_probs(probs, zone_ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = zone_mass_from_probs(probs, zone_ids)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, reference, rtol=0, atol=0)


def _unpadded_batch(config):
    """One batch whose rows all have the same length: transformers passes no padding mask at all."""
    generator = torch.Generator().manual_seed(3)
    zones = [SPECIAL] + [QUESTION] * 4 + [SPECIAL] + [PASSAGE] * 9 + [SPECIAL]
    ids = torch.randint(5, config.vocab_size, (2, len(zones)), generator=generator)
    zone_ids = torch.tensor([zones, zones])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "zone_ids": zone_ids}


@pytest.mark.parametrize("zone", ["p2q", "q2p", "p2p", "all"])
def test_blanked_cells_get_exactly_zero_probability_under_bf16(zone):
    model = tiny_model("bert")
    batches = [*make_batches(model.config), _unpadded_batch(model.config)]
    with ZoneAttention(model) as controller, torch.inference_mode(), precision.autocast("bf16", "cpu"):
        for batch in batches:
            rows = list(range(batch["input_ids"].shape[0]))
            with controller.intervene(batch["zone_ids"], zone, layers=list(range(controller.n_layers))), \
                    controller.record_stats(batch["zone_ids"], maps_for=rows) as stats:
                outputs = model(**model_inputs(batch, torch.device("cpu")))
            assert outputs.start_logits.dtype == torch.bfloat16  # autocast really ran the span head
            blanked = blanked_cells(batch["zone_ids"], zone, "paper")
            for row in rows:
                real = (batch["zone_ids"][row] != PAD).nonzero().flatten()
                maps = stats.maps[row]  # [L, H, t, t]
                cells = blanked[row][real][:, real].numpy()
                assert not np.isnan(maps).any()
                assert cells.any()
                assert (maps[:, :, cells] == 0).all()
                np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-2)  # bf16 probabilities: 8-bit mantissa


@pytest.mark.parametrize("arch", list(ARCHS))
def test_fast_and_naive_grid_pick_the_same_spans_under_bf16(arch):
    model = tiny_model(arch)
    batches = make_batches(model.config)
    cells = grid_cells(model.config.num_hidden_layers, model.config.num_attention_heads, ZONES, ["layer", "from_layer"],
                       ["renorm"], 0, {})
    with precision.autocast("bf16", "cpu"):
        fast = run_grid(model, batches, cells, "paper", max_stack=1)
        naive = run_grid_naive(model, batches, cells, "paper")
    fp32 = run_grid_naive(model, batches, cells[:4], "paper")
    # autocast really took effect: bf16 logits differ from the fp32 ones
    assert any(not np.array_equal(fp32[cell].start_logits, naive[cell].start_logits) for cell in cells[:4])
    assert fast.keys() == naive.keys()
    for cell in naive:
        for name in ("start_logits", "end_logits"):
            ours, reference = getattr(fast[cell], name), getattr(naive[cell], name)
            assert ours.dtype == np.float32
            np.testing.assert_array_equal(ours.argmax(-1), reference.argmax(-1), err_msg=f"{cell} {name}")
        np.testing.assert_allclose(fast[cell].removed_mass, naive[cell].removed_mass, atol=1e-3, err_msg=str(cell))


def test_zone_statistics_under_bf16_are_close_to_fp32():
    model = tiny_model("bert")
    batches = make_batches(model.config)
    reference = collect_zone_stats(model, batches, case_study_features=[1])
    with precision.autocast("bf16", "cpu"):
        bf16 = collect_zone_stats(model, batches, case_study_features=[1])
    assert bf16.mass.dtype == np.float32
    assert np.array_equal(np.isnan(bf16.mass), np.isnan(reference.mass))
    difference = np.nanmax(np.abs(bf16.mass - reference.mass))
    assert 0 < difference < 0.02  # bf16 changed something, but only at bf16 resolution
    np.testing.assert_allclose(bf16.maps[1], reference.maps[1], atol=0.02)
