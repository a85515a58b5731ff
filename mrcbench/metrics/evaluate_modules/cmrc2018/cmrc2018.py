"""CMRC 2018 (cmrc2018_evaluate.py), official-equivalent: ``evaluate.load("mrcbench/metrics/evaluate_modules/cmrc2018")``."""
import evaluate

from mrcbench import metrics
from mrcbench.metrics import evaluate_modules as evaluate_metrics


class Cmrc2018(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Cui et al., A Span-Extraction Dataset for Chinese Machine Reading Comprehension, EMNLP 2019.",
            inputs_description=evaluate_metrics.__doc__,
            features=evaluate_metrics.features(),
        )

    def _compute(self, predictions, references):
        dataset = evaluate_metrics.references_to_dataset(references)
        return metrics.scoring.cmrc2018_evaluate(dataset, evaluate_metrics.predictions_by_id(predictions))
