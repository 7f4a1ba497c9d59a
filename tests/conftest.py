"""Fixtures only; shared helpers live in tests/helpers.py."""

import os
import signal

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from backend.models.finetune import TrainConfig  # noqa: E402
from backend.models.training import train_version  # noqa: E402
from backend.registry import Registry  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.stack.demo import DEMO  # noqa: E402
from backend.stack.launcher import LocalStack, label_studio_bin  # noqa: E402
from backend.stack.processes import RedisServer, free_port  # noqa: E402
from tests.helpers import CONFIG, ROOT, read_demo  # noqa: E402

BACKEND = ROOT / "backend"


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory) -> Path:
    """MODEL_DIR holding one default transformer version fine-tuned briefly on the demo tweets (real training).

    The fine-tuning (about 9 s of `make check`) is kept in .pytest_cache/, keyed by a hash of the backend's
    code and the demo tweets, and copied into a fresh folder each session: any change to either trains anew."""
    source = hashlib.sha256()
    for path in sorted([*BACKEND.rglob("*.py"), *DEMO.glob("*.csv")]):
        source.update(path.read_bytes())
    cache = ROOT / ".pytest_cache" / f"trained-model-{source.hexdigest()[:16]}"
    if not (cache / "default" / "CURRENT").exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=".building-", dir=cache.parent))
        rows = read_demo("tweets_labeled.csv")
        train_version(
            [r["text"] for r in rows],
            [r["label"] for r in rows],
            CONFIG.classes,
            kinds=["transformer"],
            settings=Settings(model_dir=building),
            registry=Registry(building),
            scope="default",
            train_config=TrainConfig(epochs=2, learning_rate=1e-4, min_steps=0, progress=False),
        )
        for stale in cache.parent.glob("trained-model-*"):
            shutil.rmtree(stale, ignore_errors=True)
        building.rename(cache)
    model_dir = tmp_path_factory.mktemp("models")
    shutil.copytree(cache, model_dir, dirs_exist_ok=True)
    return model_dir


@pytest.fixture(scope="session")
def settings(trained_model_dir) -> Settings:
    # A closed port: no test may lean on the machine's own Redis service. float32: these tests compare scores
    # exactly (bfloat16 moves them by up to 0.01 with the batch; tests/test_transformer.py checks that).
    return Settings(
        model_dir=trained_model_dir,
        basic_auth_user="",
        basic_auth_pass="",
        webhook_secret="",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        inference_dtype="float32",
    )


@pytest.fixture(scope="session")
def app(settings):
    from backend.api import create_app

    return create_app(settings)


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def label_studio_binary() -> str:
    binary = label_studio_bin()
    if not Path(binary).exists():
        reason = f"Label Studio not installed at {binary} (run `make install`)"
        if os.environ.get("REQUIRE_E2E"):
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


# Settings of the end-to-end stack: a short training recipe (the tests check the loop; docs/active-learning.md
# the learning), fast retries, and float32 so that the served scores can be checked to 1e-4; everything else as
# `make run` has it.
E2E_SETTINGS = {
    "INFERENCE_DTYPE": "float32",
    # Both kinds: fast runs (linear) every RETRAIN_EVERY annotations, full runs (and the transformer) on Start
    # Training only.
    "MODEL_KINDS": "linear,transformer",
    "TRANSFORMER_EVERY": "1000",
    "LABEL_STUDIO_ATTEMPTS": "3",
    "LABEL_STUDIO_BACKOFF": "0.2",
    "RETRAIN_EVERY": "10",
    "MIN_LABELS_PER_CLASS": "3",
    "TRAIN_EPOCHS": "2",
    "TRAIN_MIN_STEPS": "8",
    "RESCORE_CHUNK": "15",
    "TRAINING_LEASE_SECONDS": "3",
    # Narrower than the tests' projects' pools, so that they see the tasks outside the window.
    "QUEUE_WINDOW": "20",
    "WORKERS": "2",
    "THREADS": "4",
}


@pytest.fixture(scope="session")
def personal_access_token(stack) -> str:
    """The admin's personal access token: Label Studio gives a user one at a time (a second is a 409)."""
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=stack.ls_url, api_key=stack.token).tokens.create().token


def e2e_stack(folder: Path, label_studio_binary: str, trained_model_dir: Path, **overrides) -> LocalStack:
    """A LocalStack as `make run` makes it, on free ports, with E2E_SETTINGS, serving a copy of the trained
    default version; not started."""
    shutil.copytree(trained_model_dir, folder / "models")
    return LocalStack(
        folder=folder,
        token=secrets.token_hex(20),
        webhook_secret=secrets.token_hex(24),  # as `make run`: Label Studio's webhooks carry it
        password="e2e-pass-123",
        ls_port=free_port(),
        port=free_port(),
        dashboard_port=free_port(),
        ls_binary=label_studio_binary,
        settings_env=E2E_SETTINGS,
        **overrides,
    )


@pytest.fixture(scope="session")
def stack(label_studio_binary, trained_model_dir, tmp_path_factory) -> LocalStack:
    """The stack `make run` starts (Redis, Label Studio, backend, worker, rq-dashboard), through the launcher's
    own code, on free ports, serving a copy of the trained default version."""
    stack = e2e_stack(tmp_path_factory.mktemp("stack"), label_studio_binary, trained_model_dir).start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def _signal_handlers():
    """An RQ worker run in a test installs its own SIGTERM and SIGINT handlers and leaves them: a later Ctrl-C or
    `timeout` would then raise StopRequested inside whatever test runs instead of stopping pytest."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
