import pytest
from pydantic import ValidationError

from backend.settings import Settings


def test_secrets_never_print():
    settings = Settings(
        label_studio_api_key="tok-123", basic_auth_user="u", basic_auth_pass="pw-456", webhook_secret="s-789"
    )
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert not any(secret in shown for secret in ("tok-123", "pw-456", "s-789"))
    assert (settings.api_key, settings.basic_auth, settings.secret) == ("tok-123", ("u", "pw-456"), "s-789")


def test_a_user_without_a_password_refuses_to_start(monkeypatch):
    with pytest.raises(ValidationError, match="BASIC_AUTH_PASS is empty"):
        Settings(basic_auth_user="admin", basic_auth_pass="")
    monkeypatch.setenv("BASIC_AUTH_USER", "admin")
    with pytest.raises(ValidationError, match="set both, or neither"):
        Settings()
    assert Settings(basic_auth_user="", basic_auth_pass="").basic_auth is None


def test_a_password_without_a_user_refuses_to_start_rather_than_leave_auth_off():
    with pytest.raises(ValidationError, match="BASIC_AUTH_USER is empty"):
        Settings(basic_auth_user="", basic_auth_pass="s3cret")


def test_the_command_line_names_the_invalid_setting(monkeypatch, capsys):
    from backend.cli import main

    monkeypatch.setenv("BASIC_AUTH_USER", "admin")
    monkeypatch.delenv("BASIC_AUTH_PASS", raising=False)
    with pytest.raises(SystemExit) as stop:
        main(["versions"])
    assert "invalid settings" in str(stop.value) and "BASIC_AUTH_PASS is empty" in str(stop.value)
