"""Captions for X and titles/descriptions/tags for SoundCloud, from templates, within each platform's limits.

Templates are `str.format` strings over the fields of `CaptionInfo.fields()`: {title}, {style}, {artist},
{genre}, {lyrics}, {requester}, {credit}, {licence}, {hashtags}, {clip_id}. A template line whose fields
are all empty is dropped, so a song without lyrics gets no empty quote line. When a caption is too long
it is shortened in this order, always at word boundaries with an ellipsis: the lyrics excerpt, then the
style line, then the title. The credit, licence note and hashtags are never cut (the licence note is a
condition of OpenAI's Jukebox weights, which are noncommercial).

Limits: X counts 280 "weighted" characters (twitter-text v3: most Latin, Greek, Cyrillic and general
punctuation weigh 1, everything else, CJK and emoji included, weighs 2; every URL weighs 23).
SoundCloud's API documents no lengths; we keep to the web uploader's: title 100 characters,
description 4000 characters.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

X_MAX_WEIGHT = 280
X_URL_WEIGHT = 23
SOUNDCLOUD_TITLE_MAX = 100
SOUNDCLOUD_DESCRIPTION_MAX = 4000
ELLIPSIS = "…"

# twitter-text v3 configuration: code point ranges that weigh 1 (all others weigh 2).
_LIGHT_RANGES = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))
# Anything that X might auto-link: explicit URLs and bare domains ("soundcloud.com/x").
_URLISH = re.compile(r"(?i)\b(?:https?://\S+|www\.\S+|[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?:/\S*)?)")

_DANGLING = re.compile(r"^[\s—·,:;-]+|[\s—·,:;-]+$")

OUR_MODELS = frozenset({"demo"})  # trained here on public-domain scores: no licence note needed
LICENCE_NOTE = "Made with OpenAI Jukebox weights (noncommercial licence)."

DEFAULT_TEMPLATES: dict[str, str] = {
    "x": "🎵 {title} — {style}\n“{lyrics}”\nrequested by {requester} · {credit}\n{licence}\n{hashtags}",
    "soundcloud_title": "{title}",
    "soundcloud_description": (
        "{title} — {style}\n\n{lyrics}\n\nRequested by {requester} on Discord. {credit}\n{licence}\n{hashtags}"
    ),
}


@dataclass(frozen=True)
class CaptionInfo:
    """What a caption is made from (read from the clip, its song and its requester)."""

    clip_id: int
    title: str
    artist: str = ""
    genre: str = ""
    lyrics: str = ""
    requester: str = ""
    model: str = "demo"
    channel_tag: str = "#jukebot"
    marker: str = ""  # the publication's unique tag, appended to what is sent (publisher/state.py)

    @property
    def licence(self) -> str:
        return "" if self.model in OUR_MODELS else LICENCE_NOTE

    @property
    def credit(self) -> str:
        return (
            "AI music by jukebot"
            if self.model in OUR_MODELS
            else f"AI music by jukebot (Jukebox {self.model})"
        )

    @property
    def artist_name(self) -> str:
        """Jukebox's labels are lower_snake ('frank_sinatra'); show them as names."""
        name = one_line(self.artist.replace("_", " "))
        return name.title() if name.islower() else name

    @property
    def style(self) -> str:
        artist, genre = self.artist_name, one_line(self.genre.replace("_", " "))
        if artist and genre:
            return f"in the style of {artist}, {genre}"
        return f"in the style of {artist}" if artist else genre

    def hashtags(self) -> list[str]:
        tags = [self.channel_tag.strip()] if self.channel_tag.strip() else []
        genre_tag = hashtag(self.genre)
        if genre_tag and genre_tag.lower() not in (t.lower() for t in tags):
            tags.append(genre_tag)
        tags.append("#AIMusic")
        return tags

    def fields(self) -> dict[str, str]:
        return {
            "clip_id": str(self.clip_id),
            "title": one_line(self.title) or "Untitled",
            "artist": self.artist_name,
            "genre": self.genre.replace("_", " "),
            "style": self.style,
            "lyrics": lyrics_excerpt(self.lyrics),
            "requester": one_line(self.requester) or "the community",
            "credit": self.credit,
            "licence": self.licence,
            "hashtags": " ".join(self.hashtags()),
        }


def one_line(text: str) -> str:
    return " ".join(text.split())


def hashtag(text: str) -> str:
    """'hip_hop' -> '#HipHop'; empty when nothing usable is left."""
    words = re.split(r"[\s_\-/&]+", unicodedata.normalize("NFKC", text))
    body = "".join(w[:1].upper() + w[1:] for w in (re.sub(r"\W", "", w) for w in words) if w)
    return f"#{body}" if body and not body.isdigit() else ""


def lyrics_excerpt(lyrics: str, max_lines: int = 2, max_chars: int = 140) -> str:
    """The first lines of the lyrics (no section labels like [Chorus]), joined with ' / '."""
    lines = [one_line(line) for line in lyrics.splitlines()]
    lines = [line for line in lines if line and not re.fullmatch(r"\[.*\]|\(.*\)", line)]
    excerpt = " / ".join(lines[:max_lines])
    return shorten_words(excerpt, max_chars, len)


def x_weighted_length(text: str) -> int:
    """X's count for `text`: URLs (and anything that may be auto-linked) weigh 23, others per code point."""
    text = unicodedata.normalize("NFC", text)
    total = 0
    pos = 0
    for m in _URLISH.finditer(text):
        total += _weigh(text[pos : m.start()])
        url = m.group(0)
        # An explicit link always weighs 23; a bare domain weighs 23 only if X links it, so take the larger.
        total += (
            X_URL_WEIGHT
            if url.lower().startswith(("http://", "https://"))
            else max(X_URL_WEIGHT, _weigh(url))
        )
        pos = m.end()
    return total + _weigh(text[pos:])


def _weigh(text: str) -> int:
    return sum(1 if any(lo <= ord(ch) <= hi for lo, hi in _LIGHT_RANGES) else 2 for ch in text)


def shorten_words(text: str, limit: int, measure: Callable[[str], int] = len) -> str:
    """`text` if it fits, else as many whole words as fit followed by an ellipsis ('' if none fit)."""
    if measure(text) <= limit:
        return text
    words = text.split()
    while words:
        words.pop()
        candidate = " ".join(words).rstrip(string.punctuation + " ,;:—-") + ELLIPSIS
        if words and measure(candidate) <= limit:
            return candidate
    return ""


def render_template(template: str, fields: Mapping[str, str]) -> str:
    """Fill `template`; drop lines whose fields are all empty; tidy blank runs."""
    out: list[str] = []
    for line in template.split("\n"):
        names = [name for _, name, _, _ in string.Formatter().parse(line) if name]
        if names and not any(fields.get(n, "").strip() for n in names):
            continue
        filled = line.format(**fields).strip()
        out.append(_DANGLING.sub("", filled))  # "Title — " when the style was dropped
    text = "\n".join(out).strip()
    return re.sub(r"\n{3,}", "\n\n", text)


def _fit(template: str, fields: dict[str, str], limit: int, measure: Callable[[str], int]) -> str:
    """Render, shortening lyrics, then style, then title word by word until it fits."""
    fields = dict(fields)
    text = render_template(template, fields)
    for name in ("lyrics", "style", "title"):
        while measure(text) > limit and fields.get(name):
            words = fields[name].rstrip(ELLIPSIS).split()
            fields[name] = (
                (" ".join(words[:-1]).rstrip(string.punctuation) + ELLIPSIS) if len(words) > 1 else ""
            )
            if name == "title" and not fields[name]:
                fields[name] = ELLIPSIS
            text = render_template(template, fields)
        if measure(text) <= limit:
            return text
    # The fixed parts alone are too long (a very long custom template or channel tag): cut at words.
    shortened = shorten_words(text, limit, measure)
    if not shortened:
        raise ValueError(f"the caption template cannot fit in {limit} characters")
    return shortened


def with_marker(text: str, marker: str) -> str:
    """`text` with the marker as its own last line (room for it was kept when fitting the text)."""
    return f"{text}\n{marker}" if marker else text


def _marker_room(marker: str, measure: Callable[[str], int]) -> int:
    return measure("\n" + marker) if marker else 0


def x_caption(info: CaptionInfo, templates: Mapping[str, str] | None = None) -> str:
    template = (templates or {}).get("x") or DEFAULT_TEMPLATES["x"]
    room = _marker_room(info.marker, x_weighted_length)
    text = _fit(template, info.fields(), X_MAX_WEIGHT - room, x_weighted_length)
    return with_marker(text, info.marker)


@dataclass(frozen=True)
class SoundCloudText:
    title: str
    description: str
    tag_list: str


def soundcloud_tag_list(info: CaptionInfo) -> str:
    """Space separated; multi-word tags in double quotes (SoundCloud's tag_list format)."""
    tags = [t.lstrip("#") for t in info.hashtags()]
    for extra in (info.genre.replace("_", " "), info.artist_name, "jukebox"):
        if extra and extra.lower() not in (t.lower() for t in tags):
            tags.append(extra)
    cleaned = [t.replace('"', "").strip() for t in tags]
    return " ".join(f'"{t}"' if " " in t else t for t in cleaned if t)


def soundcloud_text(info: CaptionInfo, templates: Mapping[str, str] | None = None) -> SoundCloudText:
    templates = templates or {}
    fields = info.fields()
    fields["lyrics"] = "\n".join(line for line in info.lyrics.strip().splitlines())  # full lyrics fit here
    title = _fit(
        templates.get("soundcloud_title") or DEFAULT_TEMPLATES["soundcloud_title"],
        {**fields, "title": one_line(info.title) or "Untitled"},
        SOUNDCLOUD_TITLE_MAX,
        len,
    )
    description = _fit(
        templates.get("soundcloud_description") or DEFAULT_TEMPLATES["soundcloud_description"],
        fields,
        SOUNDCLOUD_DESCRIPTION_MAX - _marker_room(info.marker, len),
        len,
    )
    description = with_marker(description, info.marker)
    return SoundCloudText(
        title=title.replace("\n", " "), description=description, tag_list=soundcloud_tag_list(info)
    )


def carries_marker(text: str | None, marker: str) -> bool:
    """Whether a post's text holds our marker as a word of its own (the only proof a post is ours)."""
    return bool(marker) and text is not None and marker in normalise_for_match(text).split()


def normalise_for_match(text: str) -> str:
    """Text as compared when looking for our own post: no links (X adds a t.co link for the media and
    shortens ours), entities decoded, whitespace collapsed."""
    import html

    text = html.unescape(unicodedata.normalize("NFC", text))
    text = re.sub(r"https?://\S+", " ", text)
    return " ".join(text.split())
