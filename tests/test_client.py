"""The Label Studio client's reading of annotations, and its refusal to start without a token."""

import pytest

from backend.errors import BackendError
from backend.labelstudio.client import LabelStudioClient, latest_choice
from tests.helpers import CONFIG


def _annotation(label, **extra):
    return {"result": [CONFIG.region(label)], **extra}


def test_latest_choice_takes_the_newest_annotation_that_was_not_skipped():
    annotations = [
        _annotation("ok", id=1, updated_at="2026-01-01T10:00:00Z"),
        _annotation("xenófobo", id=2, updated_at="2026-01-02T10:00:00Z"),
        {"id": 3, "updated_at": "2026-01-03T10:00:00Z", "was_cancelled": True, "result": []},
    ]
    assert latest_choice(annotations, CONFIG) == "xenófobo"
    assert latest_choice([], CONFIG) is None
    assert latest_choice([_annotation("unknown class", id=1)], CONFIG) is None
    other_control = {"id": 1, "result": [{"from_name": "sentiment", "type": "choices", "value": {"choices": ["ok"]}}]}
    assert latest_choice([other_control], CONFIG) is None


def test_jobs_need_an_api_key():
    with pytest.raises(BackendError, match="LABEL_STUDIO_API_KEY"):
        LabelStudioClient("http://localhost:8080", "")
