import pytest

from backend.errors import LabelConfigError
from backend.labelstudio.label_config import parse_label_config
from tests.helpers import LABEL_CONFIG


def test_project_config():
    config = parse_label_config(LABEL_CONFIG)
    assert (config.from_name, config.to_name, config.data_key) == ("label", "text", "text")
    assert config.classes == ("ok", "xenófobo")


def test_other_names_and_three_classes():
    xml = """<View><Header value="x"/><Image name="img" value="$image"/>
      <Choices name="mood" toName="img"><Choice value="a"/><Choice value="b"/></Choices>
      <Text name="tweet" value="$content"/>
      <Choices name="topic" toName="tweet"><Choice value="pos"/><Choice value="neg"/><Choice value="neu"/></Choices>
    </View>"""
    config = parse_label_config(xml)
    assert (config.from_name, config.to_name, config.data_key) == ("topic", "tweet", "content")
    assert config.classes == ("pos", "neg", "neu")


@pytest.mark.parametrize(
    "xml, message",
    [
        ("", "empty"),
        ("<View><Text", "not valid XML"),
        ('<View><Text name="t" value="$t"/></View>', "no <Choices> bound to a <Text>"),
        (
            '<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>',
            "at least 2",
        ),
    ],
)
def test_unusable_configs_are_refused_with_the_reason(xml, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(xml)


def test_multiple_choice_is_refused_naming_the_attribute():
    xml = LABEL_CONFIG.replace('choice="single"', 'choice="multiple"')
    assert xml != LABEL_CONFIG
    with pytest.raises(LabelConfigError, match='choice="multiple"'):
        parse_label_config(xml)


def test_the_region_built_is_the_region_read():
    config = parse_label_config(LABEL_CONFIG)
    region = config.region("xenófobo")
    assert region == {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["xenófobo"]}}
    assert config.choice_in([region]) == "xenófobo"
    assert config.choice_in([config.region("spam")]) is None  # not a class of the project
    assert config.choice_in([{**region, "from_name": "other"}]) is None
    assert config.choice_in([{**region, "value": {"choices": ["ok", "xenófobo"]}}]) is None
    assert config.choice_in("not a list") is None and config.choice_in([None, 5]) is None


def test_task_text_is_read_from_the_configs_data_key():
    config = parse_label_config(LABEL_CONFIG)
    assert config.text_of({"id": 1, "data": {"text": "hola"}}, max_chars=10) == "hola"
    for task in [{"data": {"text": "  "}}, {"data": {"other": "hola"}}, {"data": {"text": 5}}, "task", None]:
        assert config.text_of(task, max_chars=10) is None
    assert config.text_of({"data": {"text": "x" * 11}}, max_chars=10) is None
