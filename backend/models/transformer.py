"""The transformer kind: a Hugging Face sequence-classification model that turns texts into class probabilities.

Inference sorts texts by length and pads each batch only to its longest member (dynamic padding), which is
most of the speed-up over `transformers.pipeline` on tweets whose lengths vary a lot. On CPUs that compute
bfloat16 natively, matrix products run in bfloat16 under autocast (softmax and layer norms stay float32):
docs/benchmarks.md has the speed and the change in probabilities. The model runs on TORCH_DEVICE (the GPU
where torch sees one); the texts go to wherever the model is, so a model fresh from training on a GPU scores
there too.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .. import calibration
from . import base
from .preprocess import normalize_tweet

log = logging.getLogger(__name__)


@dataclass
class TransformerClassifier:
    kind = "transformer"

    model: Any  # a transformers PreTrainedModel
    tokenizer: Any  # its tokenizer
    labels: tuple[str, ...]  # class name of each output, in output order
    version: str
    trained: bool  # False when the classification head was freshly initialized (random numbers)
    max_length: int = 128
    batch_size: int = 64
    normalize: bool = True
    dtype: torch.dtype = torch.float32  # float32, or bfloat16 for autocast inference
    temperature: float = 1.0  # divides the logits (calibration.py), fitted on held-out labels at training
    # Threads of one server process share the model; torch already uses every core for one batch.
    _turns: TurnLock = field(default_factory=lambda: TurnLock(), repr=False)

    @classmethod
    def load(
        cls,
        source: str | Path,
        *,
        version: str,
        labels_override: Sequence[str] = (),
        max_length: int = 128,
        batch_size: int = 64,
        normalize: bool = True,
        dtype: str = "float32",
        temperature: float = 1.0,
        device: str = "cpu",
    ) -> TransformerClassifier:
        log.info("loading model %s from %s", version, source)
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        model, info = AutoModelForSequenceClassification.from_pretrained(str(source), output_loading_info=True)
        on = torch_device(device)
        model.to(on).eval()
        # Weights missing from the checkpoint were freshly (randomly) initialized: its outputs mean nothing yet.
        missing = sorted(info.get("missing_keys", ()))
        labels = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
        if labels_override:
            if len(labels_override) != len(labels):
                raise ValueError(
                    f"MODEL_LABELS names {len(labels_override)} classes but {source} has {len(labels)} outputs"
                )
            labels = tuple(labels_override)
        return cls(
            model=model,
            tokenizer=tokenizer,
            labels=labels,
            version=version,
            trained=not missing,
            max_length=max_length,
            batch_size=batch_size,
            normalize=normalize,
            dtype=inference_dtype(dtype, on),
            temperature=temperature,
        )

    def serves(self, classes: Sequence[str]) -> bool:
        return base.serves(self.labels, self.trained, classes)

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    def prepare(self, texts: Sequence[str]) -> list[str]:
        return [normalize_tweet(t) for t in texts] if self.normalize else list(texts)

    def predict_proba(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """(len(texts), len(self.labels)) softmax probabilities, rows in the order of `texts`."""
        return calibration.softmax(self.predict_logits(texts, progress=progress), self.temperature).astype(np.float32)

    def predict_logits(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """(len(texts), len(self.labels)) logits, rows in the order of `texts`."""
        logits = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return logits
        encoded = self.tokenizer(self.prepare(texts), truncation=True, max_length=self.max_length)["input_ids"]
        order = np.argsort([len(ids) for ids in encoded], kind="stable")
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        device = self.model.device
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16)
        with torch.inference_mode(), autocast:
            for batch in tqdm(batches, desc="scoring", unit="batch", disable=not progress):
                inputs = self.tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
                # One batch per turn, turns in arrival order: a one-task request waits for a batch of a big one,
                # never for all of it (the model runs one batch at a time, so threads do not fight for cores).
                with self._turns.turn():
                    logits[batch] = self.model(**inputs.to(device)).logits.float().cpu().numpy()
        return logits


class TurnLock:
    """A lock granted in the order it was asked for (threading.Lock lets a thread that just released it take it
    again before a waiting one wakes up)."""

    def __init__(self):
        self._changed = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._changed:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._changed.wait_for(lambda: self._serving == ticket)
        try:
            yield
        finally:
            with self._changed:
                self._serving += 1
                self._changed.notify_all()


@functools.cache
def native_bf16() -> bool:
    """True when the CPU has bfloat16 instructions (AVX512-BF16 or AMX); elsewhere bfloat16 is emulated, slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def torch_device(name: str) -> torch.device:
    """TORCH_DEVICE: "cpu", "cuda", or "auto" (the GPU where torch sees one, else the CPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    elif name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"TORCH_DEVICE=cuda, but torch {torch.__version__} sees no GPU: install a CUDA build of torch "
            "(the lock pins the CPU one) and check nvidia-smi, or set TORCH_DEVICE=auto or cpu"
        )
    return torch.device(name)


def inference_dtype(name: str, device: torch.device | None = None) -> torch.dtype:
    """INFERENCE_DTYPE: "float32", "bfloat16", or "auto" (bfloat16 on a CPU that computes it natively; float32
    on a GPU, fast enough without it)."""
    if name == "auto":
        on_cpu = device is None or device.type == "cpu"
        return torch.bfloat16 if on_cpu and native_bf16() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]
