"""The project's official-equivalent scorers as local Hugging Face ``evaluate`` metric modules.

One folder per metric (``squad``, ``squad_v2``, ``cmrc2018``, ``mlqa``), each holding ``<name>/<name>.py``: a thin
:class:`evaluate.Metric` over :mod:`mrcbench.metrics`, so ``evaluate.load(path)`` works offline and returns
the numbers ``mrcbench score`` prints. Inputs follow the hub's ``squad`` / ``squad_v2`` metrics::

    predictions = [{"id": "q1", "prediction_text": "Paris"}]   # squad_v2 adds "no_answer_probability"
    references = [{"id": "q1", "answers": {"text": ["Paris"], "answer_start": [0]}}]

``evaluate`` pairs the rows (one prediction per reference); they are matched by ``id``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent


def module_path(name: str) -> str:
    """The folder ``evaluate.load`` takes for metric ``name`` (e.g. ``evaluate.load(module_path("squad"))``)."""
    return str(ROOT / name)


def features(with_no_answer_probability: bool = False):
    """The ``datasets.Features`` of the hub's squad (``squad_v2`` with the no-answer probability)."""
    import datasets  # when a metric is built (evaluate imports this module)

    prediction = {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")}
    if with_no_answer_probability:
        prediction["no_answer_probability"] = datasets.Value("float64")
    return datasets.Features({
        "predictions": prediction,
        "references": {
            "id": datasets.Value("string"),
            "answers": datasets.Sequence(
                {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
            ),
        },
    })


def references_to_dataset(references: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A SQuAD-format dataset (one article, one paragraph) holding the referenced questions."""
    qas = [
        {
            "id": ref["id"],
            "answers": [
                {"text": text, "answer_start": start}
                for text, start in zip(ref["answers"]["text"], ref["answers"]["answer_start"], strict=True)
            ],
        }
        for ref in references
    ]
    return {"version": "evaluate", "data": [{"title": "", "paragraphs": [{"context": "", "qas": qas}]}]}


def predictions_by_id(predictions: Iterable[Mapping[str, Any]], key: str = "prediction_text") -> dict[str, Any]:
    return {pred["id"]: pred[key] for pred in predictions}
