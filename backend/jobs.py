"""Old home of the RQ jobs, kept so that jobs enqueued before the move (persisted in Redis under
`backend.jobs.*`) still run after an upgrade. New jobs are enqueued under `backend.retraining.jobs`."""

from .retraining.jobs import finish_rescoring, score_chunk, train_project

__all__ = ["finish_rescoring", "score_chunk", "train_project"]
