import pytest

from backend.tables import class_of, labeled_rows, read_csv


def test_a_csv_with_bytes_that_are_not_utf8_still_reads(tmp_path):
    path = tmp_path / "tweets.csv"
    path.write_bytes("id,text\n1,hola \xf0\x9f mundo\n2,ñandú\n".encode("latin-1"))
    rows = read_csv(path, ["text"])
    assert [r["id"] for r in rows] == ["1", "2"]
    assert "\ufffd" in rows[0]["text"] and rows[0]["text"].startswith("hola")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['label'\]"):
        read_csv(path, ["text", "label"])


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\nhola,ok\n".encode("utf-8-sig"))
    assert read_csv(path, ["text", "label"]) == [{"text": "hola", "label": "ok"}]


def test_labels_are_read_as_their_class_whatever_the_spelling():
    classes = ("ok", "xenófobo")
    assert class_of("Xenófobo ", classes) == "xenófobo"
    assert class_of("xeno\u0301fobo", classes) == "xenófobo"  # a combining accent (NFD), as macOS writes it
    assert class_of("OK", classes) == "ok"
    assert class_of("xenofobo", classes) is None  # another word: never guessed
    rows = [{"text": "a", "label": " OK"}, {"text": "b", "label": ""}, {"text": "c", "label": "XENÓFOBO"}]
    assert labeled_rows(rows, classes) == (["a", "c"], ["ok", "xenófobo"])
    assert labeled_rows([{"text": "a", "label": "xeno\u0301fobo "}]) == (["a"], ["xenófobo"])


def test_a_label_that_is_no_class_is_named_not_dropped():
    rows = [{"text": "a", "label": "ok"}, *({"text": "b", "label": "racista"} for _ in range(3))]
    with pytest.raises(ValueError, match=r"'racista' \(3\)"):
        labeled_rows(rows, ("ok", "xenófobo"))


def test_a_lenient_reading_leaves_such_rows_out_with_a_warning(caplog):
    rows = [{"text": "a", "label": "ok"}, {"text": "b", "label": "racista"}]
    assert labeled_rows(rows, ("ok", "xenófobo"), strict=False) == (["a"], ["ok"])
    assert "'racista' (1)" in caplog.text and "left out: 1 row(s)" in caplog.text


def test_a_quote_left_open_is_refused_with_where_it_starts(tmp_path):
    """It swallowed the rest of the file into one field: `predict` wrote 1 row of 41 without a word."""
    path = tmp_path / "tweets.csv"
    path.write_text('id,text\n1,hola\n2,"se abre y no se cierra\n3,adiós\n4,chau\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"tweets.csv: the row starting on line 3 .*unexpected end of data"):
        read_csv(path, ["text"])
    # A quoted field over several lines is a field, not a mistake.
    path.write_text('id,text\n1,"dos\nlíneas"\n2,hola\n', encoding="utf-8")
    assert [r["text"] for r in read_csv(path, ["text"])] == ["dos\nlíneas", "hola"]


def test_a_field_over_the_csv_limit_is_a_value_error_not_a_csv_error(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("text,label\nhola,ok\n" + "x" * 5_000_000 + ",ok\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"row starting on line 3 .*field larger than field limit"):
        read_csv(path, ["text", "label"])
