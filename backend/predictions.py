"""Tasks in, one prediction slot per task out: model -> probabilities -> uncertainty -> the /predict answer.

Used by /predict and by the re-scoring jobs, so both answer the same. Label Studio keeps `result`, `score`
and `model_version` of each entry; an empty list in a task's slot means "no prediction for this task": it
keeps the results aligned with the tasks and stores nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import uncertainty
from .labelstudio.label_config import LabelConfig
from .models.base import TextClassifier

log = logging.getLogger(__name__)

NO_PREDICTION: list = []


def class_probabilities(classifier: TextClassifier, config: LabelConfig, texts: Sequence[str], **kw) -> np.ndarray:
    """Probabilities with columns in the order of `config.classes`."""
    return in_config_order(classifier, config, classifier.predict_proba(texts, **kw))


def in_config_order(classifier: TextClassifier, config: LabelConfig, probs: np.ndarray) -> np.ndarray:
    """The classifier's probabilities (columns in the order of its labels) in the order of `config.classes`."""
    return probs[:, [classifier.labels.index(name) for name in config.classes]]


def prediction(config: LabelConfig, label: str, score: float, model_version: str) -> dict:
    return {"result": [config.region(label)], "score": float(score), "model_version": model_version}


def window(
    ids: np.ndarray, probs: np.ndarray, config: LabelConfig, strategy: str, model_version: str, size: int
) -> list[dict]:
    """The predictions of the `size` most uncertain tasks (lowest score first), each with its task id: what a
    round writes to Label Studio. `probs`: one row per id, columns in the order of `config.classes`."""
    scores = uncertainty.score(probs, strategy)
    chosen = np.argsort(scores, kind="stable")[:size]
    return [
        {"task": int(ids[i]), **prediction(config, config.classes[int(probs[i].argmax())], scores[i], model_version)}
        for i in chosen
    ]


def answer(results: list, model_version: str) -> dict:
    """The body of a /predict answer."""
    return {"results": results, "model_version": model_version}


def predict_tasks(
    classifier: TextClassifier, config: LabelConfig, tasks: Sequence[Any], *, strategy: str, max_chars: int
) -> list:
    if not classifier.serves(config.classes):
        reason = "is not trained" if not classifier.trained else f"knows {list(classifier.labels)}"
        log.info(
            "model %s %s; the project asks for %s: no predictions", classifier.version, reason, list(config.classes)
        )
        return [NO_PREDICTION for _ in tasks]

    texts = [config.text_of(task, max_chars) for task in tasks]
    slots = [i for i, text in enumerate(texts) if text is not None]
    if len(slots) < len(tasks):
        # One line per request, not one per task: a request of a million empty tasks is one warning.
        missing = [i for i, text in enumerate(texts) if text is None]
        log.warning(
            "%d of %d tasks have no text in data[%r] (or one over MAX_TEXT_CHARS=%d): no prediction for them "
            "(positions %s%s)",
            len(missing),
            len(tasks),
            config.data_key,
            max_chars,
            missing[:10],
            " ..." if len(missing) > 10 else "",
        )
    probs = class_probabilities(classifier, config, [text for text in texts if text is not None])
    scores = uncertainty.score(probs, strategy)
    results: list = [NO_PREDICTION for _ in tasks]
    for row, slot in enumerate(slots):
        label = config.classes[int(probs[row].argmax())]
        results[slot] = prediction(config, label, scores[row], classifier.version)
    return results
