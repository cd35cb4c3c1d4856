"""The corpus builder, with the real music21 scores, FluidSynth and the Debian General MIDI SoundFont.

A 3-piece build (a Bach chorale, a fiddle tune, a Monteverdi madrigal) with 4-second clips runs
twice: the clips must be real, non-silent, pitched music with correct labels, and the two builds
must be identical to the byte.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.training import corpus_pack, scores, sources
from engine.training.corpus import build_corpus, plan_pieces
from engine.training.scores import MidiNote, clip_starts, write_midi
from engine.training.sources import CorpusError

pytestmark = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not sources.DEFAULT_SOUNDFONT.is_file(),
    reason="needs the Debian packages fluidsynth and fluid-soundfont-gm",
)

SMALL = {"max_pieces": 3, "seconds_per_clip": 4.0, "max_clips_per_piece": 2, "workers": 1, "progress": False}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(out, **SMALL)  # type: ignore[arg-type]
    return out


def _labels(root: Path) -> list[dict[str, str]]:
    with (root / "labels.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _spectral_flatness(x: np.ndarray) -> float:
    frames = x[: len(x) // 2048 * 2048].reshape(-1, 2048) * np.hanning(2048)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
    return float(np.mean(np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)))


def test_small_build_has_real_labelled_music(small: Path) -> None:
    rows = _labels(small)
    assert {r["artist"] for r in rows} == {"bach", "traditional", "monteverdi"}
    assert {r["genre"] for r in rows} == {"chorale", "fiddle tune", "madrigal"}
    assert list(rows[0]) == list(sources.LABEL_COLUMNS)
    assert [r["file"] for r in rows] == sorted(r["file"] for r in rows)
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, 4 * 22050)
    for r in rows:
        audio, rate = sf.read(small / r["file"], dtype="float32")
        assert rate == 22050 and audio.ndim == 1 and len(audio) == 4 * 22050
        rms_db = 20 * np.log10(np.sqrt(np.mean(audio**2)))
        assert -40 < rms_db < -6, (r["file"], rms_db)
        assert np.abs(audio).max() <= sources.PEAK + 1e-3
        # Pitched instruments: far flatter spectrum for noise than for the rendered music.
        assert _spectral_flatness(audio) < 0.2 * _spectral_flatness(noise), r["file"]
        assert float(r["seconds"]) == 4.0
        assert 0 <= float(r["offset_seconds"]) <= float(r["total_seconds"]) - 4.0 + 1e-3
        assert r["split"] in ("train", "test") and r["source"]
    chorale = [r for r in rows if r["genre"] == "chorale"]
    madrigal = [r for r in rows if r["genre"] == "madrigal"]
    tune = [r for r in rows if r["genre"] == "fiddle tune"]
    assert chorale and madrigal and tune
    # Words are labels of the clip they are sung in; the chorale's are German, so letters like ä/ü/ß
    # or common German words appear; the fiddle tune has none.
    assert all(r["lyrics"].strip() for r in chorale[:1] + madrigal[:1])
    assert all(r["lyrics"] == "" for r in tune)
    assert chorale[0]["offset_seconds"] == "0.0"


def test_corpus_json_summarises_the_build(small: Path) -> None:
    doc = json.loads((small / "corpus.json").read_text(encoding="utf-8"))
    rows = _labels(small)
    assert doc["clips"] == len(rows)
    assert doc["artists"]["bach"]["clips"] == sum(r["artist"] == "bach" for r in rows)
    assert doc["genres"]["madrigal"]["clips"] == sum(r["genre"] == "madrigal" for r in rows)
    assert doc["hours"] == pytest.approx(len(rows) * 4 / 3600, abs=1e-4)
    versions = doc["versions"]
    assert versions["music21"] and versions["fluidsynth"].startswith("FluidSynth")
    assert len(versions["soundfont"]["sha256"]) == 64
    used = {p["source"] for p in doc["pieces_used"]}
    assert used == {r["source"] for r in rows}
    assert {p["collection"] for p in doc["pieces_used"]} == {
        "bach-chorales",
        "ryans-mammoth",
        "monteverdi-madrigals",
    }
    for p in doc["pieces_used"]:
        assert p["instruments"] and p["quarter_bpm"] > 0
    assert any(p["lyrics"] for p in doc["pieces_used"])
    assert doc["skipped"] == []


def test_same_seed_rebuild_is_byte_identical(small: Path, tmp_path: Path) -> None:
    # The rebuild renders in two processes: the order pieces finish in must not matter.
    build_corpus(tmp_path, **{**SMALL, "workers": 2})  # type: ignore[arg-type]
    assert (tmp_path / "labels.csv").read_bytes() == (small / "labels.csv").read_bytes()
    for r in _labels(small):
        a = hashlib.sha256((small / r["file"]).read_bytes()).hexdigest()
        b = hashlib.sha256((tmp_path / r["file"]).read_bytes()).hexdigest()
        assert a == b, r["file"]


def test_plan_is_seeded_and_independent_of_max_pieces(tmp_path: Path) -> None:
    kw = {
        "sample_rate": 22050,
        "seconds_per_clip": 20.0,
        "max_clips_per_piece": None,
        "soundfont": sources.DEFAULT_SOUNDFONT,
        "audio_format": "flac",
    }
    full = plan_pieces(tmp_path, seed=0, max_pieces=None, **kw)  # type: ignore[arg-type]
    again = plan_pieces(tmp_path, seed=0, max_pieces=None, **kw)  # type: ignore[arg-type]
    head = plan_pieces(tmp_path, seed=0, max_pieces=12, **kw)  # type: ignore[arg-type]
    other = plan_pieces(tmp_path, seed=1, max_pieces=None, **kw)  # type: ignore[arg-type]
    assert full == again
    assert head == full[:12]
    assert [j.source for j in other] != [j.source for j in full]
    assert len(full) == sum(c.pieces for c in sources.COLLECTIONS)
    assert len({j.source for j in full}) == len(full)
    by_artist = {j.artist for j in full}
    assert len(by_artist) >= 6 and len({j.genre for j in full}) >= 5
    assert {j.split for j in full} == {"train", "test"}
    # Every selected piece exists in the installed music21 corpus.
    root = sources._corpus_root()
    assert all((root / j.source.partition("#")[0]).is_file() for j in full)


def test_clip_starts() -> None:
    assert clip_starts(100, 40, 10) == [0, 40, 60]  # 20 left over >= a quarter: an end-aligned clip
    assert clip_starts(85, 40, 10) == [0, 40]  # 5 left over: dropped
    assert clip_starts(30, 40, 10) == [0]  # shorter than a clip but at least half: padded
    assert clip_starts(10, 40, 10) == []
    starts = clip_starts(1000, 10, 4)
    assert starts[0] == 0 and starts[-1] == 990 and len(starts) == 4


def test_midi_writer_releases_every_note(tmp_path: Path) -> None:
    # music21's own export once left chord notes hanging, which made FluidSynth render forever:
    # overlapping notes on one key must still all be released.
    notes = [
        MidiNote(0.0, 1.0, 60, 90, 0, 52),
        MidiNote(0.5, 1.5, 60, 90, 0, 52),  # same key, overlapping
        MidiNote(1.5, 2.0, 64, 80, 0, 52),
        MidiNote(1.5, 2.0, 64, 80, 1, 19),  # same key on another channel
    ]
    mid = tmp_path / "t.mid"
    write_midi(mid, notes)
    from music21 import midi

    mf = midi.MidiFile()
    mf.open(str(mid))
    mf.read()
    mf.close()
    for track in mf.tracks[1:]:
        active: dict[int | None, int] = {}
        for ev in track.events:
            if ev.isDeltaTime():
                continue
            if ev.type == midi.ChannelVoiceMessages.NOTE_ON:
                active[ev.pitch] = active.get(ev.pitch, 0) + 1
                assert active[ev.pitch] == 1, "two notes on one key at once"
            elif ev.type == midi.ChannelVoiceMessages.NOTE_OFF:
                active[ev.pitch] -= 1
        assert not any(active.values())
    audio = scores.render_midi(mid, 22050, sources.DEFAULT_SOUNDFONT, timeout=30)
    assert 2.0 < len(audio) / 22050 < 10.0  # the notes plus the release and reverb, not forever


def test_tune_played_again_until_long_enough() -> None:
    notes = [MidiNote(0.0, 1.0, 60, 90, 0, 110), MidiNote(1.0, 2.0, 62, 90, 0, 110)]
    again = scores.play_again(notes, 2.0, 5.0)
    assert [n.start for n in again] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert scores.play_again(notes, 2.0, 100.0, most=3)[-1].end == 6.0
    assert scores.play_again(notes, 10.0, 5.0) == notes


def test_missing_soundfont_is_explained(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="apt-get install -y fluid-soundfont-gm"):
        build_corpus(tmp_path, soundfont=tmp_path / "none.sf2", max_pieces=1, progress=False)


def test_pack_refuses_bad_input(small: Path, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="between 0 and 1"):
        corpus_pack.pack_corpus(small, tmp_path / "x.tar", quality=-0.1)
    with pytest.raises(CorpusError, match="not a built corpus"):
        corpus_pack.pack_corpus(tmp_path, tmp_path / "x.tar")


def test_pack_makes_small_ogg_tar(small: Path, tmp_path: Path) -> None:
    tar_path = tmp_path / "corpus.tar"
    info = corpus_pack.pack_corpus(small, tar_path)
    rows = _labels(small)
    assert info["clips"] == len(rows)
    flac_bytes = sum((small / r["file"]).stat().st_size for r in rows)
    assert tar_path.stat().st_size < flac_bytes / 3
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
        assert {"corpus/labels.csv", "corpus/corpus.json"} <= names
        tar.extractall(tmp_path / "x", filter="data")
    packed = _labels(tmp_path / "x" / "corpus")
    assert [p["file"] for p in packed] == [r["file"].replace(".flac", ".ogg") for r in rows]
    assert [p["lyrics"] for p in packed] == [r["lyrics"] for r in rows]
    audio, rate = sf.read(tmp_path / "x" / "corpus" / packed[0]["file"], dtype="float32")
    original, _ = sf.read(small / rows[0]["file"], dtype="float32")
    assert rate == 22050 and abs(len(audio) - len(original)) < 2048
    n = min(len(audio), len(original))
    corr = np.corrcoef(audio[:n], original[:n])[0, 1]
    assert corr > 0.9  # lossy, but the same music


def test_module_entry_builds(tmp_path: Path) -> None:
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "engine.cli", "corpus", "build", "--out", str(out), "--max-pieces", "1"]
    cmd += ["--seconds-per-clip", "3", "--workers", "1"]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[1]
    )
    assert proc.returncode == 0, proc.stderr
    rows = _labels(out)
    assert rows and {r["artist"] for r in rows} == {"bach"}
    assert "clips from 1 pieces" in proc.stderr
