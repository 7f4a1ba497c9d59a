from backend.models.preprocess import normalize_tweet


def test_handles_urls_emojis_laughs_and_runs():
    text = "@juan_perez mira https://t.co/abc123 jajajajaja 😂 nooooooo"
    assert normalize_tweet(text) == "@usuario mira url jaja emoji cara llorando de risa emoji nooo"


def test_laugh_variants_and_whitespace():
    assert normalize_tweet("JAJAJAJ que\n\n wea") == "jaja que wea"
    assert normalize_tweet("jejeje ok") == "jeje ok"
    assert normalize_tweet("www.ejemplo.cl") == "url"


def test_plain_text_is_unchanged():
    assert normalize_tweet("Hoy llueve en Santiago") == "Hoy llueve en Santiago"
