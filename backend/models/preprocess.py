"""Tweet normalization before tokenizing, the way RoBERTuito (pysentimiento) prepares tweets.

Handles become `@usuario`, links `url`, emojis Spanish words, long laughs and letter runs are shortened.
The same function runs at training and at prediction time, so a model never sees two spellings.
"""

from __future__ import annotations

import functools
import re

import emoji

_HANDLE = re.compile(r"@\w+")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
# "jajajaja", "JAJAJ", "jejeje", "jijiji": kept as one short laugh.
_LAUGH = re.compile(r"\b(?:j+[aeiou]+){2,}j*\b", re.IGNORECASE)
# "nooooo" -> "nooo": runs of 4+ of one character carry no more meaning than 3.
_RUN = re.compile(r"(\w)\1{3,}")
_SPACES = re.compile(r"\s+")
# Every emoji holds © or ® or a character from U+2000 on (checked against the emoji package's table in the
# tests): most tweets hold none, and demojize is two thirds of the time normalizing takes.
_MAYBE_EMOJI = re.compile("[\u00a9\u00ae\u2000-\U0010ffff]")


def _laugh(match: re.Match) -> str:
    vowel = next(ch for ch in match.group(0).lower() if ch in "aeiou")
    return f"j{vowel}j{vowel}"


def _emoji_words(text: str) -> str:
    if not _MAYBE_EMOJI.search(text):
        return text.replace("_", " ")  # as below: the words of emojis come with underscores, and so may text
    words = emoji.demojize(text, language="es", delimiters=(" emoji ", " emoji "))
    return words.replace("_", " ")


# Pure, and the loop normalizes the same tweets at every retraining.
@functools.lru_cache(maxsize=200_000)
def normalize_tweet(text: str) -> str:
    text = _HANDLE.sub("@usuario", text)
    text = _URL.sub("url", text)
    text = _emoji_words(text)
    text = _LAUGH.sub(_laugh, text)
    text = _RUN.sub(r"\1\1\1", text)
    return _SPACES.sub(" ", text).strip()
