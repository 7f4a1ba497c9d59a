"""The worker's copy of a project's tasks (backend/retraining/pool.py): it reads only what changed, repairs drift,
and scores a linear version from its cached rows exactly as the version scores the texts."""

import json

import numpy as np
import pytest

from backend.labelstudio.label_config import default_label_config, parse_label_config
from backend.models.linear import LinearClassifier, LinearConfig
from backend.models.training import train_version
from backend.registry import Registry
from backend.retraining import pool as pool_module
from backend.retraining.pool import PoolStore
from backend.settings import Settings
from backend.stopping import Snapshot, text_key

CONFIG = parse_label_config(default_label_config())
WORDS = ["migrantes", "fuera", "frontera", "trabajo", "vecinos", "fiesta"]
WORDS += ["comida", "playa", "sol", "lluvia", "pueblo", "ciudad"]


def tweet(i: int) -> str:
    rng = np.random.default_rng(i)
    return " ".join(rng.choice(WORDS, 6)) + f" #{i}"


class Project:
    """A Label Studio project as the pool sees it: tasks numbered in order; the calls it answered."""

    def __init__(self, n: int):
        self.texts: dict[int, str | None] = {i: tweet(i) for i in range(1, n + 1)}
        self.calls: list[tuple] = []

    def add(self, n: int) -> None:
        start = max(self.texts, default=0) + 1
        self.texts.update({i: tweet(i) for i in range(start, start + n)})

    def tasks(self, project, config, *, after=0, limit=None):
        self.calls.append(("tasks", after))
        return [(i, t) for i, t in sorted(self.texts.items()) if i > after][:limit]

    def task_ids(self, project):
        self.calls.append(("task_ids",))
        return sorted(self.texts)

    def task_count(self, project):
        return len(self.texts)


def store(tmp_path, **kw) -> PoolStore:
    return PoolStore(tmp_path, 1, LinearConfig(lsa_components=0), max_chars=kw.get("max_chars", 1000))


def test_a_pool_reads_every_task_once_then_only_the_new_ones(tmp_path):
    project = Project(30)
    pool, report = store(tmp_path).sync(project, CONFIG)
    assert pool.ids.tolist() == list(range(1, 31)) and pool.texts() == [tweet(i) for i in range(1, 31)]
    assert pool.keys.tolist() == [text_key(tweet(i)) for i in range(1, 31)]
    assert report.added == 30 and report.refitted and not report.reconciled
    project.calls.clear()
    pool, report = store(tmp_path).sync(project, CONFIG)
    assert project.calls == [("tasks", 30)] and report.added == 0 and len(pool) == 30
    project.add(5)
    pool, report = store(tmp_path).sync(project, CONFIG)
    assert report.added == 5 and not report.refitted and pool.ids.tolist() == list(range(1, 36))
    # Another process reads the same pool without asking Label Studio.
    assert store(tmp_path).read().ids.tolist() == list(range(1, 36))


def test_rows_are_the_vocabulary_s_transform_of_each_text_however_the_segments_were_merged(tmp_path):
    project = Project(40)
    for _ in range(25):  # one task at a time, as tasks created in the UI arrive
        store(tmp_path).sync(project, CONFIG)
        project.add(1)
    pool, _ = store(tmp_path).sync(project, CONFIG)
    assert len(pool.segments) <= 6
    weights = np.random.default_rng(0).random((len(pool.vocabulary.vocabulary_), 2)).astype(np.float32)
    expected = pool.vocabulary.transform(pool.texts()) @ weights
    np.testing.assert_allclose(pool.dot(weights), expected, rtol=1e-5)


def test_deleted_and_missed_tasks_are_repaired_by_one_listing_of_ids(tmp_path):
    project = Project(20)
    project.texts[21] = None  # a task without a text: held as such, never scored
    store(tmp_path).sync(project, CONFIG)
    del project.texts[3], project.texts[21]
    project.calls.clear()
    pool, report = store(tmp_path).sync(project, CONFIG)
    assert report.reconciled and report.removed == 2
    assert ("task_ids",) in project.calls and 3 not in pool.ids.tolist() and 21 not in pool.textless
    # A task committed after newer ones (an id below the pool's newest): found by the count, read.
    project.texts[3] = "tarde"
    pool, report = store(tmp_path).sync(project, CONFIG)
    assert report.reconciled and report.added == 1 and sorted(pool.ids.tolist()) == list(range(1, 21))
    project.calls.clear()
    store(tmp_path).sync(project, CONFIG)
    assert ("task_ids",) not in project.calls  # in step again: no listing


def test_the_vocabulary_is_fitted_again_when_the_pool_doubles(tmp_path):
    project = Project(20)
    first, _ = store(tmp_path).sync(project, CONFIG)
    project.add(15)
    grown, report = store(tmp_path).sync(project, CONFIG)
    assert not report.refitted and grown.vocabulary.id_ == first.vocabulary.id_
    project.add(10)
    doubled, report = store(tmp_path).sync(project, CONFIG)
    assert report.refitted and doubled.vocabulary.id_ != first.vocabulary.id_
    assert len(doubled.segments) == 1 and len(doubled) == 45
    # The replaced files stay for readers that opened the old manifest, then go.
    old = [p for p in tmp_path.joinpath(".pools", "1").iterdir() if p.name.startswith(("s-", "vocabulary-"))]
    assert len(old) > 2
    pool_module.GRACE_SECONDS, saved = -1, pool_module.GRACE_SECONDS
    try:
        project.add(1)
        store(tmp_path).sync(project, CONFIG)
    finally:
        pool_module.GRACE_SECONDS = saved
    kept = json.loads(tmp_path.joinpath(".pools", "1", "manifest.json").read_text())
    left = {p.name for p in tmp_path.joinpath(".pools", "1").iterdir()} - {"manifest.json", "lock"}
    assert left == {*kept["segments"], f"{kept['vocabulary']}.npz"}


def test_an_unreadable_manifest_or_another_recipe_rebuilds_the_pool(tmp_path):
    project = Project(10)
    store(tmp_path).sync(project, CONFIG)
    tmp_path.joinpath(".pools", "1", "manifest.json").write_text("{torn")
    assert len(store(tmp_path).read()) == 0
    pool, report = store(tmp_path).sync(project, CONFIG)
    assert report.added == 10 and len(pool) == 10
    other = PoolStore(tmp_path, 1, LinearConfig(lsa_components=0, normalize=False), max_chars=1000)
    assert len(other.read()) == 0


def test_a_linear_version_trained_on_the_pool_scores_its_rows_as_it_scores_the_texts(tmp_path):
    project = Project(60)
    pool, _ = store(tmp_path).sync(project, CONFIG)
    labeled = pool.ids[:20]
    texts = [tweet(int(i)) for i in labeled]
    labels = ["xenófobo" if "migrantes" in t or "frontera" in t else "ok" for t in texts]
    unlabeled = pool.without(set(labeled.tolist()))
    assert unlabeled.ids.tolist() == list(range(21, 61)) and unlabeled.after(50).ids.tolist() == list(range(51, 61))
    settings = Settings(model_dir=tmp_path / "models", linear_lsa_components=0)
    outcome = train_version(
        texts,
        labels,
        list(CONFIG.classes),
        kinds=["linear"],
        settings=settings,
        registry=Registry(settings.model_dir),
        scope="1",
        unlabeled=unlabeled,
    )
    version = outcome.version
    classifier = LinearClassifier.load(version.path, version=version.name, temperature=0.7)
    assert classifier.vocabulary_id == pool.vocabulary.id_
    from_rows = unlabeled.probabilities(classifier)
    np.testing.assert_allclose(from_rows, classifier.predict_proba(unlabeled.texts()), atol=1e-5)
    snapshot = Snapshot.load(version.path)
    assert snapshot.keys.tolist() == [text_key(t) for t in unlabeled.texts()]
    assert version.metadata["unlabeled"] == 40


@pytest.mark.parametrize("max_chars", [10])
def test_texts_longer_than_max_text_chars_are_held_without_rows(tmp_path, max_chars):
    project = Project(5)
    project.texts[6] = "corto"
    pool, report = store(tmp_path, max_chars=max_chars).sync(project, CONFIG)
    assert pool.ids.tolist() == [6] and pool.textless == frozenset(range(1, 6)) and not report.reconciled


def test_a_large_import_is_read_in_batches_without_a_reconciliation_in_between(tmp_path):
    project = Project(50)
    first, report = store(tmp_path).sync(project, CONFIG, batch=20)
    assert report.more and len(first) == 20 and first.through == 20 and ("task_ids",) not in project.calls
    second, report = store(tmp_path).sync(project, CONFIG, batch=20)
    assert report.more and second.after(first.through).ids.tolist() == list(range(21, 41))
    last, report = store(tmp_path).sync(project, CONFIG, batch=20)
    assert not report.more and not report.reconciled and len(last) == 50 and ("task_ids",) not in project.calls


def test_a_task_deleted_between_reading_the_new_ones_and_the_ids_is_not_added(tmp_path):
    class Racing(Project):
        def task_count(self, project):
            self.texts.pop(max(self.texts), None)  # deleted right after the new tasks were read
            return len(self.texts)

    project = Racing(10)
    pool, report = store(tmp_path).sync(project, CONFIG)
    assert report.reconciled and pool.ids.tolist() == list(range(1, 10)) and 10 not in pool.textless


def test_tasks_label_studio_said_it_deleted_are_dropped_without_listing_the_ids(tmp_path):
    project = Project(10)
    store(tmp_path).sync(project, CONFIG)
    del project.texts[4], project.texts[7]
    project.calls.clear()
    pool, report = store(tmp_path).sync(project, CONFIG, deleted=[4, 7, 99])
    assert report.removed == 2 and not report.reconciled and ("task_ids",) not in project.calls
    assert 4 not in pool.ids.tolist() and len(store(tmp_path).read()) == 8
    # An id deleted by a forged event: the count finds the pool short, and the listing reads it again.
    pool, report = store(tmp_path).sync(project, CONFIG, deleted=[5])
    assert report.reconciled and 5 in pool.ids.tolist() and len(pool) == 8
