"""Labels without torch: the id lists and vocabularies are the original's, names normalise like
the original, y vectors and lyric windows equal the original `Labeller`'s, and bad input gets
words a musician understands (closest names, what was cleaned out of the lyrics)."""

from __future__ import annotations

import contextlib
import io
import random
import subprocess
import sys
from pathlib import Path

import pytest

from engine.model.config import PRESETS, CustomLabels, tiny_config
from engine.model.labels import (
    IDS_DIR,
    VOCAB_V2,
    VOCAB_V3,
    Labeller,
    LabelsError,
    LyricsError,
    UnknownLabel,
    clean_lyrics,
    custom_labels,
    get_relevant_lyric_tokens,
    labels_for_model,
    released_labels,
    suggest,
)

REF_IDS = Path(str(__import__("jukebox_infer").__file__)).parent / "data" / "ids"
LYRICS = ("Naïve café — “quoted” words\\ and a tab\there [chorus] +1!\n" * 20) + "the end 😀"


def _quiet() -> contextlib.AbstractContextManager[object]:
    return contextlib.redirect_stdout(io.StringIO())


def test_id_lists_are_the_originals() -> None:
    for name in ("v2_artist_ids.txt", "v2_genre_ids.txt", "v3_artist_ids.txt", "v3_genre_ids.txt"):
        assert (IDS_DIR / name).read_bytes() == (REF_IDS / name).read_bytes(), name
    v2, v3 = released_labels("v2"), released_labels("v3")
    assert max(v2.artist_ids.values()) == 4108 and len(set(v2.artist_ids.values())) == 4109
    assert max(v2.genre_ids.values()) == 119 and max(v3.genre_ids.values()) == 603
    assert max(v3.artist_ids.values()) == 7897
    assert (PRESETS["5b"].top.y_bins, PRESETS["1b_lyrics"].top.y_bins) == ((120, 4111), (604, 7898))


def test_vocabularies_are_the_originals() -> None:
    from jukebox_infer.data.text_processor import TextProcessor

    for v3, vocab, n in ((False, VOCAB_V2, 80), (True, VOCAB_V3, 79)):
        ref = TextProcessor(v3)
        assert ref.n_vocab == n == len(vocab) + 1
        labels = released_labels("v3" if v3 else "v2")
        assert labels.n_vocab == n
        assert {c: i + 1 for i, c in enumerate(vocab)} == {k: v for k, v in ref.vocab.items() if k != "<unk>"}
        cleaned, _ = clean_lyrics(LYRICS, "v3" if v3 else "v2")
        assert cleaned == ref.clean(LYRICS)
        assert labels.tokenise(cleaned) == ref.tokenise(cleaned)
        assert labels.textise(labels.tokenise(cleaned)) == cleaned
    assert "+" in VOCAB_V2 and "+" not in VOCAB_V3


def test_lyric_cleaning_says_what_changed() -> None:
    cleaned, notes = clean_lyrics(LYRICS, "v3")
    assert "Naive cafe" in cleaned and "\n and a tab\there" in cleaned and "+" not in cleaned
    text = "\n".join(notes)
    assert "wrote these characters in plain letters: é ï — “ ”" in text
    assert "turned backslashes into line breaks" in text
    assert "removed characters the model cannot sing:" in text and "+" in text and "😀" in text
    assert clean_lyrics("just words\nand lines", "v3") == ("just words\nand lines", [])


def test_names_resolve_like_the_original() -> None:
    from jukebox_infer.data.artist_genre_processor import ArtistGenreProcessor

    cases = [
        ("The Beatles", "Hip Hop"),
        ("frank sinatra", "Jazz"),
        ("Ludwig van Beethoven", "classical"),
        ("Nobody We Know", "rock"),
        ("AC/DC", "hard rock"),
        ("unknown", "pop"),
    ]
    for v3 in (False, True):
        with _quiet():
            ref = ArtistGenreProcessor(v3)
        labels = released_labels("v3" if v3 else "v2")
        for artist, genre in cases:
            with _quiet():
                want_a, want_g = ref.get_artist_id(artist), ref.get_genre_ids(genre)
            assert labels.artist_id(artist, strict=False) == want_a, (v3, artist)
            assert labels.genre_word_ids(genre, strict=False) == want_g, (v3, genre)


def test_unknown_names_get_suggestions() -> None:
    v3 = released_labels("v3")
    with pytest.raises(UnknownLabel) as err:
        v3.artist_id("Beatels")
    assert err.value.kind == "artist" and "the beatles" in err.value.suggestions
    assert str(err.value).startswith("Unknown artist 'Beatels'. Did you mean: ")
    with pytest.raises(UnknownLabel) as err:
        v3.genre_word_ids("clasical")
    assert err.value.suggestions[0] == "classical"
    with pytest.raises(UnknownLabel) as err:  # v2: the unknown word of a bag of genre words
        released_labels("v2").genre_word_ids("hip hopp")
    assert err.value.name == "hopp" and "hop" in err.value.suggestions
    assert suggest("Bethoven", v3.artists, n=3)[0] == "ludwig van beethoven"
    assert "frank sinatra" in released_labels("v2").artists  # shown with spaces, found with norm()
    assert released_labels("v2").artist_id("Frank Sinatra") == released_labels("v2").artist_id(
        "frank_sinatra"
    )


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_window_labels_equal_the_original_labeller(version: str) -> None:
    from jukebox_infer.data.labels import Labeller as RefLabeller

    v3 = version == "v3"
    top = PRESETS["1b_lyrics" if v3 else "5b_lyrics"].top
    config = PRESETS["1b_lyrics" if v3 else "5b_lyrics"]
    sample_length = config.window_samples(2)
    with _quiet():
        ref = RefLabeller(top.max_bow_genre_size, top.n_tokens, sample_length, v3=v3)
    ours = Labeller.for_prior(config, 2)
    total = 180 * 44100
    for lyrics in (LYRICS * 3, "short lyrics"):
        song = ours.encode("The Beatles", "pop rock" if v3 else "rock", lyrics, strict=False)
        for offset in (0, 10 * 44100, 90 * 44100, total - sample_length, total - 1):
            with _quiet():
                want = ref.get_label("The Beatles", "pop rock" if v3 else "rock", lyrics, total, offset)["y"]
            assert ours.window_y(song, total, offset) == want.tolist(), offset
    assert len(ours.window_y(song, total, 0)) == top.y_len


def test_lyric_window_equals_the_original() -> None:
    from jukebox_infer.data.labels import get_relevant_lyric_tokens as ref_window

    rng = random.Random(4)
    for _ in range(200):
        full = [rng.randrange(1, 80) for _ in range(rng.randrange(0, 1500))]
        n = rng.choice([16, 384, 512])
        total = rng.randrange(10_000, 10_000_000)
        offset, duration = rng.randrange(0, total), rng.randrange(1, 1_000_000)
        assert get_relevant_lyric_tokens(full, n, total, offset, duration) == ref_window(
            full, n, total, offset, duration
        )


def test_bad_labels_are_explained() -> None:
    lab = Labeller.for_prior(PRESETS["5b"], 2)
    with pytest.raises(LabelsError, match="has 6 words; this model takes at most 5"):
        lab.encode("the beatles", "rock pop jazz soul blues country")
    song = lab.encode("the beatles", "rock pop jazz soul blues country", strict=False)
    assert len(song.genre_ids) == 5 and any("first 5 words" in n for n in song.notes)
    lyr = Labeller.for_prior(PRESETS["1b_lyrics"], 2)
    with pytest.raises(LyricsError, match="none of the lyrics' characters"):
        lyr.encode("the beatles", "rock", "★★★ 😀")
    up = Labeller.for_prior(PRESETS["1b_lyrics"], 0)  # upsamplers of 1b_lyrics use the v2 lists
    song = up.encode("Some Unknown Band", "rock", strict=False)
    assert song.artist_id == 0 and any("using 'unknown'" in n for n in song.notes)


def test_short_songs_are_labelled_with_the_shortest_length_the_model_knows() -> None:
    top = Labeller.for_prior(PRESETS["1b_lyrics"], 2)
    assert top.label_total_length(10 * 44100) == 786744  # 17.84 s
    assert top.label_total_length(30 * 44100) == 30 * 44100
    assert top.label_total_length(900 * 44100) < 600 * 44100
    assert Labeller.for_prior(PRESETS["5b"], 2).label_total_length(20 * 44100) == 60 * 44100
    assert Labeller.for_prior(PRESETS["5b"], 0).label_total_length(5 * 44100) == 5 * 44100  # no timing signal


def test_labels_for_models_without_torch(tmp_path: Path) -> None:
    assert labels_for_model("1b_lyrics").version == "v3" and labels_for_model("5b").version == "v2"
    cfg = tiny_config(
        custom_labels=CustomLabels(artists=("unknown", "Bach", "Mozart"), genres=("unknown", "chorale"))
    )
    cfg.save(tmp_path / "model.json")
    labels = labels_for_model(tmp_path)
    assert labels.version == "custom" and labels.artists == ["bach", "mozart", "unknown"]
    assert labels.artist_id("MOZART") == 2 and labels == custom_labels(cfg.custom_labels)  # type: ignore[arg-type]
    with pytest.raises(UnknownLabel, match="Did you mean: bach"):
        labels.artist_id("Bah")
    with pytest.raises(FileNotFoundError, match=r"model\.json"):
        labels_for_model(tmp_path / "nowhere")
    code = (
        "import sys, engine.model.labels as L; L.labels_for_model('1b_lyrics').artist_id('the beatles'); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
