"""A project's tasks as the worker holds them, so that a round reads from Label Studio only what changed and scores
every unlabeled tweet with one sparse product.

MODEL_DIR/.pools/<project>/ holds every task of the project the worker has seen, annotated or not: its id, its
text and its TF-IDF row under the pool's n-gram vocabulary, in segments written once (merged as they pile up) that a
manifest names. `PoolStore.sync` brings it up to date:
- the tasks created since: those whose id is past the newest it holds (Label Studio numbers tasks in order), at
  most SYNC_BATCH a sync (a large import is read by several jobs in turn, each writing its window);
- when the project's task count (one request) then differs from the pool's, the project's ids, listed once: tasks
  deleted in Label Studio leave the pool, tasks it missed (an import committed out of order) are read.
A task whose text is edited in Label Studio keeps its old text here; deleting the folder rebuilds the pool.
Which tasks are unlabeled is not kept: a round reads the annotated ones (as many as the labels), the rest are.

The vocabulary is fitted on the pool's texts (a sample of at most VOCABULARY_MAX_TEXTS) and fitted again, every
row with it, once the pool has doubled since: the linear kind trains under it (train_version's `unlabeled`), so its
versions score the cached rows without reading a text.

Writers hold the folder's lock (fcntl); readers read the manifest, replaced atomically, and segment files, which never
change once written (one no longer named is deleted after GRACE_SECONDS, past any reader).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from .. import calibration
from ..labelstudio.client import LabelStudioClient
from ..labelstudio.label_config import LabelConfig
from ..models.linear import LinearConfig, fit_vocabulary, load_vocabulary, save_vocabulary
from ..models.preprocess import normalize_tweet
from ..settings import Settings
from ..stopping import text_key

log = logging.getLogger(__name__)

POOLS = ".pools"
MANIFEST = "manifest.json"
FORMAT = 1
# The vocabulary is fitted on at most this many texts (a fixed sample): char n-grams of tweets saturate long before,
# and the pool's rows are all transformed again at each fit.
VOCABULARY_MAX_TEXTS = 20_000
GRACE_SECONDS = 600
# New tasks read per sync: a job reads and transforms this many in seconds (Label Studio lists about 2,000 tasks a
# second); a larger import is read by jobs in turn (`more`), each of which writes its window.
SYNC_BATCH = 20_000


@dataclass
class Segment:
    folder: Path
    ids: np.ndarray  # int64, ascending
    keys: np.ndarray  # uint64: stopping.text_key of each text (the version snapshots match tasks by it)
    rows: Any  # csr_matrix, float32: the TF-IDF rows under the pool's vocabulary

    @classmethod
    def load(cls, folder: Path) -> Segment:
        def array(name: str) -> np.ndarray:
            return np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)

        ids, indptr = array("ids"), array("indptr")
        rows = sparse.csr_matrix(
            (array("data"), array("indices"), indptr), shape=(len(ids), int(json.loads((folder / "shape").read_text())))
        )
        return cls(folder, np.asarray(ids), np.asarray(array("keys")), rows)

    @classmethod
    def write(cls, parent: Path, ids: np.ndarray, texts: list[str], keys: np.ndarray, rows: Any) -> Segment:
        """A new segment folder, written whole under a temporary name and renamed."""
        name = f"s-{uuid.uuid4().hex[:12]}"
        staging = parent / f".tmp-{name}"
        staging.mkdir(parents=True)
        rows = sparse.csr_matrix(rows, dtype=np.float32)
        rows.sort_indices()
        for key, value in {
            "ids": np.asarray(ids, np.int64),
            "keys": np.asarray(keys, np.uint64),
            "data": rows.data,
            "indices": rows.indices.astype(np.int32),
            "indptr": rows.indptr.astype(np.int64),
        }.items():
            np.save(staging / f"{key}.npy", value, allow_pickle=False)
        (staging / "shape").write_text(str(rows.shape[1]))
        (staging / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        os.replace(staging, parent / name)
        return cls.load(parent / name)

    def texts(self) -> list[str]:
        return json.loads((self.folder / "texts.json").read_text(encoding="utf-8"))


@dataclass
class Pool:
    """What a pool holds at one moment, or a part of it (`without`, `after`): `ids`, `keys`, `texts()` and `dot`
    rows in one order."""

    segments: list[Segment] = field(default_factory=list)
    keep: list[np.ndarray] = field(default_factory=list)  # per segment, which of its rows are in this view
    vocabulary: TfidfVectorizer | None = None  # `id_`: its id, which versions fitted under it record
    through: int = 0  # the newest task id the pool has read
    textless: frozenset[int] = frozenset()  # tasks without a text in the config's field: never scored
    fitted_on: int = 0  # how many texts the vocabulary was fitted on

    @property
    def ids(self) -> np.ndarray:
        return np.concatenate([s.ids[k] for s, k in zip(self.segments, self.keep, strict=True)] or [np.zeros(0, int)])

    @property
    def keys(self) -> np.ndarray:
        parts = [s.keys[k] for s, k in zip(self.segments, self.keep, strict=True)]
        return np.concatenate(parts or [np.zeros(0, np.uint64)])

    def __len__(self) -> int:
        return int(sum(k.sum() for k in self.keep))

    def texts(self) -> list[str]:
        """The texts, in the order of `ids` (read from disk: tens of MB for 200,000 tweets)."""
        out: list[str] = []
        for segment, keep in zip(self.segments, self.keep, strict=True):
            texts = segment.texts()
            out += [texts[i] for i in np.flatnonzero(keep)]
        return out

    def _select(self, rule) -> Pool:
        return replace(self, keep=[k & rule(s) for s, k in zip(self.segments, self.keep, strict=True)])

    def without(self, ids: Collection[int]) -> Pool:
        """This view less the tasks `ids` (a round's annotated tasks: what is left is the unlabeled pool)."""
        taken = np.fromiter(ids, dtype=np.int64, count=len(ids))
        return self._select(lambda s: ~np.isin(s.ids, taken))

    def after(self, task_id: int) -> Pool:
        return self._select(lambda s: s.ids > task_id)

    def dot(self, weights: np.ndarray) -> np.ndarray:
        """rows @ weights, for the rows in this view (in the order of `ids`)."""
        parts = [(s.rows @ weights)[k] for s, k in zip(self.segments, self.keep, strict=True) if k.any()]
        return np.concatenate(parts) if parts else np.zeros((0, weights.shape[1]), dtype=weights.dtype)

    def probabilities(self, classifier: Any) -> np.ndarray:
        """The classifier's probabilities (columns in the order of its labels), one row per task of the view: a sparse
        product when it was fitted under this pool's vocabulary, else its own reading of the texts."""
        same = self.vocabulary is not None and getattr(classifier, "vocabulary_id", None) == self.vocabulary.id_
        if not same or not hasattr(classifier, "logits_of"):
            return classifier.predict_proba(self.texts())
        if not len(self):
            return np.zeros((0, len(classifier.labels)), dtype=np.float32)
        return calibration.softmax(classifier.logits_of(self.dot), classifier.temperature).astype(np.float32)


@dataclass
class SyncReport:
    added: int = 0
    removed: int = 0
    reconciled: bool = False
    refitted: bool = False
    more: bool = False  # the batch was full: more new tasks wait to be read
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {**self.__dict__, "seconds": round(self.seconds, 2)}


class PoolStore:
    """One project's pool folder: `read` what it holds, `sync` it with Label Studio."""

    def __init__(self, model_dir: Path, project: int, config: LinearConfig, *, max_chars: int):
        self.folder = Path(model_dir) / POOLS / str(int(project))
        self.project, self.config, self.max_chars = int(project), config, max_chars

    @classmethod
    def of(cls, settings: Settings, project: int) -> PoolStore:
        return cls(settings.model_dir, project, LinearConfig.from_settings(settings), max_chars=settings.max_text_chars)

    def _manifest(self) -> dict | None:
        try:
            manifest = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("project %s: pool manifest unreadable (%s): the pool is read again", self.project, exc)
            return None
        if manifest.get("format") != FORMAT or manifest.get("config") != self._config_key():
            return None  # another recipe: rebuilt
        return manifest

    def _config_key(self) -> list:
        c = self.config
        return [c.normalize, list(c.ngram_range), c.lsa_components, VOCABULARY_MAX_TEXTS, self.max_chars]

    def read(self) -> Pool:
        """What the pool holds now (empty if it was never synced): no request to Label Studio."""
        for _ in range(3):  # a writer may replace the manifest between reading it and opening its files
            manifest = self._manifest()
            if manifest is None:
                return Pool()
            try:
                return self._open(manifest)
            except FileNotFoundError:
                time.sleep(0.1)
        return self._open(self._manifest() or {"segments": []})

    def _open(self, manifest: dict) -> Pool:
        names = manifest.get("segments", [])
        segments = [Segment.load(self.folder / name) for name in names]
        keep = [np.ones(len(s.ids), bool) for s in segments]
        for name, mask in zip(names, keep, strict=True):
            mask[manifest.get("removed", {}).get(name, [])] = False
        vocabulary = None
        if manifest.get("vocabulary"):
            vocabulary = load_vocabulary(self.folder / f"{manifest['vocabulary']}.npz", self.config)
            if vocabulary is None:
                raise FileNotFoundError(manifest["vocabulary"])
            vocabulary.id_ = manifest["vocabulary"]
        return Pool(
            segments=segments,
            keep=keep,
            vocabulary=vocabulary,
            through=int(manifest.get("through", 0)),
            textless=frozenset(manifest.get("textless", [])),
            fitted_on=int(manifest.get("fitted_on", 0)),
        )

    def current(self, client: LabelStudioClient, config: LabelConfig) -> Pool:
        """What the pool holds, as the worker left it; synced here only when the worker never made it."""
        pool = self.read()
        return pool if len(pool) or pool.textless else self.sync(client, config, batch=None)[0]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def sync(
        self,
        client: LabelStudioClient,
        config: LabelConfig,
        *,
        batch: int | None = SYNC_BATCH,
        deleted: Collection[int] = (),
    ) -> tuple[Pool, SyncReport]:
        """The pool brought up to date with the project in Label Studio (see the module's docstring), by at most
        `batch` new tasks (None: all); `more` in the report when others wait. `deleted`: tasks Label Studio said it
        deleted (TASKS_DELETED), dropped first; the task count checks the rest."""
        started, report = time.time(), SyncReport()
        with self._locked():
            pool = self.read()
            gone = (set(pool.ids.tolist()) | pool.textless) & set(deleted)
            pool = self._remove(pool, gone)
            report.removed = len(gone)
            new = client.tasks(self.project, config, after=pool.through, limit=batch)
            report.more = batch is not None and len(new) >= batch
            held = len(pool) + len(pool.textless)
            # While new tasks wait, the count cannot agree: it is compared once they are read.
            if not report.more and held + len(new) != client.task_count(self.project):
                # Tasks deleted (or some missed): the ids settle it, once; the rest of a round never lists them all.
                report.reconciled = True
                ids = set(client.task_ids(self.project))
                known = set(pool.ids.tolist()) | pool.textless | {i for i, _ in new}
                report.removed += len(known - ids)
                new = [t for t in new if t[0] in ids]  # created and deleted between the two reads
                missed = ids - known
                if missed:
                    since = client.tasks(self.project, config, after=min(missed) - 1, limit=None)
                    new += [t for t in since if t[0] in missed]
                pool = self._remove(pool, known - ids)
            report.added = len(new)
            pool, report.refitted = self._add(pool, new)
        report.seconds = time.time() - started
        if report.added or report.removed or report.refitted:
            log.info("project %s: pool synced: %s tasks held; %s", self.project, len(pool), report.as_dict())
        return pool, report

    def _remove(self, pool: Pool, gone: set[int]) -> Pool:
        if not gone:
            return pool
        pool = replace(pool, textless=pool.textless - gone).without(gone)
        self._commit(pool)
        return pool

    def _add(self, pool: Pool, new: list[tuple[int, str | None]]) -> tuple[Pool, bool]:
        textless = {i for i, text in new if text is None or len(text) > self.max_chars}
        rows = sorted((i, t) for i, t in new if i not in textless and t is not None)
        pool = replace(pool, textless=pool.textless | textless, through=max([pool.through, *(i for i, _ in new)]))
        total = len(pool) + len(rows)
        grown = total >= 2 * pool.fitted_on and pool.fitted_on < VOCABULARY_MAX_TEXTS
        if rows and (pool.vocabulary is None or grown):
            pool = self._refit(pool, rows)
            return pool, True
        if rows:
            ids = np.array([i for i, _ in rows], dtype=np.int64)
            texts = [t for _, t in rows]
            segment = Segment.write(self.folder, ids, texts, _keys(texts), self._transform(pool.vocabulary, texts))
            pool = replace(pool, segments=[*pool.segments, segment], keep=[*pool.keep, np.ones(len(ids), bool)])
            pool = self._merge(pool)
        if new:
            self._commit(pool)
        return pool, False

    def _transform(self, vocabulary: TfidfVectorizer | None, texts: list[str]) -> Any:
        assert vocabulary is not None
        prepare = normalize_tweet if self.config.normalize else str
        return vocabulary.transform([prepare(t) for t in texts])

    def _refit(self, pool: Pool, rows: list[tuple[int, str]]) -> Pool:
        """A vocabulary fitted on (a sample of) every text, and one segment with every row under it."""
        ids = np.concatenate([pool.ids, np.array([i for i, _ in rows], dtype=np.int64)])
        texts = pool.texts() + [t for _, t in rows]
        order = np.argsort(ids, kind="stable")
        ids, texts = ids[order], [texts[i] for i in order]
        sample: np.ndarray = np.arange(len(texts))
        if len(texts) > VOCABULARY_MAX_TEXTS:
            sample = np.sort(np.random.default_rng(0).choice(len(texts), VOCABULARY_MAX_TEXTS, replace=False))
        prepare = normalize_tweet if self.config.normalize else str
        vocabulary, _ = fit_vocabulary([prepare(texts[i]) for i in sample], self.config)
        digest = hashlib.sha1("\x00".join(texts[i] for i in sample).encode("utf-8", "replace"))
        vocabulary.id_ = f"vocabulary-{digest.hexdigest()[:16]}"
        save_vocabulary(self.folder / f"{vocabulary.id_}.npz", vocabulary)
        segment = Segment.write(self.folder, ids, texts, _keys(texts), self._transform(vocabulary, texts))
        pool = replace(
            pool, segments=[segment], keep=[np.ones(len(ids), bool)], vocabulary=vocabulary, fitted_on=len(sample)
        )
        self._commit(pool)
        return pool

    def _merge(self, pool: Pool) -> Pool:
        """Merge the newest segments while the last is at least half the size of the one before: a pool fed one
        task at a time keeps a few segments (one per power of two), and each row is rewritten a few times only."""
        while len(pool.segments) >= 2 and 2 * pool.keep[-1].sum() >= pool.keep[-2].sum():
            last = replace(pool, segments=pool.segments[-2:], keep=pool.keep[-2:])
            texts = last.texts()
            rows = sparse.vstack([s.rows[k] for s, k in zip(last.segments, last.keep, strict=True)], format="csr")
            merged = Segment.write(self.folder, last.ids, texts, last.keys, rows)
            pool = replace(
                pool,
                segments=[*pool.segments[:-2], merged],
                keep=[*pool.keep[:-2], np.ones(len(merged.ids), bool)],
            )
        return pool

    def _commit(self, pool: Pool) -> None:
        """The manifest naming `pool`'s files, replaced atomically; files no manifest names are deleted later."""
        manifest = {
            "format": FORMAT,
            "config": self._config_key(),
            "vocabulary": pool.vocabulary.id_ if pool.vocabulary is not None else None,
            "segments": [s.folder.name for s in pool.segments],
            # Rows of deleted tasks, by segment, until a merge drops them.
            "removed": {
                s.folder.name: np.flatnonzero(~k).tolist()
                for s, k in zip(pool.segments, pool.keep, strict=True)
                if not k.all()
            },
            "textless": sorted(int(i) for i in pool.textless),
            "through": int(pool.through),
            "fitted_on": pool.fitted_on,
            "tasks": len(pool),
            "updated_at": time.time(),
        }
        named = {*pool_names(manifest), MANIFEST, "lock"}
        before = self._manifest() or {}
        for name in pool_names(before) - named:
            with contextlib.suppress(OSError):
                os.utime(self.folder / name)  # its grace starts now: a reader may have opened the old manifest
        staging = self.folder / f".tmp-{MANIFEST}"
        staging.write_text(json.dumps(manifest), encoding="utf-8")
        os.replace(staging, self.folder / MANIFEST)
        for path in self.folder.iterdir():
            if path.name not in named and time.time() - path.stat().st_mtime > GRACE_SECONDS:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def pool_names(manifest: dict) -> set[str]:
    """The files and folders a manifest names."""
    return {*manifest.get("segments", []), f"{manifest.get('vocabulary')}.npz"}


def _keys(texts: list[str]) -> np.ndarray:
    return np.array([text_key(t) for t in texts], dtype=np.uint64)
