import pytest

from backend.errors import LabelConfigError
from backend.labels import parse_label_config
from tests.conftest import LABEL_CONFIG


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
        ('<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>',
         "at least 2"),
    ],
)
def test_unusable_configs_raise_a_4xx_error(xml, message):
    with pytest.raises(LabelConfigError, match=message) as info:
        parse_label_config(xml)
    assert 400 <= info.value.status < 500
