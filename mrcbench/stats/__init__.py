"""Statistics over the masking grids, zone statistics and per-question scores.

Everything the report shows as a number comes from a table written here (``results/stats/*.parquet``
and ``*.csv``). The choices below decide how those numbers are read, so they are stated once:

* **Units.** Per-question EM/F1 are on the 0-100 scale (``metrics.scoring.per_question_scores``); every delta
  is in points. ``delta = masked - baseline``: negative means masking hurts.
* **Seeds.** With several fine-tuning seeds, the delta is first computed per seed and question, then
  averaged over seeds per question. Confidence intervals and tests are over the *questions* of the
  eval set (the population the claim is about); the seed-to-seed spread (sd, min, max of the per-seed
  mean deltas) is reported beside them, not folded in.
* **Resampling unit.** SQuAD-style questions are clustered in articles (several questions share one
  passage), so questions are not independent. When a grid's questions come from at least
  ``stats.min_clusters`` (default 10) articles, the bootstrap resamples *articles* (cluster bootstrap
  of the mean over questions) and the test flips signs of article sums. With fewer articles (or no
  article ids) both work on *questions*: a cluster bootstrap over 4 articles under-covers (about 81%
  at a nominal 95% in a simulation) and an exact sign-flip test over k articles cannot go below
  2/2**k. Question-level resampling ignores the within-article correlation, so its intervals are
  optimistic; the tables say which unit was used (``resampling``: article|question) beside
  ``n_questions`` and ``n_clusters`` (the number of articles the questions come from; without article
  ids, every question is its own cluster).
* **Tests.** The primary p-value is a two-sided paired sign-flip permutation test at the resampling
  unit (exact enumeration when there are few clusters). A Wilcoxon signed-rank test on questions
  (Pratt's zero handling; it ignores clustering) is reported as a second opinion. Holm (family-wise)
  and Benjamini-Hochberg (false discovery rate) corrections run over the cells of one grid: one
  family per (model, train set, eval set, variant, mode, metric). Mode is part of the family so that
  the 100+ head-level cells do not dilute the 60 zone x layer cells. Correlation p-values (Pearson,
  Spearman and the clustered OLS slope) are corrected the same way within one family per (analysis,
  model, train set, eval set, variant, metric, x quantity): the layer x zone cells of one C2/C3 map,
  the zones of one C1 grid.
* **Answerable questions.** The zone deltas use answerable questions only: grids are built on them
  by default (``ablation.answerable_only``), and questions that ``scores.parquet`` marks as without an
  answer are left out of the matrices in any case (counted in the log).
* **Determinism.** Each resampling generator is seeded from ``stats.seed`` and a CRC32 of the table
  key, so a result does not depend on the order in which runs are processed.

Correlations C1-C3, the cross-lingual analysis, question types and the comparison with the paper's
grid are operationalisations of docs/method.md §4-6 (ours, not the paper's); each function says
what it measures.

Modules (one analysis each; ``command`` is the ``mrcbench stats`` command that writes them all):
``common`` (shared names, settings, languages), ``results`` (loading the result files),
``resampling`` (resampling designs, bootstrap, sign-flip and Wilcoxon tests), ``multiple_testing``
(Holm and BH corrections), ``deltas`` (masking deltas: per-question matrices, deltas, seed spread),
``baselines``, ``zone_mass``, ``correlations``, ``crosslingual``, ``question_types``,
``paper_comparison``, ``headline``, ``controls`` (zone minus size-matched null, operator minus renorm,
specificity) and ``command``. The columns of every table are declared in :mod:`mrcbench.tables`. docs/architecture.md maps each report section to the module that computes
it and the one that draws it.
"""

from mrcbench.stats import (
    baselines,
    command,
    common,
    controls,
    correlations,
    crosslingual,
    deltas,
    headline,
    multiple_testing,
    paper_comparison,
    question_types,
    resampling,
    results,
    zone_mass,
)

__all__ = [
    "baselines",
    "command",
    "common",
    "controls",
    "correlations",
    "crosslingual",
    "deltas",
    "headline",
    "multiple_testing",
    "paper_comparison",
    "question_types",
    "resampling",
    "results",
    "zone_mass",
]
