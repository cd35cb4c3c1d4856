"""Captions: X's weighted 280, SoundCloud's title and description limits, never mid-word, the licence note."""

from __future__ import annotations

import pytest

from publisher.captions import (
    ELLIPSIS,
    LICENCE_NOTE,
    SOUNDCLOUD_DESCRIPTION_MAX,
    SOUNDCLOUD_TITLE_MAX,
    X_MAX_WEIGHT,
    CaptionInfo,
    hashtag,
    lyrics_excerpt,
    normalise_for_match,
    render_template,
    shorten_words,
    soundcloud_tag_list,
    soundcloud_text,
    x_caption,
    x_weighted_length,
)

LYRICS = "[Verse 1]\nI walked along the harbour road\nthe rain came down like silver\n\n[Chorus]\noh la la"


def info(**kw: object) -> CaptionInfo:
    base: dict[str, object] = {
        "clip_id": 7,
        "title": "Harbour Rain",
        "artist": "frank_sinatra",
        "genre": "jazz",
        "lyrics": LYRICS,
        "requester": "alice",
        "model": "demo",
        "channel_tag": "#jukebot",
    }
    base.update(kw)
    return CaptionInfo(**base)  # type: ignore[arg-type]


def test_weighted_length_follows_twitter_text() -> None:
    assert x_weighted_length("hello") == 5
    assert x_weighted_length("日本語") == 6  # CJK weighs 2
    assert x_weighted_length("🎵") == 2
    assert x_weighted_length("é — ’") == 5  # Latin-1, general punctuation weigh 1
    assert x_weighted_length("see https://example.com/" + "a" * 80) == 4 + 23  # any URL is 23
    assert x_weighted_length("see soundcloud.com/x") == 4 + 23  # a bare domain may be linked
    assert x_weighted_length("a reallyreallyreallylongname.com") == 2 + 30  # never under-counted


def test_x_caption_has_everything_when_it_fits() -> None:
    text = x_caption(info())
    assert "Harbour Rain" in text and "in the style of Frank Sinatra, jazz" in text
    assert "I walked along the harbour road / the rain came down like silver" in text
    assert "[Verse" not in text and "requested by alice" in text
    assert "#jukebot" in text and "#Jazz" in text
    assert LICENCE_NOTE not in text  # the demo model is ours
    assert x_weighted_length(text) <= X_MAX_WEIGHT


def test_openai_weights_carry_the_licence_note() -> None:
    text = x_caption(info(model="5b_lyrics"))
    assert LICENCE_NOTE in text
    assert LICENCE_NOTE in soundcloud_text(info(model="1b_lyrics")).description


@pytest.mark.parametrize("title", ["word " * 80, "日本語の歌 " * 40, "Supercalifragilistic " * 20])
def test_long_fields_are_shortened_at_words_with_an_ellipsis(title: str) -> None:
    text = x_caption(info(title=title, lyrics="la " * 200, model="5b"))
    assert x_weighted_length(text) <= X_MAX_WEIGHT
    assert ELLIPSIS in text
    # Every word in the caption is a whole word of the inputs (nothing cut mid-word).
    words = set(title.split()) | {"la"}
    first_line = text.splitlines()[0].removeprefix("🎵 ").rstrip(ELLIPSIS)
    assert all(w.rstrip(ELLIPSIS) in words for w in first_line.split())
    # The fixed parts survive.
    assert LICENCE_NOTE in text and "#jukebot" in text and "requested by alice" in text


def test_lyrics_are_cut_before_the_title() -> None:
    text = x_caption(info(title="A Fairly Long Title For A Song", lyrics="word " * 60))
    assert "A Fairly Long Title For A Song" in text
    assert x_weighted_length(text) <= X_MAX_WEIGHT


def test_a_song_without_lyrics_has_no_empty_quote_line() -> None:
    text = x_caption(info(lyrics=""))
    assert "“”" not in text and "\n\n" not in text


def test_shorten_words() -> None:
    assert shorten_words("one two three", 20) == "one two three"
    assert shorten_words("one two three", 9) == "one two…"
    assert shorten_words("one, two, three", 10) == "one, two…"
    assert shorten_words("unbreakable", 5) == ""


def test_template_lines_with_empty_fields_are_dropped() -> None:
    fields = {"a": "x", "b": "", "c": "z"}
    assert render_template("{a}\n“{b}”\n{c} — {b}", fields) == "x\nz"


def test_soundcloud_limits_and_tags() -> None:
    long = info(
        title="Harbour " * 40, lyrics="line of words\n" * 600, artist="the_rolling_stones", genre="hip_hop"
    )
    text = soundcloud_text(long)
    assert len(text.title) <= SOUNDCLOUD_TITLE_MAX and text.title.endswith(ELLIPSIS)
    assert len(text.description) <= SOUNDCLOUD_DESCRIPTION_MAX
    assert "\n" not in text.title
    assert text.tag_list.split(" ")[0] == "jukebot"
    assert '"The Rolling Stones"' in text.tag_list and '"hip hop"' in text.tag_list
    assert soundcloud_tag_list(info(channel_tag="")).startswith("Jazz")


def test_custom_templates() -> None:
    text = x_caption(info(), {"x": "{title} by {requester} {hashtags}"})
    assert text == "Harbour Rain by alice #jukebot #Jazz #AIMusic"
    assert soundcloud_text(info(), {"soundcloud_title": "{title} ({genre})"}).title == "Harbour Rain (jazz)"


def test_helpers() -> None:
    assert hashtag("hip_hop") == "#HipHop" and hashtag("R&B") == "#RB" and hashtag("1999") == ""
    assert lyrics_excerpt("(intro)\n\nfirst line\nsecond\nthird") == "first line / second"
    assert normalise_for_match("Caf&amp;e  ok https://t.co/abc") == "Caf&e ok"
