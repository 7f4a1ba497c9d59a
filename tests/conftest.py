import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from backend.registry import Registry  # noqa: E402
from backend.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "backend" / "demo"
LABEL_CONFIG = (ROOT / "label_config.xml").read_text()


def read_demo(name: str) -> list[dict]:
    import csv

    with (DEMO / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory) -> Path:
    """MODEL_DIR holding one default version fine-tuned briefly on the demo tweets (real training)."""
    from backend.training import TrainConfig, train_version

    model_dir = tmp_path_factory.mktemp("models")
    rows = read_demo("tweets_labeled.csv")
    settings = Settings(model_dir=model_dir)
    train_version(
        [r["text"] for r in rows],
        [r["label"] for r in rows],
        ["ok", "xenófobo"],
        base_model=settings.model_name,
        registry=Registry(model_dir),
        scope="default",
        config=TrainConfig(epochs=2, learning_rate=1e-4, eval_fraction=0.2, progress=False),
    )
    return model_dir


@pytest.fixture(scope="session")
def settings(trained_model_dir) -> Settings:
    return Settings(model_dir=trained_model_dir, basic_auth_user="", basic_auth_pass="", webhook_secret="")


@pytest.fixture(scope="session")
def app(settings):
    from backend.api import create_app

    return create_app(settings)


@pytest.fixture()
def client(app):
    return app.test_client()
