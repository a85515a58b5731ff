
"""The installed libraries are inside the ranges pyproject.toml pins, and the installed transformers does
what mrcbench/models/hf_compat.py (the one module that reaches its internals) relies on."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib import metadata
from pathlib import Path

import torch
from packaging.requirements import Requirement

from mrcbench.models import hf_compat

from support import REPO_ROOT
from support.grids import make_batches, tiny_model

ROOT = REPO_ROOT


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(line).name: Requirement(line) for line in project["dependencies"]}


def test_transformers_has_a_tested_major_range_and_the_installed_one_is_in_it():
    requirement = _requirements()["transformers"]
    assert any(spec.operator == "<" for spec in requirement.specifier), "transformers needs an upper bound"
    assert requirement.specifier.contains(metadata.version("transformers"), prereleases=True)


# transformers names that are not its stable public API: only mrcbench/models/hf_compat.py may reach them.
_INTERNALS = re.compile(
    r"transformers\.(masking_utils|integrations|models|modeling_utils)\b|\._attn_implementation\b|"
    r"import .*\b(AttentionInterface|AttentionMaskInterface|eager_attention_forward|sdpa_attention_forward)\b"
)


def _code_lines(path: Path):
    """(number, line) of the code of a module, docstrings and comments left out."""
    tree = ast.parse(path.read_text())
    doc_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant) \
                and isinstance(node.value.value, str):
            doc_lines.update(range(node.lineno, node.end_lineno + 1))
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if number not in doc_lines:
            yield number, line.split("#", 1)[0]


def test_transformers_internals_are_reached_only_from_hf_compat():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "mrcbench").rglob("*.py"))
        if path.name != "hf_compat.py"
        for number, line in _code_lines(path)
        if _INTERNALS.search(line)
    ]
    assert offenders == []
    # and the check can fail: hf_compat itself reaches them
    assert any(_INTERNALS.search(line) for _, line in _code_lines(ROOT / "mrcbench" / "models" / "hf_compat.py"))


def test_a_registered_attention_function_runs_with_the_padding_mask():
    """A model set to a name registered with :func:`hf_compat.register_attention_function` calls that
    function, with the padding mask (registered without transformers' mask factory, the name would
    get none and padding would be attended to), and then computes what eager attention computes."""
    masks = []

    def recording(module, query, key, value, attention_mask, **kwargs):
        masks.append(attention_mask)
        return hf_compat.eager_attention_for(module)(module, query, key, value, attention_mask, **kwargs)

    name = hf_compat.register_attention_function("mrcbench_test_recording", recording)
    model = tiny_model("bert")  # eager
    batch = make_batches(model.config)[0]
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
    assert not bool(batch["attention_mask"].all())  # the batch is padded
    with torch.no_grad():
        eager = model(**inputs).start_logits
        model.set_attn_implementation(name)
        assert hf_compat.attention_implementation(model.config) == name
        registered = model(**inputs).start_logits
    assert len(masks) == model.config.num_hidden_layers and all(mask is not None for mask in masks)
    torch.testing.assert_close(registered, eager, rtol=0, atol=0)


def test_the_fused_attention_and_the_sliding_window_band_match_their_definitions():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 1, 2, 5, 4).unbind(0)
    mask = torch.zeros(1, 1, 5, 5)
    mask[..., -1] = torch.finfo(torch.float32).min  # the last key is padding
    module = torch.nn.Module()
    module.training = False
    fused, weights = hf_compat.sdpa_attention(module, q, k, v, mask, dropout=0.0, scaling=None)
    assert weights is None
    expected = torch.softmax(q @ k.transpose(-1, -2) / 2.0 + mask, dim=-1) @ v  # scale 1/sqrt(4)
    torch.testing.assert_close(fused, expected.transpose(1, 2), rtol=1e-5, atol=1e-6)
    positions = torch.arange(5)
    band = hf_compat.sliding_window_band(2, 5)
    assert torch.equal(band, (positions[:, None] - positions).abs() <= 2)  # the cells within +-2
