"""Starting the local stack's services: what a user reads when one of them does not start."""

import pytest

from backend.errors import LabelStudioUnavailable
from backend.stack.processes import free_port, start_label_studio


def test_a_label_studio_that_dies_at_start_says_what_to_do(tmp_path):
    # As Label Studio 1.23.2 did with sentry-sdk 3 in its virtualenv: a traceback, then exit status 1.
    binary = tmp_path / "label-studio"
    binary.write_text("#!/bin/sh\necho \"TypeError: Unknown option 'send_default_pii'\" >&2\nexit 1\n")
    binary.chmod(0o755)
    with pytest.raises(LabelStudioUnavailable) as raised:
        start_label_studio(str(binary), tmp_path, free_port(), username="a@b.c", password="p", token="t", timeout=30)
    message = str(raised.value)
    assert "Unknown option 'send_default_pii'" in message  # the end of its log
    assert message.splitlines()[-1].endswith("`make clean install`; else see the log above.")
