"""Fitting lyrics to what the engine can sing: its alphabet, its lyric window, the song's structure."""

from __future__ import annotations

import pytest

from engine.model import labels
from lyrics.budget import WINDOWS, budget_for
from lyrics.errors import LyricsInputError
from lyrics.fit import allowed_marks, alphabet, fit_lyrics

CHORUS = "[Chorus]\nHold on, hold on\nThe night is young"


def test_lyric_window_facts() -> None:
    one_b, five_b = WINDOWS["1b_lyrics"], WINDOWS["5b_lyrics"]
    assert one_b.n_tokens == 384 and one_b.seconds == pytest.approx(17.83, abs=0.01)
    assert five_b.n_tokens == 512 and five_b.seconds == pytest.approx(23.78, abs=0.01)
    assert one_b.chars_per_second == pytest.approx(21.5, abs=0.05)
    assert five_b.chars_per_second == pytest.approx(one_b.chars_per_second, abs=0.05)


@pytest.mark.parametrize(("seconds", "max_chars"), [(1, 21), (10, 215), (20, 430), (60, 1291)])
def test_budget(seconds: float, max_chars: int) -> None:
    b = budget_for(seconds, "1b_lyrics")
    assert b.max_chars == max_chars
    assert b.target_chars == int(max_chars * 0.6)
    # a clip shorter than one window must fit the window whole
    if seconds < WINDOWS["1b_lyrics"].seconds:
        assert b.max_chars <= 384


@pytest.mark.parametrize("seconds", [0, -3, float("nan"), float("inf")])
def test_budget_rejects_nonsense(seconds: float) -> None:
    with pytest.raises(ValueError):
        budget_for(seconds)


def test_alphabet_is_the_engines() -> None:
    assert alphabet("1b_lyrics") == frozenset(labels.VOCAB_V3)
    assert alphabet("5b_lyrics") == frozenset(labels.VOCAB_V2)
    assert "+" in allowed_marks("5b_lyrics") and "+" not in allowed_marks("1b_lyrics")


def test_plain_lyrics_pass_untouched() -> None:
    text = "[Verse]\nNeon rain on the window\n\n" + CHORUS
    fitted = fit_lyrics(text, 20, engine_model="1b_lyrics")
    assert fitted.lyrics == text and fitted.notes == () and not fitted.changed


def test_emoji_accents_and_symbols_are_reported() -> None:
    fitted = fit_lyrics("Café 👍🏽 de l’été ❤️\nRock & roll ~ forever #1 🎸", 20, engine_model="1b_lyrics")
    assert set(fitted.lyrics) <= alphabet("1b_lyrics")
    assert fitted.lyrics == "Cafe de l'ete\nRock and roll forever 1"
    assert "removed 3 emoji" in fitted.notes
    assert any(
        n.startswith("changed 4 characters to ones the model knows") and "é → e" in n for n in fitted.notes
    )
    assert any(
        n.startswith("removed 2 characters the model cannot sing") and "~" in n and "#" in n
        for n in fitted.notes
    )
    assert 'wrote "&" as "and" (1 time)' in fitted.notes


def test_plus_depends_on_the_model() -> None:
    assert fit_lyrics("one + one", 10, engine_model="5b_lyrics").lyrics == "one + one"
    v3 = fit_lyrics("one + one", 10, engine_model="1b_lyrics")
    assert v3.lyrics == "one one"
    assert any("+" in n for n in v3.notes)


def test_other_scripts_are_transliterated() -> None:
    fitted = fit_lyrics("こんにちは\nПривет", 10, engine_model="1b_lyrics")
    assert fitted.lyrics == "konnichiha\nPrivet"


def test_nothing_singable_is_a_clear_error() -> None:
    with pytest.raises(LyricsInputError, match="Nothing singable"):
        fit_lyrics("🎵🎶🎵 ✨ ~~~", 10)


def test_section_labels_are_normalised() -> None:
    text = "Verse 1:\nline one\n(Chorus)\nline two\n[Pre-Chorus: Someone]\nline three\nBRIDGE\nline four"
    fitted = fit_lyrics(text, 30, engine_model="1b_lyrics")
    assert fitted.lyrics == (
        "[Verse 1]\nline one\n\n[Chorus]\nline two\n\n[Pre-Chorus]\nline three\n\n[Bridge]\nline four"
    )


def test_section_labels_go_when_the_alphabet_has_no_brackets(monkeypatch: pytest.MonkeyPatch) -> None:
    import lyrics.fit as fit

    no_brackets = labels.VOCAB_V3.replace("[", "").replace("]", "")
    monkeypatch.setattr(fit, "vocab", lambda engine_model=None: no_brackets)
    fitted = fit.fit_lyrics("[Verse]\nline one\n[Chorus]\nline two\n[Chorus]\nline two", 30)
    assert fitted.lyrics == "line one\n\nline two\n\nline two"
    assert any("removed 3 section labels (Verse, Chorus)" in n for n in fitted.notes)


def test_lyric_lines_that_look_like_labels_are_kept() -> None:
    text = "Intro to the night\nHook me up\nRap: the city never sleeps"
    assert fit_lyrics(text, 20).lyrics == text


def test_chatter_is_removed_only_from_model_replies() -> None:
    reply = 'Sure! Here is a song about rain:\n\n"Neon Rain"\n\nRain on the window\n\nHope you enjoy it!'
    from_model = fit_lyrics(reply, 20, from_model=True)
    assert from_model.lyrics == "Rain on the window"
    written = fit_lyrics("Sure, here is a song about rain:\nRain on the window", 20)
    assert written.lyrics.startswith("Sure, here is a song about rain:")


def test_lyrics_that_start_like_chatter_are_kept() -> None:
    reply = "Okay, let's go down to the river\nHere comes the sun again"
    assert fit_lyrics(reply, 20, from_model=True).lyrics == reply


def test_markdown_is_stripped_from_model_replies() -> None:
    reply = "## Verse\n- **Rain** on the *window*\n- lights _below_\n> echo"
    fitted = fit_lyrics(reply, 20, from_model=True)
    assert fitted.lyrics == "[Verse]\nRain on the window\nlights below\necho"
    assert any("markdown" in n for n in fitted.notes)


def test_whitespace_is_tidied() -> None:
    fitted = fit_lyrics("\n\n  line   one  \n\n\n\nline two\t\t\n\n", 20)
    assert fitted.lyrics == "line one\n\nline two"


def test_backslash_and_slash_line_breaks() -> None:
    assert fit_lyrics("line one \\ line two", 10).lyrics == "line one\nline two"
    slashed = fit_lyrics("line one / line two / line three", 10)
    assert slashed.lyrics == "line one\nline two\nline three"
    assert 'read " / " as line breaks' in slashed.notes
    # with real line breaks a slash is just a character the model cannot sing
    assert fit_lyrics("either / or\nnext", 10).lyrics == "either or\nnext"


def _sections(n: int, lines: int = 4) -> list[str]:
    return [
        f"[Verse {s}]\n" + "\n".join(f"verse {s} line {i} goes on a while" for i in range(lines))
        for s in range(1, n + 1)
    ]


def test_cut_keeps_whole_sections_then_whole_lines() -> None:
    sections = _sections(6)
    text = "\n\n".join(sections)
    fitted = fit_lyrics(text, 10)  # 215 characters
    assert len(fitted.lyrics) <= 215
    kept = fitted.lyrics.split("\n\n")
    assert kept[0] == sections[0]
    assert all(line in text.split("\n") for line in fitted.lyrics.split("\n") if line)
    (note,) = [n for n in fitted.notes if n.startswith("shortened")]
    assert (
        note
        == f"shortened from {len(text):,} to {len(fitted.lyrics):,} characters to fit 10 s (kept 1 of 6 sections and the start of the next)"
    )


def test_cut_never_ends_on_a_bare_label() -> None:
    sections = _sections(3)
    # make the budget end just after the second label
    budget = len(sections[0]) + 2 + len("[Verse 2]") + 5
    seconds = budget / WINDOWS["1b_lyrics"].chars_per_second
    fitted = fit_lyrics("\n\n".join(sections), seconds)
    assert fitted.lyrics == sections[0]
    assert "kept 1 of 3 sections" in fitted.notes[-1]


def test_a_single_long_line_is_cut_between_words() -> None:
    fitted = fit_lyrics("la " * 200, 2)  # 43 characters
    assert fitted.lyrics == ("la " * 14).strip()
    assert "cut between words" in fitted.notes[-1]


def test_big_numbers_in_notes_have_separators() -> None:
    text = "\n".join(f"line number {i} of a very long song" for i in range(60))
    fitted = fit_lyrics(text, 20)
    assert f"shortened from {len(text):,} to" in fitted.notes[-1]
    assert "," in f"{len(text):,}"


def test_truncated_reply_drops_the_unfinished_line() -> None:
    fitted = fit_lyrics("line one\nline two\nline thr", 20, from_model=True, truncated=True)
    assert fitted.lyrics == "line one\nline two"
    # a complete single line is never dropped
    assert fit_lyrics("only line", 20, from_model=True, truncated=True).lyrics == "only line"
