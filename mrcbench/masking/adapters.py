"""The two hook points in families that compute attention in their own module (DeBERTa-v2/v3, MPNet).

These self-attention modules (:data:`mrcbench.families.FAMILIES`, ``adapter``) have no pluggable attention
function. The adapter hooks each of them twice: a forward pre-hook on the module runs hook point 1 and
hands the module its own attention-mask argument with the zone's cells edited (before its softmax); a
forward hook on the ``nn.Dropout`` the module applies to its probabilities runs hook point 2 there
(:class:`~mrcbench.masking.hooks.ZoneHooks`). For the removed mass of a ``renorm`` edit the module is run
once more, unedited, and the probabilities its dropout receives then are the reference.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from mrcbench.errors import MrcbenchError
from mrcbench.masking.hooks import LayerEdit, ZoneHooks


class ModuleAdapter:
    """Hook point 1 at the self-attention modules' mask argument, hook point 2 at their dropout."""

    def __init__(self, hooks: ZoneHooks):
        self.hooks = hooks
        self.layer: int | None = None  # the layer of the call in progress
        self.edit: LayerEdit | None = None  # ... and its edit
        self.in_reference = False  # True while the module runs unedited for the removed mass

    def attach(self, model: nn.Module, class_name: str) -> list[RemovableHandle]:
        """Hook every ``class_name`` self-attention module of ``model``; the handles to remove them."""
        modules = [module for module in model.modules() if type(module).__name__ == class_name]
        name = type(model).__name__
        if not modules:
            raise MrcbenchError(f"{name} has no {class_name} module; its attention cannot be adapted")
        if not all(isinstance(getattr(module, "dropout", None), nn.Dropout) for module in modules):
            raise MrcbenchError(f"{name}: {class_name} has no nn.Dropout on its attention probabilities")
        handles = []
        for module in modules:
            handles.append(module.register_forward_pre_hook(self._before, with_kwargs=True))
            handles.append(module.dropout.register_forward_hook(self._at_dropout))
        return handles

    def _before(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Count the layer; with an edit of this layer, hand the module an edited attention mask."""
        layer = self.layer = self.hooks.take_layer(module)
        hidden = args[0] if args else kwargs["hidden_states"]
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        edit = self.edit = self.hooks.hook_scores(
            layer, bound.arguments.get("attention_mask"), hidden, hidden.shape[1], None
        )
        if edit is None or edit.after_softmax:  # a post-softmax edit is applied at the dropout
            return None
        if edit.needs_reference:
            self.in_reference = True
            try:
                module.forward(*args, **kwargs)
            finally:
                self.in_reference = False
        bound.arguments["attention_mask"] = edit.mask
        return bound.args, bound.kwargs

    def _at_dropout(self, dropout: nn.Module, inputs: tuple, probs: torch.Tensor) -> torch.Tensor:
        """Forward hook on the dropout applied to the attention probabilities ``[B, H, T, T]``."""
        if self.in_reference:
            return self.hooks.hook_pattern(self.layer, probs, self.edit, reference=True)
        edit, self.edit = self.edit, None
        return self.hooks.hook_pattern(self.layer, probs, edit)
