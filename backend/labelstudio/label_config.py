"""What the label config asks of the model, and the one place that knows the shape of a Choices result.

A config is read from the XML that Label Studio sends (`schema` in /setup, `label_config` in /predict), never
hard-coded: the same backend serves any single-choice text classification project. `LabelConfig.region` builds
the result item that predictions and annotations carry; `LabelConfig.choice_in` reads one back; `text_of`
reads a task's text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from label_studio_sdk.label_interface import LabelInterface

from ..errors import LabelConfigError

log = logging.getLogger(__name__)

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
        """The task's text, or None (with the reason logged) when it cannot be classified."""
        data = task.get("data") if isinstance(task, dict) else None
        text = data.get(self.data_key) if isinstance(data, dict) else None
        task_id = task.get("id") if isinstance(task, dict) else None
        if not isinstance(text, str) or not text.strip():
            log.warning("task %s has no text in data[%r]: no prediction", task_id, self.data_key)
            return None
        if len(text) > max_chars:
            log.warning(
                "task %s: text of %d chars exceeds MAX_TEXT_CHARS=%d: no prediction", task_id, len(text), max_chars
            )
            return None
        return text


@lru_cache(maxsize=128)
def parse_label_config(xml: str) -> LabelConfig:
    """The first <Choices> bound to a <Text>; LabelConfigError (a 4xx) when there is none."""
    if not xml or not xml.strip():
        raise LabelConfigError("the label config is empty")
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
