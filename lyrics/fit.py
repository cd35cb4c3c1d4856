"""Turn a text model's reply (or lyrics a member wrote) into lyrics the engine can sing.

The engine's character vocabulary and its cleaning live in `engine/model/labels.py` (torch-free); this
module only decides what to do around them and tells the person what changed, in plain words:

1. drop what is not lyrics: code fences and markdown; from a text model also its hidden reasoning,
   its "Here are your lyrics:" introduction, "Hope you like it!" ending and a title line;
2. keep the structure: sections stay separated by a blank line; section labels ([Verse], Chorus:,
   **Bridge**) become "[Verse]" when the vocabulary has brackets and are dropped when it has not;
3. map every character onto the vocabulary (accents to plain letters, emoji and other symbols out);
4. cut to the clip's budget (`lyrics.budget`) at section, then line, then word boundaries.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from unidecode import unidecode

from engine.model import labels
from lyrics.budget import LyricBudget, budget_for
from lyrics.errors import LyricsInputError

log = logging.getLogger("jukebot.lyrics")


@dataclass(frozen=True)
class FittedLyrics:
    lyrics: str
    notes: tuple[str, ...]
    original_chars: int
    budget: LyricBudget

    @property
    def changed(self) -> bool:
        return bool(self.notes)


# ---------------------------------------------------------------------------------------------
# The engine's alphabet (single source: engine/model/labels.py)


@lru_cache(maxsize=16)
def vocab(engine_model: str | None = None) -> str:
    """The lyric characters of the configured model's top prior. A model that cannot be read here
    (a custom folder not present on the bot's machine) gets the released 1b_lyrics alphabet, v3,
    which every released model can sing."""
    if not engine_model:
        return labels.VOCAB_V3
    try:
        return labels.labels_for_model(engine_model).vocab
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("lyrics: using the v3 alphabet; could not read model %r: %s", engine_model, exc)
        return labels.VOCAB_V3


def alphabet(engine_model: str | None = None) -> frozenset[str]:
    return frozenset(vocab(engine_model))


def clean_to_vocab(text: str, engine_model: str | None = None) -> str:
    cleaned, _notes = labels.clean_lyrics(text, vocab(engine_model))  # our notes are more specific
    return cleaned


def allowed_marks(engine_model: str | None = None) -> str:
    """The punctuation the model can sing, for the text model's instructions."""
    return " ".join(c for c in sorted(alphabet(engine_model)) if not c.isalnum() and not c.isspace())


# ---------------------------------------------------------------------------------------------
# Patterns

_THINK = re.compile(r"<think>.*?(</think>|\Z)", re.IGNORECASE | re.DOTALL)
_FENCE = re.compile(r"^\s*(```|~~~)")
_MD_PREFIX = re.compile(r"^\s*(#{1,6}\s+|>\s?|[-*•]\s+|\d{1,2}[.)]\s+)")
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|_)(?=\S)(.+?)(?<=\S)\1")
_SECTION_NAMES = (
    "verse|chorus|pre-chorus|pre chorus|prechorus|post-chorus|bridge|outro|intro|hook|refrain|"
    "interlude|breakdown|coda|tag|instrumental|spoken|rap|final chorus"
)
_SECTION = re.compile(
    # "[Verse 2: Artist]", "(Chorus)", or a bare "Chorus:" / "Verse 1" on its own line
    rf"^\s*(?:[\[(]\s*(?P<name>{_SECTION_NAMES})(?P<num>\s*\d+)?\s*(?:[:\-–—][^\])]*)?[\])]"
    rf"|(?P<bare>{_SECTION_NAMES})(?P<bnum>\s*\d+)?)\s*:?\s*$",
    re.IGNORECASE,
)
_INTERJECTION = r"(sure|certainly|of course|absolutely|okay|ok|great|alright|as requested|below)"
_INTRO = re.compile(
    rf"^\s*{_INTERJECTION}\W*$"  # "Sure!" alone
    rf"|^\s*({_INTERJECTION}|here('s| is| are)|i('ve| have) (written|created|composed|made))\b"
    r".*\b(lyrics|song|verse|draft|version|attempt|take)\b"  # "Sure, here is a song about rain"
    r"|^\s*lyrics\s*:",
    re.IGNORECASE,
)
_OUTRO = re.compile(
    r"^\s*(i hope|hope (you|this|that)|let me know|feel free|enjoy|note:|notes:|this song\b|these lyrics\b"
    r"|would you like|if you('d| would) like|i can (also|adjust|change|make)|want me to)",
    re.IGNORECASE,
)
_QUOTED_TITLE = re.compile(r'^\s*["“«].{1,60}["”»]\s*$')
_SILENT = {"\u200d", "\ufe0f", "\ufe0e", "\u20e3"}  # joiners and variation selectors inside emoji


def _is_emoji(ch: str) -> bool:
    cp = ord(ch)
    if 0x1F3FB <= cp <= 0x1F3FF:  # skin tones belong to the emoji before them
        return False
    return unicodedata.category(ch) == "So" and (
        cp >= 0x1F000 or 0x2600 <= cp <= 0x27BF or 0x2B00 <= cp <= 0x2BFF
    )


def _examples(chars: Counter[str], n: int = 3) -> str:
    return ", ".join(c for c, _ in chars.most_common(n))


def _seconds(s: float) -> str:
    return f"{s:g} s"


# ---------------------------------------------------------------------------------------------
# Steps. Each takes lines and a notes list, and returns lines.


@dataclass
class _Work:
    lines: list[str]
    notes: list[str] = field(default_factory=list)


def _strip_reasoning(text: str, notes: list[str]) -> str:
    out, n = _THINK.subn("", text)
    if n:
        notes.append("removed the model's hidden reasoning (<think> block)")
    return out


def _strip_markdown(w: _Work) -> None:
    fences = 0
    marked = 0
    lines: list[str] = []
    for line in w.lines:
        if _FENCE.match(line):
            fences += 1
            continue
        new = _MD_PREFIX.sub("", line, count=1)
        new = _MD_EMPHASIS.sub(r"\2", new)
        if new != line:
            marked += 1
        lines.append(new)
    w.lines = lines
    if fences:
        w.notes.append("removed code fences (```)")
    if marked:
        w.notes.append(f"removed markdown formatting from {marked} line{'s' if marked != 1 else ''}")


def _strip_chatter(w: _Work) -> None:
    lines = w.lines
    start = 0
    intro: list[str] = []
    title: list[str] = []
    while start < len(lines):
        line = lines[start].strip()
        if not line:
            start += 1
            continue
        if _SECTION.match(line):
            break
        if _QUOTED_TITLE.match(line) or re.match(r"^\s*(song )?title\s*:", line, re.IGNORECASE):
            title.append(line)
            start += 1
            continue
        if _INTRO.match(line) or (not intro and not title and line.endswith(":")):
            intro.append(line)
            start += 1
            continue
        break
    end = len(lines)
    outro: list[str] = []
    while end > start:
        line = lines[end - 1].strip()
        if not line:
            end -= 1
            continue
        if _OUTRO.match(line) or (line.startswith("(") and line.endswith(")") and len(line) > 60):
            outro.append(line)
            end -= 1
            continue
        break
    if not any(x.strip() for x in lines[start:end]):
        return  # it was all "chatter": better to keep it than to sing nothing
    if intro:
        first = intro[0] if len(intro[0]) <= 50 else intro[0][:47] + "..."
        w.notes.append(f'removed the model\'s introduction ("{first}")')
    if title:
        w.notes.append(f"removed the title line ({title[0].strip()[:50]})")
    if outro:
        w.notes.append("removed the model's closing remark")
    w.lines = lines[start:end]


def _normalise_sections(w: _Work, brackets: bool) -> None:
    """Section labels on their own line become "[Chorus]"; with no brackets in the alphabet they go."""
    lines: list[str] = []
    dropped: Counter[str] = Counter()
    for line in w.lines:
        m = _SECTION.match(line)
        if not m:
            lines.append(line)
            continue
        name = re.sub(
            r"[a-z]+",
            lambda word: word.group().capitalize(),
            " ".join((m.group("name") or m.group("bare")).lower().split()),
        )
        num = (m.group("num") or m.group("bnum") or "").strip()
        label = f"{name} {num}".strip()
        # A label starts a section: make sure a blank line separates it from the one before.
        if lines and lines[-1].strip():
            lines.append("")
        if brackets:
            lines.append(f"[{label}]")
        else:
            dropped[name] += 1
    w.lines = lines
    if dropped:
        total = sum(dropped.values())
        w.notes.append(
            f"removed {total} section label{'s' if total != 1 else ''} ({', '.join(dropped)}): "
            "this model's alphabet has no brackets"
        )


def _to_vocab(w: _Work, engine_model: str | None) -> None:
    vocab = alphabet(engine_model)
    text, ands = re.subn(r"(?<=\s)&(?=\s)", "and", "\n".join(w.lines))
    if ands:
        w.notes.append(f'wrote "&" as "and" ({ands} time{"s" if ands != 1 else ""})')
    emoji = 0
    translit: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    for ch in text:
        if ch in vocab or ch in _SILENT or ch in "\r\n":
            continue
        if _is_emoji(ch):
            emoji += 1
        elif 0x1F3FB <= ord(ch) <= 0x1F3FF:
            continue
        elif (u := unidecode(ch)) and all(c in vocab for c in u):
            if u.strip():
                translit[f"{ch} → {u}"] += 1
        elif ch.isspace():
            continue
        else:
            removed[ch] += 1
    cleaned = clean_to_vocab(text, engine_model)
    if emoji:
        w.notes.append(f"removed {emoji} emoji")
    if translit:
        n = sum(translit.values())
        w.notes.append(
            f"changed {n} character{'s' if n != 1 else ''} to ones the model knows ({_examples(translit)})"
        )
    if removed:
        n = sum(removed.values())
        w.notes.append(
            f"removed {n} character{'s' if n != 1 else ''} the model cannot sing ({_examples(removed)})"
        )
    w.lines = cleaned.split("\n")


def _tidy(lines: list[str]) -> list[str]:
    """Single spaces, no trailing blanks, at most one blank line between sections."""
    out: list[str] = []
    for raw in lines:
        line = re.sub(r"[ \t]+", " ", raw).strip()
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


def _sections(lines: list[str]) -> list[list[str]]:
    sections: list[list[str]] = [[]]
    for line in lines:
        if line:
            sections[-1].append(line)
        elif sections[-1]:
            sections.append([])
    return [s for s in sections if s]


def _join(sections: list[list[str]]) -> str:
    return "\n\n".join("\n".join(s) for s in sections)


def _is_label(line: str) -> bool:
    return line.startswith("[") and line.endswith("]")


def _cut(sections: list[list[str]], max_chars: int) -> tuple[list[list[str]], int, bool]:
    """Whole sections while they fit, then whole lines of the next one; only if not even the first
    line fits, its first words. Returns the kept sections, how many are whole, and whether a line
    was cut between words."""
    kept: list[list[str]] = []
    for section in sections:
        if len(_join([*kept, section])) <= max_chars:
            kept.append(section)
            continue
        whole = len(kept)
        partial: list[str] = []
        word_cut = False
        for line in section:
            if len(_join([*kept, [*partial, line]])) <= max_chars:
                partial.append(line)
                continue
            if not kept and all(_is_label(x) for x in partial):
                words: list[str] = []
                for word in line.split(" "):
                    if len(_join([*kept, [*partial, " ".join([*words, word])]])) > max_chars:
                        break
                    words.append(word)
                if words:
                    partial.append(" ".join(words))
                    word_cut = True
            break
        while partial and _is_label(partial[-1]):
            partial.pop()
        if partial:
            kept.append(partial)
        return kept, whole, word_cut
    return kept, len(kept), False


def _where(n_sections: int, kept: list[list[str]], whole: int, word_cut: bool) -> str:
    if word_cut:
        return "cut between words: not even the first line fits"
    if whole:
        where = f"kept {whole} of {n_sections} sections"
        return where + (" and the start of the next" if len(kept) > whole else "")
    return "kept the first lines" if n_sections == 1 else "kept the first lines of the first section"


# ---------------------------------------------------------------------------------------------


def fit_lyrics(
    text: str,
    seconds: float,
    *,
    engine_model: str | None = None,
    from_model: bool = False,
    truncated: bool = False,
) -> FittedLyrics:
    """Clean `text` to the engine's alphabet and cut it to what `seconds` of audio can carry.

    `from_model`: the text came from a text model, so reasoning, introductions, titles and closing
    remarks are removed too (never done to what a person wrote). `truncated`: the model hit its token limit, so
    its last line is unfinished and is dropped. Raises LyricsInputError if nothing singable is left.
    """
    budget = budget_for(seconds, engine_model)
    original = text
    notes: list[str] = []
    # A backslash is a line break, as in the original Jukebox cleaning; slash-command options are
    # one line, so " / " between lines is read as a break too when there is no real one.
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\\", "\n")
    if "\n" not in text.strip() and " / " in text:
        text = text.replace(" / ", "\n")
        notes.append('read " / " as line breaks')
    if from_model:
        text = _strip_reasoning(text, notes)
    lines = text.split("\n")
    if truncated and from_model and len([x for x in lines if x.strip()]) > 1:
        while lines and not lines[-1].strip():
            lines.pop()
        lines.pop()
        notes.append("dropped the unfinished last line (the text model ran out of room)")
    w = _Work(lines=lines, notes=notes)
    _strip_markdown(w)  # pasted lyrics carry it too, and its marks are not singable anyway
    if from_model:
        _strip_chatter(w)
    brackets = {"[", "]"} <= alphabet(engine_model)
    _normalise_sections(w, brackets)
    _to_vocab(w, engine_model)
    lines = _tidy(w.lines)
    sections = _sections(lines)
    # A lone label with no words under it sings nothing.
    sections = [s for s in sections if not all(_is_label(x) for x in s)]
    lyrics = _join(sections)
    if not lyrics.strip():
        raise LyricsInputError(
            "Nothing singable is left after cleaning: the model sings Latin letters, digits and simple "
            "punctuation (other scripts are transliterated). Please write the words out."
        )
    if len(lyrics) > budget.max_chars:
        before = len(lyrics)
        kept, whole, word_cut = _cut(sections, budget.max_chars)
        lyrics = _join(kept)
        where = _where(len(sections), kept, whole, word_cut)
        w.notes.append(
            f"shortened from {before:,} to {len(lyrics):,} characters to fit {_seconds(seconds)} ({where})"
        )
        if not lyrics.strip():
            raise LyricsInputError(f"{_seconds(seconds)} is too short for any of these lyrics.")
    return FittedLyrics(lyrics=lyrics, notes=tuple(w.notes), original_chars=len(original), budget=budget)
