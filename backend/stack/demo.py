"""The demo project of `make run` and of docker compose's setup service, from the demo tweets shipped here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..tables import read_csv

if TYPE_CHECKING:
    from ..labelstudio.project_setup import SetupReport

DEMO = Path(__file__).resolve().parent / "demo"
DEMO_TITLE = "Demo: tweets xenofobia"


def read_demo(name: str) -> list[dict]:
    """The rows of one of the demo CSVs (tweets_labeled.csv: text,label; tweets_pool.csv: id,text)."""
    return read_csv(DEMO / name, ["text"])


def demo_rows() -> list[dict]:
    """The demo tweets: about 200 labeled (they bootstrap the first model) and 200 not."""
    labeled = [{"id": f"labeled-{i}", **row} for i, row in enumerate(read_demo("tweets_labeled.csv"))]
    pool = [
        {"id": f"pool-{row.get('id', i)}", "text": row["text"]} for i, row in enumerate(read_demo("tweets_pool.csv"))
    ]
    return labeled + pool


def setup_demo(
    ls,
    backend_url: str,
    *,
    label_config: str | None = None,
    backend_auth: tuple | None = None,
    webhook_secret: str = "",
    title: str = DEMO_TITLE,
) -> SetupReport:
    """While the project has no model of its own, ask the backend to train one on the demo labels (the worker
    does it in the background)."""
    # Imported here: DEMO and read_demo stay importable without Label Studio's SDK (tests/test_device.py on a
    # GPU machine, scripts/benchmark_training.py).
    import requests

    from ..labelstudio.label_config import default_label_config
    from ..labelstudio.project_setup import request_training, setup_project

    # No "Retrieve predictions" now: the untrained base model has none to give; the worker's re-scoring will.
    report = setup_project(
        ls,
        title=title,
        label_config=label_config or default_label_config(),
        rows=demo_rows(),
        backend_url=backend_url,
        retrieve=False,
        backend_auth=backend_auth,
        webhook_secret=webhook_secret,
    )
    # The project's own versions: a default version may serve (and have scored the import) meanwhile.
    answer = requests.get(
        f"{backend_url.rstrip('/')}/versions", params={"project": report.project}, auth=backend_auth, timeout=10
    )
    answer.raise_for_status()
    if not answer.json()["versions"]:
        request_training(backend_url, report.project, backend_auth, webhook_secret)
        report.training_requested = True
    return report
