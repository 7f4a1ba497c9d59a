import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import secrets  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from backend.registry import Registry  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.stack import RedisServer, free_port, start_label_studio, stop  # noqa: E402

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
    # A closed port: no test may lean on the machine's own Redis service.
    return Settings(model_dir=trained_model_dir, basic_auth_user="", basic_auth_pass="", webhook_secret="",
                    redis_url=f"redis://127.0.0.1:{free_port()}/0")


@pytest.fixture(scope="session")
def app(settings):
    from backend.api import create_app

    return create_app(settings)


@pytest.fixture()
def client(app):
    return app.test_client()


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid`, read from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


@pytest.fixture()
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio 1.23 with the flags a local backend needs; (url, legacy token)."""
    binary = os.environ.get("LABEL_STUDIO_BIN") or str(ROOT / ".venv-ls" / "bin" / "label-studio")
    if not Path(binary).exists():
        reason = f"Label Studio not installed at {binary} (run `make install`)"
        if os.environ.get("REQUIRE_E2E"):
            pytest.fail(reason)
        pytest.skip(reason)
    data = tmp_path_factory.mktemp("label-studio")
    token = secrets.token_hex(20)
    proc, url = start_label_studio(binary, data, free_port(), username="admin@example.com", password="e2e-pass-123",
                                   token=token)
    try:
        yield url, token
    finally:
        stop(proc)
