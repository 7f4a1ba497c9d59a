"""The image's hashed locks (requirements.lock, requirements-torch.lock) against pyproject.toml, without the network.

The Dockerfile installs the locks alone (`--no-deps --require-hashes`), so a dependency that pyproject.toml names
but the locks do not, or at a version its pin excludes, would be missing or different in the image while every
test here passes on .venv. `make lock` regenerates requirements.lock; the torch lock is written by hand.
"""

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers import ROOT

PYPROJECT, LOCK, TORCH_LOCK = ROOT / "pyproject.toml", ROOT / "requirements.lock", ROOT / "requirements-torch.lock"
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)[ \\]*$")
# pip-compile writes this under each of the project's own dependencies.
DIRECT = "tweet-al-backend (pyproject.toml)"


def locked(text: str) -> dict[str, dict]:
    """name -> {version, hashes, notes}: each `name==version` entry of a pip-compile file, with the lines under it."""
    entries: dict[str, dict] = {}
    current: dict = {}
    for line in text.splitlines():
        if match := ENTRY.match(line):
            current = {"version": Version(match[2]), "hashes": [], "notes": ""}
            entries[canonicalize_name(match[1])] = current
        elif current and line.startswith(" "):
            current["hashes"] += re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
            current["notes"] += line + "\n"
        elif line.strip() and not line.startswith("#"):
            raise ValueError(f"neither `name==version` nor under one: {line!r}")
    return entries


def problems(pyproject: str, lock_text: str, torch_text: str) -> list[str]:
    """Every way the locks disagree with pyproject.toml; empty when they agree."""
    project = tomllib.loads(pyproject)
    lock, torch = locked(lock_text), locked(torch_text)
    found = []
    dependencies = [Requirement(text) for text in project["project"]["dependencies"]]
    # The image builds the project with the locked setuptools: the build requirement must hold too.
    for requirement in [*dependencies, *(Requirement(text) for text in project["build-system"]["requires"])]:
        entry = {**lock, **torch}.get(canonicalize_name(requirement.name))
        if entry is None:
            found.append(f"{requirement} is in pyproject.toml, not in the locks")
        elif not requirement.specifier.contains(entry["version"], prereleases=True):
            found.append(f"pyproject.toml wants {requirement}, the locks have {entry['version']}")
    # A dependency dropped from pyproject.toml leaves the lock too (its dependencies may stay, as others' ones).
    named = {canonicalize_name(r.name) for r in dependencies} - {"torch"}
    found += [
        f"{name} is locked as a dependency pyproject.toml no longer names"
        for name in lock
        if DIRECT in lock[name]["notes"] and name not in named
    ]
    found += [f"{name} has no hash" for name, entry in {**lock, **torch}.items() if not entry["hashes"]]
    # torch from its CPU index alone: PyPI's CUDA build would have brought its nvidia-* and triton packages.
    if list(torch) != ["torch"] or torch["torch"]["version"].local != "cpu":
        found.append("requirements-torch.lock must hold torch's CPU build (+cpu) alone")
    found += [
        f"{name} is in requirements.lock (torch resolved from PyPI?)"
        for name in lock
        if name == "torch" or name.startswith(("nvidia-", "triton", "cuda-"))
    ]
    return found


def _read() -> tuple[str, str, str]:
    return PYPROJECT.read_text(), LOCK.read_text(), TORCH_LOCK.read_text()


def test_the_locks_agree_with_pyproject():
    assert problems(*_read()) == [], "run `make lock` (requirements-torch.lock: by hand, its header says how)"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # A dependency added to pyproject.toml but not locked.
        (lambda p, lock, t: (p.replace('"six==1.17.0",', '"six==1.17.0", "left-pad==1.0",'), lock, t), "left-pad"),
        # A pin the lock violates, either side.
        (lambda p, lock, t: (p.replace('"flask==3.1.3"', '"flask==3.1.4"'), lock, t), "wants flask==3.1.4"),
        (lambda p, lock, t: (p, lock.replace("flask==3.1.3 \\", "flask==3.0.0 \\"), t), "the locks have 3.0.0"),
        (lambda p, lock, t: (p.replace('"torch==2.13.0"', '"torch==2.14.0"'), lock, t), "wants torch==2.14.0"),
        (lambda p, lock, t: (p.replace('"setuptools>=68"', '"setuptools>=99"'), lock, t), "wants setuptools>=99"),
        # A dependency removed from pyproject.toml but still locked.
        (lambda p, lock, t: (p.replace('"emoji==2.16.0",', ""), lock, t), "emoji is locked as a dependency"),
        # An entry without its hashes, and torch's CUDA build.
        (lambda p, lock, t: (p, lock, "torch==2.13.0+cpu\n"), "torch has no hash"),
        (lambda p, lock, t: (p, lock + "nvidia-cublas==13.0 \\\n    --hash=sha256:" + "0" * 64 + "\n", t), "nvidia"),
    ],
)
def test_a_disagreement_fails(edit, expected):
    edited = edit(*_read())
    assert edited != _read(), "the edit must change something"
    assert any(expected in problem for problem in problems(*edited)), problems(*edited)
