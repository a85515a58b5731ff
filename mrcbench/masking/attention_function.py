"""The ``"mrcbench"`` attention function: the two hook points inside transformers' attention interface.

transformers 5 routes every self-attention of BERT, RoBERTa, XLM-R, ELECTRA, ALBERT, DistilBERT and
ModernBERT through ``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, ...)``; the old
``head_mask`` argument no longer exists. We therefore register one attention function under the name
``"mrcbench"`` (plus the eager mask factory under the same name, so the model still builds the additive
``[B, 1, T, T]`` float padding mask) and switch the model to it (:func:`switch_model`). The function
delegates to the model's *own* ``eager_attention_forward`` (looked up in the module's modeling file), so
with no intervention the model is bit-identical to ``attn_implementation="eager"``; around it, it calls
the hook points of the :class:`~mrcbench.masking.hooks.ZoneHooks` that own the module (:func:`claim`):
the edited mask goes into softmax, the probabilities come out through ``hook_pattern``.

ModernBERT's local layers receive a sliding-window mask: the zone mask is combined with it (cells are
only ever added to the masked set, and the replicated "all" quirk lifts padding only inside the window).
"""
from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import nn

from mrcbench.errors import MrcbenchError
from mrcbench.masking.hooks import ZoneHooks
from mrcbench.models import hf_compat

IMPLEMENTATION = "mrcbench"
"""Name under which the attention function and its mask factory are registered in transformers."""

_OWNERS: weakref.WeakKeyDictionary[nn.Module, ZoneHooks] = weakref.WeakKeyDictionary()
"""The hooks that own each module of a model under a controller: the attention function finds its hooks
here (transformers calls it with the module only), and a second controller of a model is refused."""


def claim(model: nn.Module, hooks: ZoneHooks) -> None:
    """Let ``hooks`` own every module of ``model``; refuse a model another controller holds."""
    for module in model.modules():
        if module in _OWNERS and _OWNERS[module] is not hooks:
            raise MrcbenchError(f"{type(model).__name__} already has a ZoneAttention controller; close it first")
    for module in model.modules():
        _OWNERS[module] = hooks


def release(model: nn.Module, hooks: ZoneHooks) -> None:
    """Undo :func:`claim`."""
    for module in model.modules():
        if _OWNERS.get(module) is hooks:
            del _OWNERS[module]


def register_attention() -> str:
    """Register the ``"mrcbench"`` attention function and its (eager, additive float) mask factory.

    Idempotent. Without the mask registration transformers would treat ``"mrcbench"`` as a backend
    that needs no mask and silently drop the padding mask.
    """
    hf_compat.register_attention_function(IMPLEMENTATION, mrcbench_attention_forward)
    return IMPLEMENTATION


def switch_model(model: nn.Module) -> Callable[[], None]:
    """Switch ``model`` to the ``"mrcbench"`` attention function; returns the call that switches it back."""
    register_attention()
    previous = hf_compat.attention_implementation(model.config)
    model.set_attn_implementation(IMPLEMENTATION)
    if hf_compat.attention_implementation(model.config) != IMPLEMENTATION:
        raise MrcbenchError(
            f"{type(model).__name__} does not route attention through transformers' AttentionInterface; "
            "zone masking is not possible for it"
        )

    def restore() -> None:
        if previous is not None:
            model.set_attn_implementation(previous)

    return restore


def mrcbench_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention function registered as ``"mrcbench"`` (signature of transformers' attention interface).

    Plain eager attention unless the module's hooks have an intervention or a recorder active. The
    probabilities are None only where the fused kernel ran (nobody reads them).
    """
    eager = hf_compat.eager_attention_for(module)
    hooks = _OWNERS.get(module)
    if hooks is None:
        return eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    layer = hooks.take_layer(module)
    edit = hooks.hook_scores(layer, attention_mask, query, key.shape[2], _window_band(module, key.shape[2]))
    attend = eager
    if (
        hooks.may_fuse and query.dtype == torch.float32
        and (attention_mask is None or attention_mask.is_floating_point())
    ):
        attend = fused_attention
    if edit is None:
        output, probs = attend(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    elif edit.after_softmax:  # the model's own eager probabilities, edited by hook point 2
        _, unmasked = eager(module, query, key, value, attention_mask, scaling=scaling, dropout=0.0, **kwargs)
        probs = hooks.hook_pattern(layer, unmasked, edit)
        weights = nn.functional.dropout(probs, p=dropout, training=module.training)
        return torch.matmul(weights.to(value.dtype), value).transpose(1, 2).contiguous(), probs  # as eager
    else:
        if edit.needs_reference:  # the unmasked probabilities of this call, for the removed mass
            _, unmasked = eager(module, query, key, value, attention_mask, scaling=scaling, dropout=0.0, **kwargs)
            hooks.hook_pattern(layer, unmasked, edit, reference=True)
        output, probs = attend(module, query, key, value, edit.mask, scaling=scaling, dropout=dropout, **kwargs)
    return output, hooks.hook_pattern(layer, probs, edit)


def fused_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' ``sdpa`` attention for a bidirectional encoder (never causal), no probabilities."""
    return hf_compat.sdpa_attention(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )


def _window_band(module: nn.Module, length: int) -> torch.Tensor | None:
    """``[T, T]`` bool: the cells a sliding-window layer may attend to at all (None: no window).

    ModernBERT's local layers carry ``sliding_window``; the band is transformers' own bidirectional
    overlay for ``config.sliding_window``, the same one the model's mask was built from.
    """
    if getattr(module, "sliding_window", None) is None or getattr(module, "config", None) is None:
        return None
    return hf_compat.sliding_window_band(module.config.sliding_window, length)
