"""Every exception of the backend, grouped by whose fault it is. HTTP statuses live at the edge (api.py).

The caller's mistakes:
    BadRequest, LabelConfigError, UnknownProject
A state of the data (nothing is broken; more labels or another input fix it):
    NoTrainingData, NoTrainedModel
A dependency that is unavailable (retry later):
    LabelStudioUnavailable
"""


class BackendError(Exception):
    """Base of every error this backend raises on purpose; its message is meant for a user."""


class BadRequest(BackendError):
    """A malformed request: not JSON, a missing or mistyped field."""


class LabelConfigError(BadRequest):
    """A label config this backend cannot serve (no <Choices> bound to a <Text>, multiple choice, ...)."""


class UnknownProject(BadRequest):
    """A project id Label Studio does not know (or this backend's token cannot see)."""


class NoTrainingData(BackendError):
    """Too few labeled examples to train, or labels outside the project's classes."""


class NoTrainedModel(BackendError):
    """Scoring was asked for before any version was trained."""


class LabelStudioUnavailable(BackendError):
    """Label Studio did not answer after every retry."""
