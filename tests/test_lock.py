"""The hashed locks against what they lock, without the network, and the virtualenvs against their locks.

The image and both virtualenvs install the locks alone (`--no-deps --require-hashes`), so a dependency that
pyproject.toml (or requirements-ls.in) names but the locks do not, or at a version its pin excludes, would be missing
or different there while every other test passes. `make lock` regenerates the locks; the torch lock is written by
hand. A package installed by hand, or a virtualenv built before a lock changed, is caught by comparing what is
installed with what is locked.
"""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers import ROOT

PYPROJECT, LOCK, TORCH_LOCK = ROOT / "pyproject.toml", ROOT / "requirements.lock", ROOT / "requirements-torch.lock"
DEV_LOCK, LS_IN, LS_LOCK = ROOT / "requirements-dev.lock", ROOT / "requirements-ls.in", ROOT / "requirements-ls.lock"
COMPOSE = ROOT / "docker-compose.yml"
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


def unmet(requirements: list[Requirement], entries: dict[str, dict], source: str, lock: str) -> list[str]:
    """Each requirement of `source` that the lock's entries lack or violate."""
    found = []
    for requirement in requirements:
        entry = entries.get(canonicalize_name(requirement.name))
        if entry is None:
            found.append(f"{requirement} is in {source}, not in {lock}")
        elif not requirement.specifier.contains(entry["version"], prereleases=True):
            found.append(f"{source} wants {requirement}, {lock} lock it at {entry['version']}")
    return found


def unhashed(entries: dict[str, dict]) -> list[str]:
    return [f"{name} has no hash" for name, entry in entries.items() if not entry["hashes"]]


def problems(pyproject: str, lock_text: str, torch_text: str) -> list[str]:
    """Every way the image's locks disagree with pyproject.toml; empty when they agree."""
    project = tomllib.loads(pyproject)
    lock, torch = locked(lock_text), locked(torch_text)
    dependencies = [Requirement(text) for text in project["project"]["dependencies"]]
    # The image builds the project with the locked setuptools: the build requirement must hold too.
    build = [Requirement(text) for text in project["build-system"]["requires"]]
    found = unmet([*dependencies, *build], {**lock, **torch}, "pyproject.toml", "the locks")
    # A dependency dropped from pyproject.toml leaves the lock too (its dependencies may stay, as others' ones).
    named = {canonicalize_name(r.name) for r in dependencies} - {"torch"}
    found += [
        f"{name} is locked as a dependency pyproject.toml no longer names"
        for name in lock
        if DIRECT in lock[name]["notes"] and name not in named
    ]
    found += unhashed({**lock, **torch})
    # torch from its CPU index alone: PyPI's CUDA build would have brought its nvidia-* and triton packages.
    if list(torch) != ["torch"] or torch["torch"]["version"].local != "cpu":
        found.append("requirements-torch.lock must hold torch's CPU build (+cpu) alone")
    found += [
        f"{name} is in requirements.lock (torch resolved from PyPI?)"
        for name in lock
        if name == "torch" or name.startswith(("nvidia-", "triton", "cuda-"))
    ]
    return found


def dev_problems(pyproject: str, lock_text: str, dev_text: str) -> list[str]:
    """.venv's lock against the image's and the test extras: the tests must run on the image's very versions."""
    lock, dev = locked(lock_text), locked(dev_text)
    found = [
        f"{name} is {dev[name]['version'] if name in dev else 'missing'} in requirements-dev.lock, "
        f"{entry['version']} in requirements.lock"
        for name, entry in lock.items()
        if name not in dev or dev[name]["version"] != entry["version"]
    ]
    extras = [Requirement(text) for text in tomllib.loads(pyproject)["project"]["optional-dependencies"]["test"]]
    found += unmet(extras, dev, "pyproject.toml's test extras", "requirements-dev.lock")
    return found + unhashed(dev)


def ls_problems(ls_in: str, ls_lock_text: str, compose: str) -> list[str]:
    """.venv-ls's lock against requirements-ls.in, and compose's Label Studio image against both."""
    lock = locked(ls_lock_text)
    lines = (line.split("#")[0].strip() for line in ls_in.splitlines())
    found = unmet([Requirement(line) for line in lines if line], lock, "requirements-ls.in", "requirements-ls.lock")
    image = yaml.safe_load(compose)["services"]["label-studio"]["image"]
    if "label-studio" in lock and image.rpartition(":")[2] != str(lock["label-studio"]["version"]):
        found.append(f"docker-compose.yml runs {image}, requirements-ls.lock has {lock['label-studio']['version']}")
    return found + unhashed(lock)


def _read() -> tuple[str, str, str]:
    return PYPROJECT.read_text(), LOCK.read_text(), TORCH_LOCK.read_text()


def test_the_locks_agree_with_pyproject():
    assert problems(*_read()) == [], "run `make lock` (requirements-torch.lock: by hand, its header says how)"
    assert dev_problems(PYPROJECT.read_text(), LOCK.read_text(), DEV_LOCK.read_text()) == [], "run `make lock`"


def test_label_studio_s_lock_agrees_with_its_pins_and_compose():
    assert ls_problems(LS_IN.read_text(), LS_LOCK.read_text(), COMPOSE.read_text()) == [], "run `make lock`"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # A dependency added to pyproject.toml but not locked.
        (lambda p, lock, t: (p.replace('"six==1.17.0",', '"six==1.17.0", "left-pad==1.0",'), lock, t), "left-pad"),
        # A pin the lock violates, either side.
        (lambda p, lock, t: (p.replace('"flask==3.1.3"', '"flask==3.1.4"'), lock, t), "wants flask==3.1.4"),
        (lambda p, lock, t: (p, lock.replace("flask==3.1.3 \\", "flask==3.0.0 \\"), t), "lock it at 3.0.0"),
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


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # The image's lock moved on and the dev lock did not, or the other way round.
        (lambda p, lock, dev: (p, lock.replace("flask==3.1.3 \\", "flask==3.1.4 \\"), dev), "flask is 3.1.3"),
        (lambda p, lock, dev: (p, lock, dev.replace("flask==3.1.3 \\", "flask==3.0.0 \\")), "flask is 3.0.0"),
        # A test extra pinned anew in pyproject.toml, or added, without `make lock`.
        (lambda p, lock, dev: (p.replace('"pytest==9.2.0"', '"pytest==9.3.0"'), lock, dev), "wants pytest==9.3.0"),
        (lambda p, lock, dev: (p.replace('test = ["', 'test = ["left-pad==1.0", "'), lock, dev), "left-pad"),
    ],
)
def test_a_dev_lock_disagreement_fails(edit, expected):
    original = PYPROJECT.read_text(), LOCK.read_text(), DEV_LOCK.read_text()
    edited = edit(*original)
    assert edited != original, "the edit must change something"
    assert any(expected in problem for problem in dev_problems(*edited)), dev_problems(*edited)


# An entry's hash lines, to cut them.
HASHES = r"(?m)^({}==\S+) \\\n(?:\s+--hash=\S+(?: \\)?\n)+"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # Label Studio's version changed in one place only.
        (lambda i, lock, c: (i.replace("label-studio==1.23.2", "label-studio==1.24.0"), lock, c), "wants label-studio"),
        (lambda i, lock, c: (i, lock, c.replace("label-studio:1.23.2", "label-studio:1.24.0")), "runs heartexlabs"),
        # The bound that keeps Label Studio starting, lost from the lock.
        (lambda i, lock, c: (i, re.sub(r"sentry-sdk==\S+", "sentry-sdk==3.0.1", lock), c), "wants sentry-sdk<3"),
        (lambda i, lock, c: (i, re.sub(HASHES.format("django"), r"\1\n", lock), c), "django has no hash"),
    ],
)
def test_a_label_studio_lock_disagreement_fails(edit, expected):
    original = LS_IN.read_text(), LS_LOCK.read_text(), COMPOSE.read_text()
    edited = edit(*original)
    assert edited != original, "the edit must change something"
    assert any(expected in problem for problem in ls_problems(*edited)), ls_problems(*edited)


# What a virtualenv holds, as (name, version) pairs; pip is the installer every virtualenv is born with, not locked.
DISTRIBUTIONS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions() if d.metadata['Name'] != 'pip'}))"
)


def drift(installed: dict[str, str], lock: dict[str, dict]) -> list[str]:
    """How a virtualenv's distributions differ from its lock; empty when it holds exactly the locked versions."""
    have = {canonicalize_name(name): Version(version) for name, version in installed.items()}
    return [
        *(f"{name} {version} is installed, not locked" for name, version in have.items() if name not in lock),
        *(
            f"{name} is installed at {have[name]}, locked at {entry['version']}"
            for name, entry in lock.items()
            if name in have and have[name] != entry["version"]
        ),
        *(f"{name} {entry['version']} is locked, not installed" for name, entry in lock.items() if name not in have),
    ]


def _installed(python: Path) -> dict[str, str]:
    return json.loads(subprocess.run([python, "-c", DISTRIBUTIONS], capture_output=True, text=True, check=True).stdout)


def test_the_backend_s_virtualenv_holds_exactly_its_locks():
    venv = Path(sys.prefix)
    if not venv.is_relative_to(ROOT):
        pytest.skip(f"pytest runs in {venv}, not in a virtualenv of the checkout that `make install` built")
    installed = _installed(venv / "bin" / "python")
    installed.pop("tweet-al-backend")  # the checkout itself, installed editable
    lock = {**locked(DEV_LOCK.read_text()), **locked(TORCH_LOCK.read_text())}
    assert drift(installed, lock) == [], f"{venv} is not what the locks name: `make clean install`"


@pytest.mark.e2e  # .venv-ls is installed for `make test`, after `make check`
def test_label_studio_s_virtualenv_holds_exactly_its_lock(label_studio_binary):
    venv = Path(label_studio_binary).parent.parent
    found = drift(_installed(venv / "bin" / "python"), locked(LS_LOCK.read_text()))
    assert found == [], f"{venv} is not what requirements-ls.lock names: `make clean install`"


def test_drift_names_each_difference():
    lock = locked("".join(f"{entry} \\\n    --hash=sha256:{'0' * 64}\n" for entry in ("flask==3.1.3", "rq==3.0.0")))
    assert drift({"Flask": "3.1.3", "rq": "3.0.0"}, lock) == []
    assert drift({"flask": "3.1.4", "rq": "3.0.0", "left-pad": "1.0"}, lock) == [
        "left-pad 1.0 is installed, not locked",
        "flask is installed at 3.1.4, locked at 3.1.3",
    ]
    assert drift({"flask": "3.1.3"}, lock) == ["rq 3.0.0 is locked, not installed"]
