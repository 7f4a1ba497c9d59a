"""Fixtures of the browser checks: the system's Chromium, and a folder for screenshots."""

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import ROOT


@pytest.fixture(scope="module")
def chromium() -> str:
    path = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        reason = "no Chromium here (apt-get install chromium)"
        if os.environ.get("REQUIRE_E2E"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture()
def artifacts() -> Path:
    folder = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
