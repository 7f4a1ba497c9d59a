"""Benchmark: what deleting an older version's predictions costs Label Studio's annotators, and what keeping
older versions costs instead (why a round writes and deletes only a window, QUEUE_WINDOW). Prints figures;
results live in docs/benchmarks.md.

    .venv/bin/python scripts/benchmark_cleanup.py [--tasks 2000] [--singles 150]

A real Label Studio (its default SQLite, as both stacks run it) on a free port, one project of --tasks unlabeled
tweets with Uncertainty sampling and versions of one prediction per task. An annotator loops: the next task
(`GET /api/projects/ID/next`), an annotation (`POST /api/tasks/ID/annotations`), half a second of thought. Timed
while nothing else runs, while one version is deleted in one request (what the cleanup job sends), and while
--singles predictions are deleted one request each (`DELETE /api/predictions/ID`). Then, with 1 to 12 versions
kept, the next task, a Data Manager page and an annotation, one at a time.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from backend.labelstudio.label_config import default_label_config, parse_label_config
from backend.stack.launcher import label_studio_bin
from backend.stack.processes import free_port, start_label_studio, stop

REGION = parse_label_config(default_label_config()).region("ok")


class Studio:
    def __init__(self, url: str, token: str, tasks: int):
        from label_studio_sdk import LabelStudio

        self.url, self.http = url, requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"
        self.ls = LabelStudio(base_url=url, api_key=token, timeout=600)
        project = self.ls.projects.create(title="cleanup benchmark", label_config=default_label_config()).id
        assert project is not None
        self.project: int = project
        rows: list = [{"data": {"text": f"tuit número {i}, con algo de texto"}} for i in range(tasks)]
        imported = self.ls.projects.import_tasks(id=self.project, request=rows, return_task_ids=True)
        self.tasks = list(imported.task_ids)  # type: ignore[attr-defined]
        self.todo = iter(self.tasks)
        self.ls.projects.update(id=self.project, sampling="Uncertainty sampling")

    def add_version(self, name: str) -> float:
        rows: list = [
            {"task": t, "model_version": name, "score": random.random(), "result": [REGION]} for t in self.tasks
        ]
        started = time.perf_counter()
        self.ls.projects.import_predictions(id=self.project, request=rows)
        self.ls.projects.update(id=self.project, model_version=name)
        return time.perf_counter() - started

    def timed(self, method: str, path: str, **kwargs) -> float:
        started = time.perf_counter()
        answer = self.http.request(method, f"{self.url}{path}", timeout=600, **kwargs)
        answer.raise_for_status()
        return time.perf_counter() - started

    def label_one(self) -> tuple[float, float]:
        """(next task, annotation) seconds."""
        nxt = self.timed("GET", f"/api/projects/{self.project}/next/")
        return nxt, self.timed("POST", f"/api/tasks/{next(self.todo)}/annotations/", json={"result": [REGION]})

    def while_annotating(self, work: Callable[[], object]) -> tuple[list[tuple[float, float]], float]:
        """The annotator's (next task, annotation) seconds while `work` runs, and how long it ran."""
        seen: list[tuple[float, float]] = []
        done = threading.Event()

        def annotator() -> None:
            while not done.is_set():
                seen.append(self.label_one())
                done.wait(0.5)

        thread = threading.Thread(target=annotator)
        thread.start()
        started = time.perf_counter()
        work()
        took = time.perf_counter() - started
        done.set()
        thread.join()
        return seen, took

    def prediction_ids(self, version: str) -> list[int]:
        # Not paginated in Label Studio 1.23: every prediction of the project, each version's.
        every = self.http.get(f"{self.url}/api/predictions/", params={"project": self.project}, timeout=600).json()
        return [p["id"] for p in every if p["model_version"] == version]


def show(what: str, seen: list[tuple[float, float]], took: float | None = None) -> None:
    nxt, ann = [s[0] for s in seen], [s[1] for s in seen]
    line = (
        f"{what:34s} {len(seen):3d} labels   next task median {statistics.median(nxt):5.2f} s, max {max(nxt):5.2f} s"
        f"   annotation median {statistics.median(ann):5.2f} s, max {max(ann):5.2f} s"
    )
    print(line + (f"   ({took:.1f} s)" if took is not None else ""), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000, help="unlabeled tasks: one prediction each per version")
    parser.add_argument("--singles", type=int, default=150, help="predictions deleted one request each")
    args = parser.parse_args()
    folder, token = Path(tempfile.mkdtemp(prefix="bench-cleanup-")), secrets.token_hex(20)
    process, url = start_label_studio(
        label_studio_bin(),
        folder,
        free_port(),
        username="bench@example.com",
        password=secrets.token_hex(8),
        token=token,
    )
    try:
        studio = Studio(url, token, args.tasks)
        for name in ("v1", "v2", "v3"):
            studio.add_version(name)
        print(f"Label Studio at {url}: {args.tasks} tasks, 3 versions of {args.tasks} predictions", flush=True)
        seen, _ = studio.while_annotating(lambda: time.sleep(15))
        show("nothing else running", seen)
        body = {"model_version": "v1"}
        seen, took = studio.while_annotating(
            lambda: studio.timed("DELETE", f"/api/projects/{studio.project}/model-versions/", json=body)
        )
        show(f"deleting a version ({args.tasks}) at once", seen, took)
        print(f"  = {args.tasks / took:.0f} predictions a second", flush=True)
        singles = studio.prediction_ids("v2")[: args.singles]
        seen, took = studio.while_annotating(
            lambda: [studio.timed("DELETE", f"/api/predictions/{i}/") for i in singles]
        )
        show(f"deleting {len(singles)} one request each", seen, took)
        print(f"  = {len(singles) / took:.0f} predictions a second", flush=True)

        for name in ("v2", "v3"):
            studio.timed("DELETE", f"/api/projects/{studio.project}/model-versions/", json={"model_version": name})
        print("\nversions kept (each one prediction per task): one at a time, medians of 20", flush=True)
        for kept in range(1, 13):
            imported = studio.add_version(f"kept{kept}")
            if kept in (1, 3, 6, 12):
                nxt, page, ann = [], [], []
                for _ in range(20):
                    n, a = studio.label_one()
                    page.append(
                        studio.timed("GET", "/api/tasks/", params={"project": studio.project, "page_size": 100})
                    )
                    nxt.append(n)
                    ann.append(a)
                print(
                    f"{kept:2d} kept: next task {statistics.median(nxt):.3f} s, Data Manager page (100 tasks) "
                    f"{statistics.median(page):.3f} s, annotation {statistics.median(ann):.3f} s; "
                    f"import of a version {imported:.2f} s",
                    flush=True,
                )
        size = sum(f.stat().st_size for f in folder.rglob("*.sqlite3*"))
        print(f"Label Studio's database: {size / 1e6:.1f} MB", flush=True)
    finally:
        stop(process)


if __name__ == "__main__":
    main()
