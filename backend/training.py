"""Fine-tuning with the transformers Trainer, and storing the result as a new registry version.

The same `train_version` serves `python -m backend train --csv FILE` and the retraining worker.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from datasets import Dataset
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from .errors import NoTrainingData
from .model import Classifier
from .preprocess import normalize_tweet
from .registry import Registry, Version

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: float = 4
    learning_rate: float = 5e-5
    batch_size: int = 16
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    # With few labels an epoch is a handful of steps: train at least this many optimizer steps.
    min_steps: int = 0
    eval_fraction: float = 0.2  # held out for the metrics stored with the version; 0 = train on all
    # Hold out only when every class keeps this many examples on the evaluation side; else train on all.
    min_eval_per_class: int = 4
    min_per_class: int = 2
    seed: int = 42
    max_length: int = 128
    normalize: bool = True
    progress: bool = True


def class_weights(label_ids: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse class frequency (n / (k * n_c)), so the rare class (xenophobic: ~15%) is not ignored."""
    counts = np.bincount(np.asarray(label_ids), minlength=num_classes).astype(np.float64)
    weights = len(label_ids) / (num_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def check_labels(labels: Sequence[str], classes: Sequence[str], min_per_class: int) -> Counter:
    counts = Counter(labels)
    unknown = sorted(set(counts) - set(classes))
    if unknown:
        raise NoTrainingData(f"labels {unknown} are not among the classes {list(classes)}")
    short = {c: counts.get(c, 0) for c in classes if counts.get(c, 0) < min_per_class}
    if short:
        raise NoTrainingData(
            f"too few labels to train: {dict(counts)}; every class needs at least {min_per_class} (short: {short})"
        )
    return counts


def evaluate(classifier: Classifier, texts: Sequence[str], labels: Sequence[str]) -> dict:
    probs = classifier.predict_proba(texts)
    predicted = [classifier.labels[i] for i in probs.argmax(axis=1)]
    per_class = f1_score(labels, predicted, labels=list(classifier.labels), average=None, zero_division=0)
    return {
        "n": len(labels),
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1_macro": float(np.mean(per_class)),
        "f1": {name: float(f) for name, f in zip(classifier.labels, per_class)},
    }


def train_version(
    texts: Sequence[str],
    labels: Sequence[str],
    classes: Sequence[str],
    *,
    base_model: str,
    registry: Registry,
    scope: str,
    config: TrainConfig | None = None,
    parent: str | None = None,
    callbacks: Sequence = (),
) -> Version:
    """Fine-tune `base_model` on (texts, labels), evaluate on a held-out part, promote as a new version."""
    config = config or TrainConfig()
    classes = list(classes)
    counts = check_labels(labels, classes, config.min_per_class)
    started = time.time()

    train_x, eval_x, train_y, eval_y = _split(list(texts), list(labels), config)
    label2id = {name: i for i, name in enumerate(classes)}
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model,
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id=label2id,
        ignore_mismatched_sizes=True,  # a checkpoint trained for other classes gets a fresh head
    )

    prepare = normalize_tweet if config.normalize else (lambda t: t)
    train_ids = [label2id[y] for y in train_y]
    dataset = Dataset.from_dict({"text": [prepare(t) for t in train_x], "label": train_ids}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=config.max_length),
        batched=True,
        remove_columns=["text"],
    )
    weights = class_weights(train_ids, len(classes))

    def weighted_loss(outputs, targets, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        return torch.nn.functional.cross_entropy(logits, targets, weight=weights.to(logits.device))

    steps_per_epoch = -(-len(train_x) // config.batch_size)
    epochs = max(config.epochs, config.min_steps / steps_per_epoch)
    with tempfile.TemporaryDirectory(prefix="trainer-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            num_train_epochs=epochs,
            learning_rate=config.learning_rate,
            per_device_train_batch_size=config.batch_size,
            weight_decay=config.weight_decay,
            warmup_steps=config.warmup_ratio,  # a float < 1 is a fraction of the steps
            lr_scheduler_type="linear",
            eval_strategy="no",
            save_strategy="no",
            logging_steps=10,
            report_to=[],
            seed=config.seed,
            disable_tqdm=not config.progress,
            train_sampling_strategy="group_by_length",
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
            compute_loss_func=weighted_loss,
            callbacks=list(callbacks),
        )
        log.info("training on %d tweets (%s), holding out %d", len(train_x), dict(Counter(train_y)), len(eval_x))
        trainer.train()
    train_seconds = time.time() - started

    model.eval()
    classifier = Classifier(
        model=model, tokenizer=tokenizer, labels=tuple(classes), version="candidate", trained=True,
        max_length=config.max_length, normalize=config.normalize,
    )
    metrics = evaluate(classifier, eval_x, eval_y) if eval_x else {}
    if metrics:
        log.info("held-out metrics: %s", metrics)

    with registry.stage(scope) as staged:
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        metadata = {
            "base_model": str(base_model),
            "parent": parent,
            "classes": classes,
            "labels_used": len(labels),
            "label_counts": {c: counts.get(c, 0) for c in classes},
            "train_size": len(train_x),
            "eval_size": len(eval_x),
            "metrics": metrics,
            "train_config": asdict(config),
            "train_seconds": round(train_seconds, 2),
            "epochs": round(epochs, 2),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        version = registry.promote(scope, staged, metadata)
    log.info("promoted %s (%s)", version.name, version.path)
    return version


def _split(texts: list[str], labels: list[str], config: TrainConfig):
    counts = Counter(labels)
    n_eval = int(round(len(labels) * config.eval_fraction))
    # A stratified hold-out needs every class on both sides; with fewer labels, train on all of them.
    if config.eval_fraction <= 0 or min(counts.values()) * config.eval_fraction < config.min_eval_per_class:
        return texts, [], labels, []
    return train_test_split(texts, labels, test_size=n_eval, stratify=labels, random_state=config.seed)
