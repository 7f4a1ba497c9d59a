"""TORCH_DEVICE: the transformer kind trains and scores on the GPU where torch sees one, and what it saves
scores the same on the CPU. The GPU case is skipped where torch sees none (CI); on a GPU machine:
`python -m pytest --noconftest tests/test_device.py` (imports nothing of Label Studio, Redis or Flask)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from backend.models.finetune import TrainConfig, fine_tune  # noqa: E402
from backend.models.transformer import TransformerClassifier, torch_device  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.stack.demo import DEMO  # noqa: E402
from backend.tables import read_csv  # noqa: E402

CLASSES = ["ok", "xenófobo"]
NO_GPU = not torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(NO_GPU, reason="torch sees no GPU"))]


def _demo(n: int) -> tuple[list[str], list[str]]:
    rows = read_csv(DEMO / "tweets_labeled.csv", ["text", "label"])
    rows = [r for r in rows if r["label"] == CLASSES[1]][: n // 2] + [r for r in rows if r["label"] == CLASSES[0]]
    return [r["text"] for r in rows[:n]], [r["label"] for r in rows[:n]]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_a_transformer_trains_and_scores_on_its_device_and_its_version_scores_alike_on_the_cpu(device, tmp_path):
    texts, labels = _demo(32)
    config = TrainConfig(epochs=1, learning_rate=1e-4, min_steps=4, progress=False)
    model, _ = fine_tune(texts, labels, CLASSES, base_model=Settings().model_name, config=config, device=device)
    assert model.model.device.type == device
    # Scoring right after training (the held-out figures of a training run) uses the device the model is on.
    scores = model.predict_proba(texts)
    assert scores.shape == (len(texts), 2) and np.allclose(scores.sum(1), 1, atol=1e-5)
    model.save(tmp_path)
    on_cpu = TransformerClassifier.load(tmp_path, version="project1-v1", device="cpu")
    assert on_cpu.model.device.type == "cpu"
    np.testing.assert_allclose(on_cpu.predict_proba(texts), scores, atol=1e-4)
    if device == "cuda":
        assert TransformerClassifier.load(tmp_path, version="project1-v1", device="auto").model.device.type == "cuda"


@pytest.mark.skipif(not NO_GPU, reason="a GPU is there")
def test_cuda_asked_for_without_a_gpu_is_refused_before_any_work():
    assert torch_device("auto") == torch.device("cpu")
    texts, labels = _demo(8)
    with pytest.raises(ValueError, match="TORCH_DEVICE=cuda, but torch .* sees no GPU"):
        fine_tune(texts, labels, CLASSES, base_model="/nowhere", config=TrainConfig(1, 1e-4, 1), device="cuda")
