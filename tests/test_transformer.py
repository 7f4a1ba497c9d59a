"""bfloat16 inference (INFERENCE_DTYPE): picked only where the CPU computes it natively, and close enough to
float32 that the most uncertain tasks stay the most uncertain."""

import contextlib
import threading
import time

import numpy as np
import pytest
import torch

from backend.models.loader import load_version
from backend.models.transformer import inference_dtype, native_bf16
from backend.registry import Registry
from backend.settings import Settings
from tests.helpers import pool_texts


def test_auto_uses_bfloat16_only_where_the_cpu_has_it():
    assert inference_dtype("auto") == (torch.bfloat16 if native_bf16() else torch.float32)
    assert inference_dtype("float32") == torch.float32 and inference_dtype("bfloat16") == torch.bfloat16
    assert inference_dtype("auto", torch.device("cuda")) == torch.float32


@pytest.mark.slow
def test_bfloat16_scores_rank_like_float32(trained_model_dir):
    version = Registry(trained_model_dir).current("default")
    texts = pool_texts()
    exact = load_version(version, Settings(), dtype="float32").predict_proba(texts)
    fast = load_version(version, Settings(), dtype="bfloat16").predict_proba(texts)
    assert not np.array_equal(exact, fast)  # the bfloat16 path really ran
    margin_exact, margin_fast = np.abs(exact[:, 0] - exact[:, 1]), np.abs(fast[:, 0] - fast[:, 1])
    assert np.abs(margin_exact - margin_fast).max() <= 0.02
    assert (exact.argmax(1) != fast.argmax(1)).mean() <= 0.01
    # The 20 tasks an annotator would be shown first are (nearly) the same.
    top = 20
    overlap = set(np.argsort(margin_exact)[:top]) & set(np.argsort(margin_fast)[:top])
    assert len(overlap) >= top - 2


def test_turns_are_granted_in_the_order_they_were_asked_for():
    from backend.models.transformer import TurnLock

    turns, order, threads = TurnLock(), [], []

    def take(name):
        with turns.turn():
            order.append(name)

    with turns.turn():
        for name in "abc":
            asked = turns._next_ticket
            threads.append(threading.Thread(target=take, args=(name,)))
            threads[-1].start()
            while turns._next_ticket == asked:  # until it holds its ticket
                time.sleep(0.001)
    for thread in threads:
        thread.join(5)
    assert order == ["a", "b", "c"]


def test_a_small_request_is_served_between_the_batches_of_a_big_one(trained_model_dir):
    """A one-task /predict waited 209 s behind a 20,000-task one: the model was held for a whole request."""
    from backend.models.transformer import TurnLock

    classifier = load_version(
        Registry(trained_model_dir).current("default"), Settings(batch_size=1, inference_dtype="float32")
    )
    started = threading.Event()

    class Watched(TurnLock):
        @contextlib.contextmanager
        def turn(self):
            with super().turn():
                yield
            started.set()

    classifier._turns = Watched()
    big = threading.Thread(target=classifier.predict_logits, args=(pool_texts(60),))
    big.start()
    started.wait(30)
    classifier.predict_logits(["una sola tarea"])
    assert big.is_alive()  # the small one is done while the big one still has batches to go
    big.join()
