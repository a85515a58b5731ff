"""Re-run layers ``l..L-1`` of an encoder from the inputs its layers received in an earlier pass.

Masking attention in layer ``l`` leaves the hidden states entering layers ``0..l`` unchanged. So one
unmasked pass can record, with forward pre-hooks on the model's own layer modules, the arguments
every layer was called with (:func:`record_layer_calls`), and a masked variant of that pass needs to
re-run only layers ``l..L-1`` (:func:`replay_layers`): the same modules, called with the arguments
they received (the model's own additive attention mask included) but on new hidden states, starting
from the recorded input of layer ``l``. Several variants are run at once by stacking copies of the
batch along the batch dimension (:func:`repeat_batch` tiles the per-example arguments). The span head
of the :class:`LayerStack` turns the last hidden states into start and end logits.

:func:`find_stack` recognises the layer modules and span head of the supported QA models: layers in
``encoder.layer`` (BERT, RoBERTa, XLM-R, ELECTRA, DeBERTa-v2/v3, MPNet), ``transformer.layer``
(DistilBERT), ``layers`` (ModernBERT, whose final norm and prediction head form its span head) and
ALBERT's shared ``albert_layer_groups`` (one group called once per layer: the recorded calls, not the
modules, are the layers). Other architectures, and DeBERTa-v2 checkpoints with the convolution after
layer 0 (which the encoder applies outside its layer modules), have no stack: :func:`find_stack`
returns ``None`` and :func:`mrcbench.grid.run.run_grid` falls back to the naive grid with a warning.

This module knows nothing of zones or masks; what a replayed layer's attention does is decided by
whoever controls the attention meanwhile (:class:`mrcbench.masking.controller.ZoneAttention`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from mrcbench.errors import MrcbenchError


@dataclass
class LayerStack:
    """How to re-run a model from layer ``l``: its per-layer block modules and the span head.

    ``shared`` names layer keyword arguments that are not per example (never tiled when stacking).
    """

    blocks: list[nn.Module]
    head: nn.Module
    shared: frozenset[str] = frozenset()


def find_stack(model: nn.Module) -> LayerStack | None:
    """Recognise the layer blocks and span head of the supported QA models (see the module docstring)."""
    config = model.config
    base = getattr(model, "base_model", model)
    classifier = getattr(model, "classifier", None)
    final_norm = getattr(base, "final_norm", None)
    if (  # ModernBERT: layers -> final_norm -> head -> drop -> classifier
        isinstance(getattr(base, "layers", None), nn.ModuleList)
        and len(base.layers) == config.num_hidden_layers
        and isinstance(final_norm, nn.Module)
        and isinstance(classifier, nn.Linear)
        and classifier.out_features == 2
        and isinstance(getattr(model, "head", None), nn.Module)
    ):
        span_head = nn.Sequential(final_norm, model.head, getattr(model, "drop", nn.Identity()), classifier)
        return LayerStack(blocks=list(base.layers), head=span_head)
    head = getattr(model, "qa_outputs", None)
    if not isinstance(head, nn.Linear) or head.out_features != 2:
        return None
    encoder = getattr(base, "encoder", None)
    if encoder is None:  # DistilBERT
        encoder = getattr(base, "transformer", None)
    if getattr(encoder, "conv", None) is not None:  # DeBERTa-v2 conv: applied outside the layer modules
        return None
    layers = getattr(encoder, "layer", None)
    if isinstance(layers, nn.ModuleList) and len(layers) == config.num_hidden_layers:
        return LayerStack(blocks=list(layers), head=head, shared=frozenset({"rel_embeddings", "relative_pos"}))
    groups = getattr(encoder, "albert_layer_groups", None)
    if (
        isinstance(groups, nn.ModuleList)
        and hasattr(encoder, "embedding_hidden_mapping_in")
        and getattr(config, "inner_group_num", 1) == 1  # one attention call per layer-group call
    ):
        return LayerStack(blocks=list(groups), head=head)
    return None


class LayerCall(NamedTuple):
    """One recorded call of a layer block: the module and the arguments it received."""

    module: nn.Module
    args: tuple
    kwargs: dict

    @property
    def hidden_states(self) -> torch.Tensor:
        """The hidden states this call received (first positional argument, else keyword ``hidden_states``)."""
        return self.args[0] if self.args else self.kwargs["hidden_states"]


@contextlib.contextmanager
def record_layer_calls(blocks: Sequence[nn.Module]) -> Iterator[list[LayerCall]]:
    """Record (module, args, kwargs) of every layer-block call, in call order.

    ALBERT calls its one shared layer group once per layer, so the calls (not the modules) are the layers.
    """
    calls: list[LayerCall] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append(LayerCall(module, args, dict(kwargs)))

    handles = [block.register_forward_pre_hook(hook, with_kwargs=True) for block in dict.fromkeys(blocks)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def repeat_batch(value: object, copies: int, batch: int) -> object:
    """Tile a per-example tensor argument ``copies`` times along the batch dimension.

    Anything else (a non-tensor, a scalar, a tensor broadcast over the batch) is returned as it is.
    """
    if not isinstance(value, torch.Tensor) or value.dim() == 0 or copies == 1:
        return value
    if value.shape[0] == batch:
        return value.repeat(copies, *([1] * (value.dim() - 1)))
    if value.shape[0] == 1:
        return value
    raise MrcbenchError(f"cannot stack a layer argument of shape {tuple(value.shape)} for batch size {batch}")


def replay_layers(
    calls: Sequence[LayerCall], start: int, hidden: torch.Tensor, copies: int, batch: int,
    shared: frozenset[str] = frozenset(),
) -> torch.Tensor:
    """Run the recorded layer calls ``start..`` on ``hidden`` (``copies`` stacked copies of the batch).

    Keyword arguments named in ``shared`` (e.g. DeBERTa's relative-position embeddings) are passed as
    recorded, never tiled.
    """
    for call in calls[start:]:
        kwargs = {
            name: value if name in shared else repeat_batch(value, copies, batch)
            for name, value in call.kwargs.items()
        }
        if call.args:
            args = (hidden, *(repeat_batch(value, copies, batch) for value in call.args[1:]))
        else:
            args, kwargs["hidden_states"] = (), hidden
        output = call.module(*args, **kwargs)
        hidden = output[0] if isinstance(output, tuple) else output
    return hidden
