"""Dataset preparation: SQuAD-format JSON in, validated, leakage-free, sub-sampled splits out.

One module per step: :mod:`~mrcbench.data.loading` (local JSON files and the hub),
:mod:`~mrcbench.data.validation` (answers against their contexts), :mod:`~mrcbench.data.filters`
(structure-preserving filters, article split, sub-sampling, leakage filter, flattening) and
:mod:`~mrcbench.data.splits` (the config-driven preparation behind ``mrcbench prepare-data``).
The package imports its modules, so ``from mrcbench import data`` gives ``data.loading.load_squad_json``.
"""

from mrcbench.data import filters, loading, splits, validation

__all__ = ["filters", "loading", "splits", "validation"]
