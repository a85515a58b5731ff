"""SQuAD v1.1 (evaluate-v1.1.py), official-equivalent: ``evaluate.load("mrcbench/metrics/evaluate_modules/squad")``."""
import evaluate

from mrcbench import metrics
from mrcbench.metrics import evaluate_modules as evaluate_metrics


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Rajpurkar et al., SQuAD: 100,000+ Questions for Machine Comprehension of Text, EMNLP 2016.",
            inputs_description=evaluate_metrics.__doc__,
            features=evaluate_metrics.features(),
        )

    def _compute(self, predictions, references):
        dataset = evaluate_metrics.references_to_dataset(references)
        return metrics.scoring.squad_v1_evaluate(dataset, evaluate_metrics.predictions_by_id(predictions))
