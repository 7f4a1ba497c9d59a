"""Label Studio on PostgreSQL, as `make run` starts it where .env names one (DJANGO_DB=default and the POSTGRE_*),
as docker-compose.postgres.yml does: the stack runs on it, and the Data Manager shows and filters the predicted
labels as written (on SQLite it shows `xen\\u00f3fobo`, and a filter "contains xenófobo" finds nothing).

It needs a PostgreSQL server to create a database on: TEST_POSTGRE_HOST, _PORT, _USER, _PASSWORD (default
127.0.0.1:5432, postgres, no password: the development machines' server) and its `psql`; skipped where none
answers, failed in CI (REQUIRE_E2E).
"""

import os
import secrets
import shutil
import subprocess

import pytest
import requests
import yaml

from backend.labelstudio.project_setup import setup_project
from backend.stack.processes import free_port
from tests.conftest import E2E_SETTINGS, e2e_stack
from tests.helpers import LABEL_CONFIG, ROOT, read_demo

pytestmark = pytest.mark.e2e

SERVER = {
    "POSTGRE_HOST": os.environ.get("TEST_POSTGRE_HOST", "127.0.0.1"),
    "POSTGRE_PORT": os.environ.get("TEST_POSTGRE_PORT", "5432"),
    "POSTGRE_USER": os.environ.get("TEST_POSTGRE_USER", "postgres"),
    "POSTGRE_PASSWORD": os.environ.get("TEST_POSTGRE_PASSWORD", ""),
}


def _missing(reason: str):
    """As the other end-to-end checks: skipped here, a failure in CI (REQUIRE_E2E), which has a server."""
    if os.environ.get("REQUIRE_E2E"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture()
def database() -> dict:
    """A new, empty database on the server, dropped after the test: Label Studio's settings for it."""
    psql = shutil.which("psql")
    if not psql:
        _missing("no psql here (apt-get install postgresql-client)")
    name = f"ls_e2e_{secrets.token_hex(4)}"
    login = ["-h", SERVER["POSTGRE_HOST"], "-p", SERVER["POSTGRE_PORT"], "-U", SERVER["POSTGRE_USER"]]
    command = [psql, *login, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"]
    env = {**os.environ, "PGPASSWORD": SERVER["POSTGRE_PASSWORD"], "PGCONNECT_TIMEOUT": "5"}
    made = subprocess.run([*command, f'CREATE DATABASE "{name}"'], env=env, capture_output=True, text=True)
    if made.returncode:
        _missing(f"no PostgreSQL to create a database on: {made.stderr.strip()}")
    try:
        yield {"DJANGO_DB": "default", **SERVER, "POSTGRE_NAME": name}
    finally:
        subprocess.run([*command, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], env=env, capture_output=True)


def test_the_stack_runs_label_studio_on_postgresql(label_studio_binary, trained_model_dir, database, tmp_path, capsys):
    from label_studio_sdk import LabelStudio

    stack = e2e_stack(tmp_path, label_studio_binary, trained_model_dir, ls_database=database).start()
    try:
        said = (
            f"on PostgreSQL: database {database['POSTGRE_NAME']} at {SERVER['POSTGRE_HOST']}:{SERVER['POSTGRE_PORT']}"
        )
        assert said in capsys.readouterr().out
        ls = LabelStudio(base_url=stack.ls_url, api_key=stack.token)
        rows = [{"id": f"pg{i}", "text": r["text"]} for i, r in enumerate(read_demo("tweets_pool.csv")[:40])]
        project = setup_project(
            ls,
            title="postgres e2e",
            label_config=LABEL_CONFIG,
            rows=rows,
            backend_url=stack.backend_url,
            backend_auth=stack.backend_auth,
            webhook_secret=stack.webhook_secret,
        ).project
        # Label Studio keeps nothing in SQLite: its tables are in the database named.
        assert not list((tmp_path / "label-studio").glob("*.sqlite3"))

        predicted = [
            (p if isinstance(p, dict) else p.model_dump())["result"][0]["value"]["choices"][0]
            for task in ls.tasks.list(project=project, fields="all", page_size=100)
            for p in task.predictions
        ]
        # The worker's window of the imported tweets (QUEUE_WINDOW of the 40).
        assert len(predicted) == min(len(rows), int(E2E_SETTINGS["QUEUE_WINDOW"])) and "xenófobo" in predicted
        headers = {"Authorization": f"Token {stack.token}"}
        contains = {"filter": "filter:tasks:predictions_results", "operator": "contains", "type": "String"}
        view = requests.post(
            f"{stack.ls_url}/api/dm/views/",
            json={
                "project": project,
                "data": {"filters": {"conjunction": "and", "items": [{**contains, "value": "xenófobo"}]}},
            },
            headers=headers,
            timeout=30,
        ).json()
        shown = requests.get(
            f"{stack.ls_url}/api/tasks/",
            params={"project": project, "view": view["id"], "page_size": 100},
            headers=headers,
            timeout=30,
        ).json()
        assert shown["total"] == predicted.count("xenófobo")
        # The column as the Data Manager shows it, e.g. "[{type:choices, value:{choices:[xenófobo]}, ...}]".
        assert all("choices:[xenófobo]" in task["predictions_results"] for task in shown["tasks"])
    finally:
        stack.stop()


def test_compose_s_postgres_healthcheck_is_healthy_when_the_server_answers(database):
    """docker-compose.postgres.yml's healthcheck, run here against the same server (over TCP instead of the
    container's socket): healthy while it accepts connections, unhealthy where nothing listens."""
    file = yaml.safe_load((ROOT / "docker-compose.postgres.yml").read_text())
    _, check = file["services"]["postgres"]["healthcheck"]["test"]
    if not shutil.which("pg_isready"):
        _missing("no pg_isready here (apt-get install postgresql-client)")

    def healthy(port: str) -> bool:
        env = {**os.environ, "PGHOST": SERVER["POSTGRE_HOST"], "PGPORT": port, "PGCONNECT_TIMEOUT": "3"}
        return subprocess.run(check, shell=True, env=env, capture_output=True, timeout=30).returncode == 0

    assert healthy(SERVER["POSTGRE_PORT"])
    assert not healthy(str(free_port()))
