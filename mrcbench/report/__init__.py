"""The report: ``reports/report.qmd`` rendered to one self-contained HTML file, and what its cells draw.

:mod:`~mrcbench.report.engine` is the engine (Quarto, or the nbclient fallback), run by ``mrcbench
report`` (:mod:`~mrcbench.report.command`); :mod:`~mrcbench.report.style` holds the report's styles.
Every other module holds the helpers of one report section, reading the statistics tables
(``results/stats``, written by :mod:`mrcbench.stats`) and raw result files only; nothing in the report
is typed by hand. The report must work offline, so it carries plotly.js inline exactly once
(:func:`~mrcbench.report.blocks.plotly_js`) and every figure is embedded without a script reference
(:func:`~mrcbench.report.blocks.figure_html`).

====================  ==========================================================================
module                report section
====================  ==========================================================================
``inputs``            every section: the tables and config the report reads
``blocks``            every section: HTML blocks, formats, labels; the "Baselines" tables
``abstract``          Abstract
``setup``             Setup
``masking``           Zone × layer masking; Head-level masking
``controls``          Controls (size-matched nulls, ablation operators)
``zone_mass``         Attention mass by layer and head
``correlations``      Correlations between attention and performance
``crosslingual``      Cross-lingual consistency
``question_types``    Question types
``case_studies``      Case studies
``paper_comparison``  Comparison with the paper
``appendix``          Appendix: reproducibility
====================  ==========================================================================

The report's cells use ``from mrcbench import report as R`` and name the module of each helper
(``R.masking.zone_layer_figure``); the package imports its modules for that.
"""

from mrcbench.report import (
    abstract,
    appendix,
    blocks,
    case_studies,
    controls,
    correlations,
    crosslingual,
    inputs,
    masking,
    paper_comparison,
    question_types,
    setup,
    zone_mass,
)

__all__ = [
    "abstract", "appendix", "blocks", "case_studies", "controls", "correlations", "crosslingual", "inputs",
    "masking", "paper_comparison", "question_types", "setup", "zone_mass",
]
