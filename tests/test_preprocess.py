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


def test_every_emoji_takes_the_slow_path():
    # The fast path skips demojize for text without these characters: an emoji outside them would stay unnamed.
    import emoji

    from backend.models import preprocess

    missed = [e for e in emoji.EMOJI_DATA if not preprocess._MAYBE_EMOJI.search(e)]
    assert missed == []


def test_fast_path_normalizes_as_demojize_does():
    import emoji

    from backend.models.preprocess import _emoji_words

    for text in ["sin emojis, con acentos: ñandú", "guion_bajo y © y ®", "comillas “así”…", "🇨🇱 chile", "a_b 😂"]:
        slow = emoji.demojize(text, language="es", delimiters=(" emoji ", " emoji ")).replace("_", " ")
        assert _emoji_words(text) == slow
