import pytest

from backend.tables import read_csv


def test_a_csv_with_bytes_that_are_not_utf8_still_reads(tmp_path):
    path = tmp_path / "tweets.csv"
    path.write_bytes("id,text\n1,hola \xf0\x9f mundo\n2,ñandú\n".encode("latin-1"))
    rows = read_csv(path, ["text"])
    assert [r["id"] for r in rows] == ["1", "2"]
    assert "\ufffd" in rows[0]["text"] and rows[0]["text"].startswith("hola")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['label'\]"):
        read_csv(path, ["text", "label"])
