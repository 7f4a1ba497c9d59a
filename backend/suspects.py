"""Labels that look wrong: annotated tasks ranked by how little an out-of-fold model believes their label.

Every labeled task is scored by a linear model (the fast kind) trained on the other folds, so no task is judged
by a model that learned its own label; the lower the probability that model gives the annotated label, the more
the label deserves a second look (the idea behind cleanlab's label issues, without its thresholds: the page
ranks and a person decides). Two labels per class are the least k-fold needs; with fewer, nothing is ranked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import calibration
from .models.base import Unlabeled, label_shortfall
from .models.linear import LinearConfig, project_vocabulary
from .models.training import out_of_fold
from .registry import Registry
from .settings import Settings

MIN_PER_CLASS = 2


@dataclass(frozen=True)
class Suspect:
    index: int  # position in the texts given
    label: str  # the annotated one
    p_label: float  # out-of-fold probability of the annotated label
    predicted: str  # the out-of-fold model's choice


def out_of_fold_probabilities(
    texts: Sequence[str],
    labels: Sequence[str],
    classes: Sequence[str],
    *,
    settings: Settings,
    unlabeled: Sequence[str] | Unlabeled = (),
) -> np.ndarray | None:
    """(len(texts), len(classes)) probabilities, each row from a linear model that did not train on that text;
    None when a class has fewer than two labels, or a label is not among `classes`. The vocabulary is the one
    the training run fitted on the same texts, from MODEL_DIR when it is there."""
    texts, labels, classes = list(texts), list(labels), list(classes)
    if len(classes) < 2 or set(labels) - set(classes) or label_shortfall(labels, classes, MIN_PER_CLASS):
        return None
    config = LinearConfig.from_settings(settings)
    vocabulary = project_vocabulary(texts, unlabeled, config, Registry(settings.model_dir).vocabularies)
    logits, _ = out_of_fold(texts, labels, classes, config, vocabulary)
    return calibration.softmax(logits)


def rank_suspects(
    texts: Sequence[str],
    labels: Sequence[str],
    classes: Sequence[str],
    *,
    settings: Settings,
    unlabeled: Sequence[str] | Unlabeled = (),
    limit: int | None = None,
) -> list[Suspect]:
    """The labeled texts whose label the out-of-fold model disagrees with, the least believed first (ties: the
    order given). Empty when a class has fewer than two labels, or a label is not among `classes`."""
    probs = out_of_fold_probabilities(texts, labels, classes, settings=settings, unlabeled=unlabeled)
    if probs is None:
        return []
    given = np.array([list(classes).index(y) for y in labels])
    p_label = probs[np.arange(len(given)), given]
    predicted = probs.argmax(axis=1)
    order = [i for i in np.argsort(p_label, kind="stable") if predicted[i] != given[i]]
    return [Suspect(int(i), labels[i], round(float(p_label[i]), 4), classes[int(predicted[i])]) for i in order[:limit]]


def suspect_scores(probs: np.ndarray, labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """1 - the out-of-fold probability of each annotated label: above 0.5, the model believes another class."""
    given = [list(classes).index(y) for y in labels]
    return 1.0 - probs[np.arange(len(given)), given]
