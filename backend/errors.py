"""The caller's mistakes, each with the HTTP status the API answers it with."""


class BackendError(Exception):
    status = 500


class BadRequest(BackendError):
    status = 400


class LabelConfigError(BadRequest):
    status = 422


class NoTrainingData(BackendError):
    """Too few labeled examples to train (a state of the data, not a bug)."""

    status = 409
