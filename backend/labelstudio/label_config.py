"""What the label config asks of the model, and the one place that knows the shape of a Choices result.

A config is read from the XML that Label Studio sends (`schema` in /setup, `label_config` in /predict), never
hard-coded: the same backend serves any single-choice text classification project. `LabelConfig.region` builds
the result item that predictions and annotations carry; `LabelConfig.choice_in` reads one back; `text_of`
reads a task's text.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from label_studio_sdk.label_interface import LabelInterface

from ..errors import LabelConfigError
from ..text import valid_text

# Label Studio's largest configs (long taxonomies) are tens of kilobytes.
MAX_CONFIG_CHARS = 1_000_000
_PARSED: dict[bytes, LabelConfig] = {}
_PARSED_LOCK = threading.Lock()

# The tweet project's config (ok / xenófobo), shipped with the package; the repository's label_config.xml
# links here.
DEFAULT_LABEL_CONFIG = Path(__file__).with_name("label_config.xml")


def default_label_config() -> str:
    return DEFAULT_LABEL_CONFIG.read_text(encoding="utf-8")


@dataclass(frozen=True)
class LabelConfig:
    from_name: str  # the <Choices name="...">
    to_name: str  # the <Text name="..."> it is bound to
    data_key: str  # the task data field the Text shows ($text -> "text")
    classes: tuple[str, ...]

    def region(self, label: str) -> dict:
        """The result item choosing `label`, as predictions and annotations carry it."""
        return {"from_name": self.from_name, "to_name": self.to_name, "type": "choices", "value": {"choices": [label]}}

    def choice_in(self, result: Iterable[Any]) -> str | None:
        """The class chosen in a result list (an annotation's or a prediction's), or None."""
        for item in result if isinstance(result, list) else ():
            if not isinstance(item, dict) or item.get("from_name") != self.from_name or item.get("type") != "choices":
                continue
            value = item.get("value")
            choices = value.get("choices") if isinstance(value, dict) else None
            if isinstance(choices, list) and len(choices) == 1 and choices[0] in self.classes:
                return choices[0]
        return None

    def text_of(self, task: Any, max_chars: int) -> str | None:
        """The task's text as valid UTF-8, or None when it cannot be classified (no text, not a string, blank, or
        over `max_chars`). Says nothing: a batch logs one line for all its tasks without text."""
        data = task.get("data") if isinstance(task, dict) else None
        text = data.get(self.data_key) if isinstance(data, dict) else None
        if not isinstance(text, str) or not text.strip() or len(text) > max_chars:
            return None
        return valid_text(text)


def parse_label_config(xml: str) -> LabelConfig:
    """The first <Choices> bound to a <Text>; LabelConfigError (a 4xx) when there is none. Label Studio sends the
    config with every /predict: parsed configs are kept by a hash of the text (never the text itself), 128 at most."""
    if not isinstance(xml, str):
        raise LabelConfigError(f"the label config must be a string of XML, not {type(xml).__name__}")
    if len(xml) > MAX_CONFIG_CHARS:
        raise LabelConfigError(f"the label config has {len(xml)} characters; at most {MAX_CONFIG_CHARS} are read")
    key = hashlib.sha256(xml.encode("utf-8", "replace")).digest()
    found = _PARSED.get(key)
    if found is None:
        found = _parse(xml)
        with _PARSED_LOCK:
            while len(_PARSED) >= 128:
                del _PARSED[next(iter(_PARSED))]
            _PARSED[key] = found
    return found


def _parse(xml: str) -> LabelConfig:
    if not xml.strip():
        raise LabelConfigError("the label config is empty")
    if "<!DOCTYPE" in xml.upper() or "<!ENTITY" in xml.upper():
        # Entities expand (a billion laughs) or read files (external entities); Label Studio configs have none.
        raise LabelConfigError("the label config declares a DOCTYPE or entities; Label Studio configs have none")
    try:
        interface = LabelInterface(xml)
    except Exception as exc:  # the SDK raises several XML/validation types
        raise LabelConfigError(f"the label config is not valid XML: {exc}") from None

    texts = {obj.name: obj for obj in interface.objects if obj.tag == "Text"}
    for control in interface.controls:
        if control.tag != "Choices":
            continue
        bound = [name for name in control.to_name or [] if name in texts]
        if not bound:
            continue
        if str(control.attr.get("choice", "single")).lower() == "multiple":
            raise LabelConfigError(
                f'<Choices name={control.name!r}> has choice="multiple": this backend predicts one class per task; '
                'use choice="single" (multi-label is not supported yet)'
            )
        classes = tuple(control.labels)
        if len(classes) < 2:
            raise LabelConfigError(
                f"<Choices name={control.name!r}> has {len(classes)} choice(s); a classifier needs at least 2"
            )
        if len(set(classes)) != len(classes):
            raise LabelConfigError(f"<Choices name={control.name!r}> repeats a choice: {list(classes)}")
        text = texts[bound[0]]
        return LabelConfig(from_name=control.name, to_name=text.name, data_key=text.value_name, classes=classes)
    raise LabelConfigError(
        "the label config has no <Choices> bound to a <Text>; this backend classifies text, e.g. "
        '<Text name="text" value="$text"/> with <Choices name="label" toName="text" choice="single">'
    )
