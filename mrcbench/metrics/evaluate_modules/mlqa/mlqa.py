"""MLQA (mlqa_evaluation_v1.py), official-equivalent: ``evaluate.load("mrcbench/metrics/evaluate_modules/mlqa")``.

``compute(..., language="en")`` is the script's answer-language argument (``mrcbench score mlqa --language``).
"""
import evaluate

from mrcbench import metrics
from mrcbench.metrics import evaluate_modules as evaluate_metrics


class Mlqa(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Lewis et al., MLQA: Evaluating Cross-lingual Extractive Question Answering, ACL 2020.",
            inputs_description=evaluate_metrics.__doc__,
            features=evaluate_metrics.features(),
        )

    def _compute(self, predictions, references, language=None):
        dataset = evaluate_metrics.references_to_dataset(references)
        answers = evaluate_metrics.predictions_by_id(predictions)
        return metrics.scoring.mlqa_evaluate(dataset, answers, language)
