"""The shape of what /predict answers, in one place.

Label Studio keeps `result`, `score` and `model_version` of each entry. An empty list in a task's slot
means "no prediction for this task": it keeps the results aligned with the tasks and stores nothing.
"""

from __future__ import annotations

from .labels import LabelConfig

NO_PREDICTION: list = []


def prediction(config: LabelConfig, label: str, score: float, model_version: str) -> dict:
    return {
        "result": [
            {
                "from_name": config.from_name,
                "to_name": config.to_name,
                "type": "choices",
                "value": {"choices": [label]},
            }
        ],
        "score": float(score),
        "model_version": model_version,
    }


def predictions(results: list, model_version: str) -> dict:
    return {"results": results, "model_version": model_version}
