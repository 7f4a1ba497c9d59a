"""Fitting the transformer kind with the transformers Trainer, and its recipe.

`TrainConfig.from_settings` is the one recipe: `python -m backend train`, the retraining worker and the
simulation all train with it (docs/active-learning.md explains the defaults).
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from .preprocess import normalize_tweet
from .transformer import TransformerClassifier, torch_device

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    # The recipe's values come from the settings (from_settings); the rest are fixed choices.
    epochs: float
    learning_rate: float
    # With few labels an epoch is a handful of steps: train at least this many optimizer steps.
    min_steps: int
    batch_size: int = 16
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 42
    max_length: int = 128
    normalize: bool = True
    progress: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, *, warm: bool, **overrides: Any) -> TrainConfig:
        """Warm start: a few epochs from the version serving now, at half the rate and half the minimum steps;
        else the full recipe from the base model. `overrides`: fields to set (None values are ignored)."""
        s = settings
        config = cls(
            epochs=s.warm_start_epochs if warm else s.train_epochs,
            learning_rate=s.train_learning_rate / 2 if warm else s.train_learning_rate,
            min_steps=s.train_min_steps // 2 if warm else s.train_min_steps,
            max_length=s.max_length,
            normalize=s.normalize_tweets,
        )
        for name, value in overrides.items():
            if value is not None:
                setattr(config, name, value)
        return config


def class_weights(label_ids: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse class frequency (n / (k * n_c)), so the rare class (xenophobic: ~15%) is not ignored."""
    counts = np.bincount(np.asarray(label_ids), minlength=num_classes).astype(np.float64)
    weights = len(label_ids) / (num_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def fine_tune(
    texts: Sequence[str],
    labels: Sequence[str],
    classes: Sequence[str],
    *,
    base_model: str,
    config: TrainConfig,
    callbacks: Sequence = (),
    device: str = "auto",
) -> tuple[TransformerClassifier, float]:
    """Fine-tune `base_model` on every (text, label) given, on `device` (TORCH_DEVICE); (the classifier, on
    that device, and the epochs it trained)."""
    use_cpu = torch_device(device).type == "cpu"  # before any work: TORCH_DEVICE=cuda without a GPU fails here
    classes = list(classes)
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
    label_ids = [label2id[y] for y in labels]
    dataset = Dataset.from_dict({"text": [prepare(t) for t in texts], "label": label_ids}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=config.max_length),
        batched=True,
        remove_columns=["text"],
    )
    weights = class_weights(label_ids, len(classes))

    def weighted_loss(outputs, targets, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        return torch.nn.functional.cross_entropy(logits, targets, weight=weights.to(logits.device))

    steps_per_epoch = -(-len(texts) // config.batch_size)
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
            use_cpu=use_cpu,
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
        log.info("fine-tuning %s on %d tweets (%s)", base_model, len(texts), dict(Counter(labels)))
        trainer.train()
    model.eval()
    classifier = TransformerClassifier(
        model=model,
        tokenizer=tokenizer,
        labels=tuple(classes),
        version="candidate",
        trained=True,
        max_length=config.max_length,
        normalize=config.normalize,
    )
    return classifier, epochs
