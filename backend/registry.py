"""Trained model versions on disk, one folder per scope (a Label Studio project id, or "default").

    MODEL_DIR/<scope>/versions/<version>/   weights, tokenizer, metadata.json
    MODEL_DIR/<scope>/CURRENT               the name of the version being served
    MODEL_DIR/<scope>/history.jsonl         the metadata of every version ever promoted, one line each: the
                                            learning curve outlives pruning
    MODEL_DIR/<scope>/fences.json           per tier, the fencing token of the newest run that promoted
    MODEL_DIR/INSTANCE                      this backend's instance id, the prefix of its version names

A version is written under a hidden staging folder, renamed into `versions/` complete, and only then named
in CURRENT (replaced atomically). A crash at any point leaves the previous version serving and no
half-written version visible.

Version names carry the instance id ("3f9a1c-project12-v7"): they become Label Studio's model_version, where
two backends connected to one project (or a backend reinstalled with an empty MODEL_DIR) would otherwise both
write "project12-v7", and the cleanup of one would delete the other's predictions. The id is made once per
MODEL_DIR, which the server and every worker share.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

log = logging.getLogger(__name__)


DEFAULT_SCOPE = "default"
METADATA = "metadata.json"
HISTORY = "history.jsonl"
INSTANCE = "INSTANCE"
FENCES = "fences.json"
# Version names: "3f9a1c-default-v3", "3f9a1c-project12-v7" (before instance ids: "project12-v7"). Label Studio
# stores them as predictions' model_version; only names with this backend's instance id are deleted from a project.
VERSION_NAME = re.compile(r"^(?:([0-9a-f]{6})-)?(default|project[A-Za-z0-9_]+)-v(\d+)$")
STALE_STAGING_SECONDS = 3600
PROJECT_ID = re.compile(r"[0-9]{1,18}")  # Label Studio's ids are positive integers; no Unicode digits
# The kind of versions stored before their metadata named one.
LEGACY_KIND = "transformer"
# What a version recorded of the unlabeled tasks when it was trained (stopping.Snapshot.figures).
PROGRESS_FIGURES = ("unlabeled", "uncertain", "uncertain_share", "kappa_previous")


def scope_of(project: str | int | None) -> str:
    """Label Studio sends projects as "<id>.<created_at>"; the id (ASCII digits, 18 at most) names the scope.
    None or "" is the default scope. Anything else is a ValueError: a scope becomes a folder name."""
    if project is None or str(project).strip() in ("", DEFAULT_SCOPE):
        return DEFAULT_SCOPE
    if isinstance(project, bool) or not isinstance(project, str | int):
        raise ValueError(f"a project id is a number, not {type(project).__name__}")
    scope = str(project)[:100].split(".", 1)[0].strip()
    if not PROJECT_ID.fullmatch(scope):
        raise ValueError(f"invalid project id {str(project)[:40]!r}: Label Studio project ids are numbers")
    return scope


def kind_of(metadata: dict) -> str:
    """The model kind that stored a version; versions from before kinds existed are transformers."""
    return metadata.get("kind", LEGACY_KIND)


class Saves(Protocol):
    def save(self, folder: Path) -> None: ...


class Storable(Saves, Protocol):
    """What the registry needs of a fitted classifier (models.base.TextClassifier has it)."""

    kind: str


@dataclass(frozen=True)
class Version:
    scope: str
    name: str
    path: Path

    def read_metadata(self) -> dict:
        """Its metadata.json ({} where there is none); ValueError where that is no JSON object (a hand edit, a
        damaged disk): loading the version needs it whole."""
        try:
            meta = json.loads((self.path / METADATA).read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ValueError(f"{self.path / METADATA} is not valid JSON: {exc}") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{self.path / METADATA} holds a {type(meta).__name__}, not a JSON object")
        return meta

    @property
    def metadata(self) -> dict:
        """What listings and metrics show of it: {} where metadata.json is missing, invalid or unreadable, so
        that one damaged file costs that version's figures, never a whole listing or Prometheus scrape."""
        try:
            return self.read_metadata()
        except (OSError, ValueError) as exc:
            log.warning("version %s: its metadata is not shown: %s", self.name, exc)
            return {}

    @property
    def kind(self) -> str:
        return kind_of(self.metadata)

    def summary(self) -> dict:
        """What `versions` and /versions show: kind, labels, the figure it was chosen by, the decision."""
        meta = self.metadata
        metric = meta.get("selection_metric", "f1_macro")
        metrics = meta.get("metrics") or {}
        score = metrics.get("f1_macro") if metric == "f1_macro" else (metrics.get("f1") or {}).get(metric[3:])
        return {
            "version": self.name,
            "kind": kind_of(meta),
            "labels": meta.get("labels_used"),
            "metric": metric,
            "score": score,
            "temperature": meta.get("temperature", 1.0),
            "candidates": [
                {k: c.get(k) for k in ("kind", "version", "score", "evaluated_on", "skipped") if k in c}
                for c in meta.get("candidates", [])
            ],
            "decision": meta.get("decision"),
            "created_at": meta.get("created_at"),
            **{key: meta.get(key) for key in PROGRESS_FIGURES},
        }


class Superseded(Exception):
    """A run's fencing token is older than that of a run that already promoted: its version is not promoted."""


class Registry:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._instance: str | None = None

    @property
    def instance(self) -> str:
        """This MODEL_DIR's instance id (6 hex digits), made by the first process that needs it."""
        if self._instance is None:
            path = self.root / INSTANCE
            try:
                found = path.read_text().strip()
            except FileNotFoundError:
                self.root.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".instance-", dir=self.root)
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(3) + "\n")
                try:
                    os.link(tmp, path)  # fails if another process made it first: theirs is the id
                except FileExistsError:
                    pass
                finally:
                    os.unlink(tmp)
                found = path.read_text().strip()
            # Checked before it is kept: it starts every version name, which becomes a folder name.
            if not re.fullmatch(r"[0-9a-f]{6}", found):
                raise ValueError(f"{path} holds {found[:20]!r}, not an instance id (6 hex digits)")
            self._instance = found
        return self._instance

    def ours(self, name: str) -> bool:
        """Whether a model_version was named by this instance."""
        match = VERSION_NAME.match(name)
        return bool(match) and match.group(1) == self.instance  # type: ignore[union-attr]

    def name_for(self, scope: str, number: int) -> str:
        return f"{self.instance}-{DEFAULT_SCOPE if scope == DEFAULT_SCOPE else 'project' + scope}-v{number}"

    def _scope_dir(self, scope: str) -> Path:
        return self.root / scope

    def current_name(self, scope: str) -> str | None:
        """What CURRENT names (None: no CURRENT), whether or not that version exists."""
        try:
            return (self._scope_dir(scope) / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

    def current(self, scope: str) -> Version | None:
        name = self.current_name(scope)
        if name is None or not VERSION_NAME.match(name):
            return None
        return self._version(scope, self._scope_dir(scope) / "versions" / name)

    def resolve(self, project: str | int | None) -> Version | None:
        """The version serving a project: its own, else the default one, else None (nothing trained)."""
        scope = scope_of(project)
        return self.current(scope) or (self.current(DEFAULT_SCOPE) if scope != DEFAULT_SCOPE else None)

    def versions(self, scope: str) -> list[Version]:
        folder = self._scope_dir(scope) / "versions"
        if not folder.is_dir():
            return []
        # Hidden folders are versions being written or deleted.
        found = [self._version(scope, p) for p in folder.iterdir() if not p.name.startswith(".")]
        return sorted((v for v in found if v is not None), key=lambda v: _number(v.name))

    def _version(self, scope: str, path: Path) -> Version | None:
        """The version stored at `path`, if it is a folder inside MODEL_DIR: is_dir() follows links, and a link out
        of MODEL_DIR (the version's or its scope's) would be loaded and served as if it had been trained here."""
        inside = path.resolve().is_relative_to(self.root.resolve())
        return Version(scope, path.name, path) if inside and path.is_dir() else None

    @property
    def vocabularies(self) -> Path:
        """Where the linear kind keeps fitted n-gram vocabularies between processes (not a scope: no versions/)."""
        return self.root / ".vocabularies"

    def scopes(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "versions").is_dir()) if self.root.is_dir() else []

    def _next_name(self, scope: str) -> str:
        # Numbers go on from versions of any instance id (a MODEL_DIR from before ids, or copied from elsewhere).
        numbers = [_number(v.name) for v in self.versions(scope)]
        return self.name_for(scope, max(numbers, default=0) + 1)

    def fence(self, scope: str, tier: str) -> int:
        """A fencing token for a training run of `tier`, taken when it starts: larger than every token given
        before in the scope. promote(fence=...) refuses a token older than one that already promoted, so a run
        that lost its Redis lease (Redis flushed or failed over) and overlapped a newer run of the same tier
        never promotes over it. The tokens live beside the versions, not in Redis, to outlive a flush."""
        with self._locked(scope):
            fences = self._fences(scope)
            issued = fences.setdefault(tier, {"issued": 0, "promoted": 0})
            issued["issued"] += 1
            _write_atomic(self._scope_dir(scope) / FENCES, json.dumps(fences))
            return issued["issued"]

    def _fences(self, scope: str) -> dict:
        try:
            fences = json.loads((self._scope_dir(scope) / FENCES).read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return fences if isinstance(fences, dict) else {}

    @contextmanager
    def _locked(self, scope: str) -> Iterator[None]:
        """The scope's lock, across processes (the server's and every worker's, on one MODEL_DIR)."""
        base = self._scope_dir(scope)
        base.mkdir(parents=True, exist_ok=True)
        with (base / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def history(self, scope: str) -> list[dict]:
        """The metadata of every version promoted in the scope, oldest first, pruned ones included."""
        try:
            lines = (self._scope_dir(scope) / HISTORY).read_bytes().splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)  # decoded line by line: a torn line costs itself only
            except ValueError:  # a line cut short by a crash mid-append, inside a character too ("ó")
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def store(
        self,
        scope: str,
        classifier: Storable,
        metadata: dict,
        extras: tuple[Saves, ...] = (),
        fence: tuple[str, int] | None = None,
    ) -> Version:
        """Save a fitted classifier of any kind (and `extras`, files beside it) as the scope's next version and
        make it CURRENT. `fence`: (tier, token) of the run, see fence(); raises Superseded."""
        with self.stage(scope) as staged:
            classifier.save(staged)
            for extra in extras:
                extra.save(staged)
            meta = {
                "kind": classifier.kind,
                **metadata,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            version = self.promote(scope, staged, meta, fence=fence)
        log.info("promoted %s (%s)", version.name, version.path)
        return version

    @contextmanager
    def stage(self, scope: str) -> Iterator[Path]:
        """A private folder to write a version into; removed if the block fails."""
        base = self._scope_dir(scope)
        base.mkdir(parents=True, exist_ok=True)
        # What a killed process left half-written (staging lives seconds: saving, not training).
        for stale in base.glob(".staging-*"):
            if time.time() - stale.stat().st_mtime > STALE_STAGING_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def promote(self, scope: str, staged: Path, metadata: dict, fence: tuple[str, int] | None = None) -> Version:
        """Move a complete staged folder into `versions/` under the next name and make it CURRENT (unless
        `fence`, the run's (tier, token), is older than the token of a run that promoted: Superseded)."""
        with self._locked(scope):
            if fence is not None:
                tier, token = fence
                fences = self._fences(scope)
                entry = fences.setdefault(tier, {"issued": token, "promoted": 0})
                if token < entry.get("promoted", 0):
                    raise Superseded(
                        f"a newer {tier} run (token {entry['promoted']}) promoted while this one (token {token}) "
                        "trained: its lease was lost"
                    )
            version = self._promote(scope, staged, {**metadata, **({"fence": list(fence)} if fence else {})})
            if fence is not None:
                entry["promoted"] = token
                _write_atomic(self._scope_dir(scope) / FENCES, json.dumps(fences))
            return version

    def _promote(self, scope: str, staged: Path, metadata: dict) -> Version:
        versions = self._scope_dir(scope) / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        while True:
            name = self._next_name(scope)
            meta = {**metadata, "version": name, "scope": scope, "promoted_at": time.time()}
            _write_atomic(staged / METADATA, json.dumps(meta, indent=2, ensure_ascii=False))
            try:
                os.rename(staged, versions / name)  # fails if a concurrent run took the name: try the next one
                break
            except OSError:
                if not (versions / name).exists():
                    raise
        self.set_current(scope, name)
        # One line per append (O_APPEND), under the scope's lock. A line a crash cut short has no newline: the next
        # entry starts on a line of its own, or it would be lost with the torn one.
        with (self._scope_dir(scope) / HISTORY).open("a+b") as handle:
            start = b"\n" if _ends_mid_line(handle) else b""
            handle.write(start + json.dumps(meta, ensure_ascii=False).encode() + b"\n")
        return Version(scope, name, versions / name)

    def prune(self, scope: str, keep: int) -> list[str]:
        """Delete all but the newest `keep` versions, never the one serving; returns the deleted names."""
        current = self.current(scope)
        old = [v for v in self.versions(scope)[:-keep] if current is None or v.name != current.name]
        for version in old:
            # Renamed away first, so no reader ever sees a half-deleted version.
            doomed = version.path.with_name(f".deleting-{version.name}")
            os.rename(version.path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        return [v.name for v in old]

    def set_current(self, scope: str, name: str) -> None:
        # Only a name the registry lists: never a path ("../x", "/tmp") that happens to be a folder.
        if name not in {v.name for v in self.versions(scope)} or not VERSION_NAME.match(name):
            raise FileNotFoundError(f"no version {name!r} in scope {scope!r}; `versions` lists them")
        _write_atomic(self._scope_dir(scope) / "CURRENT", name + "\n")


def _number(name: str) -> int:
    match = VERSION_NAME.match(name)
    return int(match.group(3)) if match else 0


def _ends_mid_line(handle: BinaryIO) -> bool:
    """Whether a file (opened "a+b") ends without a newline: a crash cut its last line short."""
    if handle.seek(0, os.SEEK_END) == 0:
        return False
    handle.seek(-1, os.SEEK_END)
    return handle.read(1) != b"\n"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk: no half-written file left beside it
        os.unlink(tmp)
        raise
