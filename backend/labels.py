"""What the label config asks of the model: which Choices to fill, for which Text, with which classes.

Read from the XML that Label Studio sends (`schema` in /setup, `label_config` in /predict), never
hard-coded: the same backend serves any single-choice text classification project.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from label_studio_sdk.label_interface import LabelInterface

from .errors import LabelConfigError


@dataclass(frozen=True)
class LabelConfig:
    from_name: str  # the <Choices name="...">
    to_name: str  # the <Text name="..."> it is bound to
    data_key: str  # the task data field the Text shows ($text -> "text")
    classes: tuple[str, ...]


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
        classes = tuple(control.labels)
        if len(classes) < 2:
            raise LabelConfigError(
                f"<Choices name={control.name!r}> has {len(classes)} choice(s); a classifier needs at least 2"
            )
        if len(set(classes)) != len(classes):
            raise LabelConfigError(f"<Choices name={control.name!r}> repeats a choice: {list(classes)}")
        text = texts[bound[0]]
        return LabelConfig(
            from_name=control.name, to_name=text.name, data_key=text.value_name, classes=classes
        )
    raise LabelConfigError(
        "the label config has no <Choices> bound to a <Text>; this backend classifies text, e.g. "
        '<Text name="text" value="$text"/> with <Choices name="label" toName="text" choice="single">'
    )
