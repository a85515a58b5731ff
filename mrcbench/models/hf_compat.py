"""Every transformers internal mrcbench reaches, in one place.

transformers 5.x has no ``head_mask`` and no per-model attention code path: zone masking goes through
the attention interface (``AttentionInterface`` / ``AttentionMaskInterface``), falls back on a
modeling file's own ``eager_attention_forward``, and the fast grid replays unread layers with the
fused ``sdpa`` function (docs/pitfalls.md, docs/masking.md). Those names, the private
``config._attn_implementation`` and ModernBERT's sliding-window overlay are not a stable public API,
so they are reached only from here; pyproject.toml pins the transformers range this module is tested
on (tests/unit/test_dependencies.py keeps the installed version inside it, tests/integration/test_attention.py
exercises every function below on tiny models of each family).
"""
from __future__ import annotations

import sys
from collections.abc import Callable

import torch

_EAGER_CACHE: dict[str, Callable] = {}


def register_attention_function(name: str, function: Callable) -> str:
    """Register ``function`` as attention implementation ``name`` with transformers' eager (additive
    float) mask factory. Without the mask registration transformers treats ``name`` as a backend that
    needs no mask and silently drops the padding mask. Idempotent."""
    from transformers import AttentionInterface  # transformers when called (seconds to import)
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    return name


def attention_implementation(config) -> str | None:
    """The attention implementation a model's config currently routes through."""
    return getattr(config, "_attn_implementation", None)


def eager_attention_for(module: torch.nn.Module) -> Callable:
    """The ``eager_attention_forward`` of the modeling file that defines ``module`` (BERT's as fallback)."""
    module_name = type(module).__module__
    eager = _EAGER_CACHE.get(module_name)
    if eager is None:
        eager = getattr(sys.modules.get(module_name), "eager_attention_forward", None)
        if eager is None:
            from transformers.models.bert.modeling_bert import eager_attention_forward as eager  # when called
        _EAGER_CACHE[module_name] = eager
    return eager


def sdpa_attention(module, query, key, value, attention_mask, *, dropout: float, scaling, **kwargs):
    """transformers' fused ``sdpa`` attention for a bidirectional encoder (never causal)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward  # when called

    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=False, **kwargs
    )


def sliding_window_band(sliding_window: int, length: int) -> torch.Tensor:
    """``[T, T]`` bool: the cells a bidirectional sliding-window layer may attend to (transformers' own
    overlay, the one ModernBERT's local-layer mask is built from)."""
    from transformers.masking_utils import sliding_window_bidirectional_overlay  # when called

    positions = torch.arange(length)
    return sliding_window_bidirectional_overlay(sliding_window)(0, 0, positions[:, None], positions)
