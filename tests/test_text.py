from backend.text import REPLACEMENT, valid_text


def test_lone_surrogates_become_replacement_characters_and_the_rest_stays():
    assert valid_text("hola \ud83d mundo \udc00") == f"hola {REPLACEMENT} mundo {REPLACEMENT}"
    assert valid_text("ñandú 😀 \u200b") == "ñandú 😀 \u200b"
    clean = "sin problemas"
    assert valid_text(clean) is clean
    valid_text("x\ud83d").encode("utf-8")  # encodes: nothing left to refuse it
