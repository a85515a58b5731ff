"""Official-equivalent scorers for extractive MRC: SQuAD v1.1, SQuAD v2.0, CMRC 2018 and MLQA.

Each scorer reproduces the arithmetic of the official evaluation script so that our numbers can be put
next to published ones (docs/scoring.md):

* ``squad_v2`` -- ``evaluate-v2.0.py``, which is also what the paper ran on SQuAD v1.1 (its
  ``eval_squad.py``). Questions without a prediction are *skipped* (they are not counted in ``total``).
* ``squad`` -- ``evaluate-v1.1.py``. Questions without a prediction count as 0.
* ``cmrc2018`` -- ``cmrc2018_evaluate.py`` (Python 2 + nltk). Questions without a prediction count as 0
  and are reported as ``SKIP``.
* ``mlqa`` -- ``mlqa_evaluation_v1.py`` (facebookresearch/MLQA), per answer language: Unicode
  punctuation removal, per-language article removal, whitespace tokens or, for zh, mixed segmentation
  (one token per CJK character). Questions without a prediction count as 0. Official languages: en es
  hi vi de ar zh. **Our extension** (not official) for the other XQuAD languages: el ru tr ro split on
  whitespace without article removal, th gets one token per character.

Deliberate, documented deviations from the scripts (they only matter for inputs on which the scripts
crash or cannot run offline):

* ``squad_v2``: the official script raises ``KeyError`` when a prediction is missing and the dataset has
  HasAns/NoAns splits; here the splits are computed over the predicted questions, consistent with
  ``total``. ``best_*`` keep the official quirk of starting from the number of unanswerable questions in
  the *whole* dataset.
* ``cmrc2018``: ``nltk.word_tokenize`` needs the punkt sentence model, which is downloaded at run time.
  We call the same word tokenizer with ``preserve_line=True`` (no sentence splitting, no data). The two
  differ only when a non-Chinese run contains a sentence boundary; since the script lower-cases before
  tokenising, punkt's capitalisation cues almost never fire on answer-length strings.
* ``mlqa``: the script's stderr warning for a dataset ``version`` other than "1.0" is not printed (XQuAD
  files say "1.1"; the numbers do not depend on it).
* Every scorer reports missing predictions in one summary line on stderr, not one line per question.
* Malformed inputs (no questions, no matching predictions, a question without gold answers where the
  metric needs one) raise :class:`~mrcbench.errors.MrcbenchError` instead of a bare Python exception.

The per-question view (:func:`~mrcbench.metrics.scoring.per_question_scores`) is built from the same per-question numbers as the
aggregate scorers, so the two can never drift apart.

One module per scorer family (:mod:`~mrcbench.metrics.squad`, :mod:`~mrcbench.metrics.cmrc`,
:mod:`~mrcbench.metrics.mlqa`: how one answer is compared), the dataset traversal they share
(:mod:`~mrcbench.metrics.questions`), the per-question and aggregate scores of every metric
(:mod:`~mrcbench.metrics.scoring`) and the ``mrcbench score`` command (:mod:`~mrcbench.metrics.command`).
The package imports its modules, so ``from mrcbench import metrics`` gives
``metrics.scoring.per_question_scores``.
"""

from mrcbench.metrics import cmrc, command, mlqa, questions, scoring, squad

__all__ = ["cmrc", "command", "mlqa", "questions", "scoring", "squad"]
