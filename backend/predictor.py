"""Tasks in, one prediction slot per task out: model -> probabilities -> uncertainty -> response.

Used by /predict and by anything else that scores Label Studio tasks, so both answer the same.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from . import response, uncertainty
from .labels import LabelConfig
from .model import Classifier

log = logging.getLogger(__name__)


def task_text(task: Any, key: str, max_chars: int) -> str | None:
    """The task's text, or None (with the reason logged) when it cannot be classified."""
    data = task.get("data") if isinstance(task, dict) else None
    text = data.get(key) if isinstance(data, dict) else None
    task_id = task.get("id") if isinstance(task, dict) else None
    if not isinstance(text, str) or not text.strip():
        log.warning("task %s has no text in data[%r]: no prediction", task_id, key)
        return None
    if len(text) > max_chars:
        log.warning("task %s: text of %d chars exceeds MAX_TEXT_CHARS=%d: no prediction", task_id, len(text), max_chars)
        return None
    return text


def class_probabilities(classifier: Classifier, config: LabelConfig, texts: Sequence[str], **kw) -> np.ndarray:
    """Probabilities with columns in the order of `config.classes`."""
    probs = classifier.predict_proba(texts, **kw)
    columns = [classifier.labels.index(name) for name in config.classes]
    return probs[:, columns]


def predict_tasks(
    classifier: Classifier, config: LabelConfig, tasks: Sequence[Any], *, strategy: str, max_chars: int
) -> list:
    if not classifier.serves(config.classes):
        reason = "is not trained" if not classifier.trained else f"knows {list(classifier.labels)}"
        log.info("model %s %s; the project asks for %s: no predictions", classifier.version, reason, list(config.classes))
        return [response.NO_PREDICTION for _ in tasks]

    texts = [task_text(task, config.data_key, max_chars) for task in tasks]
    slots = [i for i, text in enumerate(texts) if text is not None]
    probs = class_probabilities(classifier, config, [texts[i] for i in slots])
    scores = uncertainty.score(probs, strategy)
    results: list = [response.NO_PREDICTION for _ in tasks]
    for row, slot in enumerate(slots):
        label = config.classes[int(probs[row].argmax())]
        results[slot] = response.prediction(config, label, scores[row], classifier.version)
    return results
