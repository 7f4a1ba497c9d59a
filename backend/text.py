"""Text at the boundary: every string from outside (a request, Label Studio, a CSV) is made valid UTF-8 once.

Scraped tweets carry lone surrogates (half of a broken emoji, "\\ud83d" in JSON). Python holds them, but a
tokenizer, an encoder or a JSON writer down the line refuses them; one such tweet must cost its own prediction
at most, never a batch, a chunk or a training. Each lone surrogate becomes U+FFFD, the replacement character.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def valid_text(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD; the same object when there is none (the usual case)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(REPLACEMENT if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text
