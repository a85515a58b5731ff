"""SQuAD v2.0 (evaluate-v2.0.py), official-equivalent: ``evaluate.load("mrcbench/metrics/evaluate_modules/squad_v2")``.

``no_answer_probability`` plays the official ``--na-prob-file`` (for BERT-style models the null-score
difference); ``compute(..., no_answer_threshold=1.0)`` is ``--na-prob-thresh``.
"""
import evaluate

from mrcbench import metrics
from mrcbench.metrics import evaluate_modules as evaluate_metrics


class SquadV2(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Rajpurkar et al., Know What You Don't Know: Unanswerable Questions for SQuAD, ACL 2018.",
            inputs_description=evaluate_metrics.__doc__,
            features=evaluate_metrics.features(with_no_answer_probability=True),
        )

    def _compute(self, predictions, references, no_answer_threshold=1.0):
        dataset = evaluate_metrics.references_to_dataset(references)
        return metrics.scoring.squad_v2_evaluate(
            dataset,
            evaluate_metrics.predictions_by_id(predictions),
            na_probs=evaluate_metrics.predictions_by_id(predictions, "no_answer_probability"),
            na_prob_thresh=no_answer_threshold,
        )
