"""Timed lyrics (issue #16 item 8, issue #15 item 5): the song runner writes `alignment.json` and
`final.lrc` for a lyric model (both `jukebot generate` and the worker: tests/test_song_runner.py
compares their bytes), nothing for an instrumental or a model without lyrics; the clip's post
carries the LRC (the end-to-end post is in tests/test_listen_early.py); the X video burns the lines
in as captions while they are sung."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from db.audio import ffmpeg
from db.models import Clip, Song
from db.storage import Storage
from engine.model.config import tiny_config
from engine.sampling.pipeline import Engine
from engine.sampling.song import ALIGNMENT, FINAL_LRC, FolderFiles, SongRunner, song_request
from publisher.render import TitleCard, render_x_video
from publisher.timed_captions import Caption, captions_from_lrc, parse_lrc
from tests.bot_harness import tone_wav
from tests.pipeline_fixtures import write_tiny_model

LYRICS = "la la la\nsing a song\nof sixpence"


@pytest.fixture(scope="module")
def lyric_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    torch.set_num_threads(1)
    return Engine.load(str(write_tiny_model(tmp_path_factory.mktemp("m") / "tiny")), progress=False)


def _song(engine: Engine, out: Path, lyrics: str) -> tuple[SongRunner, object]:
    runner = SongRunner(engine, FolderFiles(out))
    request = song_request(engine, artist="bach", genre="chorale", lyrics=lyrics, seconds=0.1, seed=2)
    runner.drafts(request, 1, max_drafts=3)
    return runner, runner.upsample(request, 1)


def test_a_lyric_song_gets_its_alignment_and_lrc(lyric_engine: Engine, tmp_path: Path) -> None:
    _, final = _song(lyric_engine, tmp_path, LYRICS)
    assert final.alignment == ALIGNMENT and final.lrc == FINAL_LRC  # type: ignore[attr-defined]
    record = json.loads((tmp_path / ALIGNMENT).read_text())
    chars = record["characters"]
    assert "".join(c["char"] for c in chars) == LYRICS  # every sung character, in order
    times = [c["time"] for c in chars]
    assert times == sorted(times), "the lyrics are sung in order"
    assert record["seconds_per_token"] == pytest.approx(
        lyric_engine.hop_lengths[2] / lyric_engine.sample_rate
    )
    lines = parse_lrc((tmp_path / FINAL_LRC).read_text())
    assert [text for _, text in lines] == LYRICS.split("\n")
    starts = [LYRICS.index(line) for line in LYRICS.split("\n")]
    assert [t for t, _ in lines] == pytest.approx([times[i] for i in starts], abs=0.006)


def test_an_instrumental_or_a_model_without_lyrics_gets_none(lyric_engine: Engine, tmp_path: Path) -> None:
    _, final = _song(lyric_engine, tmp_path / "instrumental", "")
    assert final.lrc is None and final.alignment is None  # type: ignore[attr-defined]
    assert not (tmp_path / "instrumental" / FINAL_LRC).exists()
    plain = Engine.load(
        str(write_tiny_model(tmp_path / "plain", tiny_config("plain", lyrics="none", depth=2))),
        progress=False,
    )
    _, final = _song(plain, tmp_path / "plain-out", LYRICS)  # words the model cannot sing: no error
    assert final.lrc is None and not (tmp_path / "plain-out" / ALIGNMENT).exists()  # type: ignore[attr-defined]


def test_the_clip_post_carries_the_lrc(tmp_path: Path) -> None:
    from bot.features.clips.service import clip_bundle_with_lyrics

    storage = Storage(str(tmp_path / "store"))
    storage.write_bytes("songs/4/final.wav", tone_wav(330, 1.0))
    storage.write_bytes("songs/4/final.lrc", b"[00:00.10]hello\n")
    song = Song(id=4, user_id=1, artist="bach", genre="chorale", title="t")
    with_lrc = Clip(
        id=9, song_id=4, audio_key="songs/4/final.wav", codes_key="x", lrc_key="songs/4/final.lrc"
    )
    names = [f.filename for f in clip_bundle_with_lyrics(storage, song, with_lrc, 8 << 20).files]
    assert "song-4-clip-9.lrc" in names
    bundle = clip_bundle_with_lyrics(
        storage, song, Clip(id=9, song_id=4, audio_key="songs/4/final.wav", codes_key="x"), 8 << 20
    )
    assert not any(f.filename.endswith(".lrc") for f in bundle.files)
    storage.delete("songs/4/final.lrc")
    missing = clip_bundle_with_lyrics(storage, song, with_lrc, 8 << 20)
    assert any("timed lyrics are missing" in n for n in missing.notes)


def test_lrc_lines_become_captions_in_the_video_clock() -> None:
    lrc = "[00:01.00]one\n[00:03.50]two\n[00:03.50]too\nnot a line\n[00:20.00]late\n"
    assert captions_from_lrc(lrc, start=2.0, duration=10.0) == [
        Caption(0.0, 1.5, "one"),
        Caption(1.5, 9.5, "two / too"),  # 8 s at most,
    ]


RAW_GRAY = ["-f", "rawvideo", "-pix_fmt", "gray", "-"]


def _frame(video: Path, at: float, size: tuple[int, int]) -> np.ndarray:
    res = subprocess.run(
        [ffmpeg(), "-v", "error", "-ss", f"{at}", "-i", str(video), "-frames:v", "1", *RAW_GRAY],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return np.frombuffer(res.stdout, dtype=np.uint8).reshape(size[1], size[0]).astype(np.int16)


def test_the_x_video_burns_the_timed_lyrics_in(tmp_path: Path) -> None:
    size = (320, 240)
    wav = tone_wav(440, 3.0)
    card = TitleCard(title="Song", artist="bach", genre="chorale", requester="alice", footer="")
    plain, captioned = tmp_path / "plain.mp4", tmp_path / "captioned.mp4"
    plain.write_bytes(render_x_video(wav, card, size=size, fps=10, normalize=False))
    lrc = "[00:01.20]HELLO WORLD\n"
    captioned.write_bytes(render_x_video(wav, card, size=size, fps=10, normalize=False, lrc=lrc))
    band = slice(int(size[1] * 0.87), size[1] - 4)  # where the captions go

    def changed(at: float) -> float:  # the share of the band's pixels the caption's text changed
        diff = np.abs(_frame(plain, at, size) - _frame(captioned, at, size))[band]
        return float((diff > 60).mean())

    before, during = changed(0.5), changed(2.0)
    assert before < 0.005, f"a caption was shown before its line is sung ({before:.3f})"
    assert during > 0.03, f"the line sung at 2 s is not in the frame ({during:.3f})"


async def test_the_x_publication_reads_the_clips_lrc_into_its_video(sqlite_url: str, tmp_path: Path) -> None:
    """The publisher's X path (publisher/platforms.py) gives a lyric clip's stored LRC to the render:
    the video it uploads shows the line while it is sung; the same clip without its LRC does not."""
    import httpx

    from db.database import Database
    from db.settings import Settings
    from publisher.captions import CaptionInfo
    from publisher.platforms import XPlatform

    storage = Storage(str(tmp_path / "store"))
    # X's keys only let the platform be made: nothing is uploaded here.
    values: dict[str, object] = {
        k: "unused"
        for k in ("x_consumer_key", "x_consumer_secret", "x_access_token", "x_access_token_secret")
    }
    values.update(database_url=sqlite_url, storage_url=storage.root, x_video_size="320x240")
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg,arg-type]
    storage.write_bytes("songs/4/final.wav", tone_wav(440, 3.0))
    storage.write_bytes("songs/4/final.lrc", b"[00:01.20]HELLO WORLD\n")
    info = CaptionInfo(clip_id=9, title="Song", artist="bach", genre="chorale", lyrics="HELLO WORLD")
    sung = Clip(id=9, song_id=4, audio_key="songs/4/final.wav", codes_key="x", lrc_key="songs/4/final.lrc")
    plain = Clip(id=9, song_id=4, audio_key="songs/4/final.wav", codes_key="x")
    db = Database(sqlite_url)
    try:
        async with httpx.AsyncClient() as http:
            x = XPlatform(settings, db, storage, http)
            (tmp_path / "sung.mp4").write_bytes(x._render(sung, info))
            (tmp_path / "plain.mp4").write_bytes(x._render(plain, info))
    finally:
        db.dispose()
    size = (320, 240)
    band = slice(int(size[1] * 0.87), size[1] - 4)

    def changed(at: float) -> float:
        diff = np.abs(_frame(tmp_path / "plain.mp4", at, size) - _frame(tmp_path / "sung.mp4", at, size))
        return float((diff[band] > 60).mean())

    assert changed(0.5) < 0.005 and changed(2.0) > 0.03
