"""The training dataset: labelled audio folders -> deterministic crops; bad files skipped with reasons."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from db.audio import ffmpeg
from engine.training.dataset import (
    AudioDataset,
    CropSampler,
    DatasetError,
    load_audio,
    read_labels,
    resample,
    scan_labels,
)

SR = 22050


def tone(freq: float, seconds: float, rate: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_csv(root: Path, rows: list[tuple[str, str, str, str]], extra_header: str = "") -> None:
    import csv

    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "artist", "genre", "lyrics"])
        w.writerows(rows)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A user's folder: two good songs (one stereo FLAC at 44.1 kHz), a truncated WAV, a file not in
    labels.csv, a row without an artist and a row whose file is missing."""
    (tmp_path / "songs").mkdir()
    sf.write(tmp_path / "songs" / "a.wav", tone(440, 3.0), SR, subtype="PCM_16")
    stereo = np.stack([tone(660, 2.0, 44100), tone(660, 2.0, 44100)], axis=1)
    sf.write(tmp_path / "songs" / "b.flac", stereo, 44100)
    sf.write(tmp_path / "cut.wav", tone(330, 3.0), SR, subtype="PCM_16")
    data = (tmp_path / "cut.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    sf.write(tmp_path / "stray.wav", tone(220, 1.0), SR, subtype="PCM_16")
    sf.write(tmp_path / "nolabel.wav", tone(550, 1.0), SR, subtype="PCM_16")
    write_csv(
        tmp_path,
        [
            ("songs/a.wav", "Ada", "folk", "la la la"),
            ("songs/b.flac", "Bo", "jazz", ""),
            ("cut.wav", "Ada", "folk", ""),
            ("nolabel.wav", "", "folk", ""),
            ("gone.wav", "Ada", "folk", ""),
        ],
    )
    return tmp_path


def test_user_folder_skips_bad_files_with_reasons(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jukebot.dataset"):
        ds = AudioDataset(folder, sample_rate=SR, sample_length=SR)
    assert [f.file for f in ds.files] == ["songs/a.wav", "songs/b.flac"]
    reasons = {s.file: s.reason for s in ds.skipped}
    assert set(reasons) == {"cut.wav", "stray.wav", "nolabel.wav", "gone.wav"}
    assert "truncated" in reasons["cut.wav"]
    assert "no labels" in reasons["stray.wav"] and "labels.csv" in reasons["stray.wav"]
    assert "unlabeled" in reasons["nolabel.wav"] and "artist" in reasons["nolabel.wav"]
    assert "missing" in reasons["gone.wav"]
    # One message per file, naming the file and the reason.
    for file, reason in reasons.items():
        hits = [r for r in caplog.records if r.getMessage() == f"Skipping {file}: {reason}"]
        assert len(hits) == 1, file
    assert "4 skipped" in ds.summary() and "cut.wav" in ds.summary()
    assert ds.artists == ["Ada", "Bo"] and ds.genres == ["folk", "jazz"]
    # The 44.1 kHz stereo FLAC was mixed down and resampled: 2 s at 22.05 kHz.
    b = ds.files[1]
    assert abs(len(b.audio) - 2 * SR) <= 1


def test_crops_and_labels(folder: Path) -> None:
    ds = AudioDataset(folder, sample_rate=SR, sample_length=SR // 2, artists=["unknown", "bo", "ada"])
    assert len(ds) == (3 * SR + 2 * SR) // (SR // 2)
    seen = set()
    for i in range(40):
        item = ds[i]
        assert item["audio"].shape == (SR // 2, 1) and item["audio"].dtype == torch.float32
        assert float(item["audio"].abs().max()) > 0.3
        seen.add(item["file"])
        if item["file"] == "songs/a.wav":
            assert (item["artist_id"], item["genre_id"], item["lyrics"]) == (2, 0, "la la la")
        else:
            assert (item["artist_id"], item["genre_id"], item["lyrics"]) == (1, 1, "")
        assert 0 <= item["offset"] <= item["total_length"] - SR // 2
        assert item["sample_length"] == SR // 2 and item["index"] == i
        # The crop is the file's audio at that offset.
        f = next(f for f in ds.files if f.file == item["file"])
        expect = f.audio[item["offset"] : item["offset"] + SR // 2].astype(np.float32) / 32768
        assert np.allclose(item["audio"][:, 0].numpy(), expect)
    assert seen == {"songs/a.wav", "songs/b.flac"}


def test_unknown_artist_maps_to_unknown_or_is_skipped(folder: Path) -> None:
    ds = AudioDataset(folder, sample_rate=SR, sample_length=SR, artists=["unknown", "Ada"])
    assert {f.file: f.artist_id for f in ds.files} == {"songs/a.wav": 1, "songs/b.flac": 0}
    ds = AudioDataset(folder, sample_rate=SR, sample_length=SR, artists=["Ada"], genres=["folk"])
    reasons = {s.file: s.reason for s in ds.skipped}
    assert "no artist 'Bo'" in reasons["songs/b.flac"] and "Ada" in reasons["songs/b.flac"]


def test_short_files_are_padded(tmp_path: Path) -> None:
    sf.write(tmp_path / "s.wav", tone(440, 1.0), SR)
    write_csv(tmp_path, [("s.wav", "a", "g", "")])
    ds = AudioDataset(tmp_path, sample_rate=SR, sample_length=2 * SR)
    item = ds[0]
    assert item["offset"] == 0 and item["total_length"] == SR
    assert float(item["audio"][SR + 10 :].abs().max()) == 0.0
    assert float(item["audio"][: SR - 10].abs().max()) > 0.3


def test_crops_are_deterministic_and_resume_exactly(folder: Path) -> None:
    a = AudioDataset(folder, sample_rate=SR, sample_length=4000, seed=7)
    b = AudioDataset(folder, sample_rate=SR, sample_length=4000, seed=7)
    c = AudioDataset(folder, sample_rate=SR, sample_length=4000, seed=8)
    assert [a.crop_position(i) for i in range(20)] == [b.crop_position(i) for i in range(20)]
    assert [a.crop_position(i) for i in range(20)] != [c.crop_position(i) for i in range(20)]

    def batches(ds: AudioDataset, sampler: CropSampler, n: int) -> list[torch.Tensor]:
        loader = DataLoader(ds, batch_size=3, sampler=sampler)
        out = []
        for batch in loader:
            out.append(batch["audio"])
            sampler.advance(3)
            if len(out) == n:
                break
        return out

    straight = batches(a, CropSampler(), 6)
    first = CropSampler()
    batches(a, first, 2)
    state = first.state_dict()
    assert state["position"] == 6
    resumed = CropSampler()
    resumed.load_state_dict(json.loads(json.dumps(state)))  # as stored in a checkpoint
    after = batches(b, resumed, 4)
    assert all(torch.equal(x, y) for x, y in zip(straight[2:], after, strict=True))

    # Two processes share the numbers without overlap.
    r0 = list(iter(CropSampler(num_samples=4, rank=0, world_size=2)))
    r1 = list(iter(CropSampler(num_samples=4, rank=1, world_size=2)))
    assert r0 == [0, 2, 4, 6] and r1 == [1, 3, 5, 7]
    with pytest.raises(ValueError, match="2 processes"):
        CropSampler().load_state_dict({"position": 4, "world_size": 2})


def test_batches_collate_labels(folder: Path) -> None:
    ds = AudioDataset(folder, sample_rate=SR, sample_length=1000)
    batch = next(iter(DataLoader(ds, batch_size=4, sampler=CropSampler(num_samples=4))))
    assert batch["audio"].shape == (4, 1000, 1)
    assert batch["artist_id"].dtype == torch.int64 and batch["offset"].shape == (4,)
    assert isinstance(batch["lyrics"], list) and len(batch["lyrics"]) == 4


def test_corpus_labels_with_timing_and_split(tmp_path: Path) -> None:
    sf.write(tmp_path / "p_000.flac", tone(440, 2.0), SR)
    sf.write(tmp_path / "p_001.flac", tone(440, 2.0), SR)
    sf.write(tmp_path / "q_000.flac", tone(550, 2.0), SR)
    (tmp_path / "labels.csv").write_text(
        "file,artist,genre,lyrics,seconds,offset_seconds,total_seconds,source,split\n"
        'p_000.flac,bach,chorale,"Wie schön, leuchtet",2.0,0.0,10.0,bach/x.mxl,train\n'
        "p_001.flac,bach,chorale,der Morgenstern,2.0,6.0,10.0,bach/x.mxl,train\n"
        "q_000.flac,haydn,string quartet,,2.0,0.0,2.0,haydn/y.mxl,test\n",
        encoding="utf-8",
    )
    train = AudioDataset(tmp_path, sample_rate=SR, sample_length=SR)
    assert [f.file for f in train.files] == ["p_000.flac", "p_001.flac"] and not train.skipped
    f = train.files[1]
    assert (f.offset, f.total_length, f.lyrics) == (6 * SR, 10 * SR, "der Morgenstern")
    for i in range(10):
        item = train[i]
        if item["file"] == "p_001.flac":
            assert 6 * SR <= item["offset"] <= 7 * SR and item["total_length"] == 10 * SR
    test = AudioDataset(tmp_path, sample_rate=SR, sample_length=SR, split="test")
    assert [f.file for f in test.files] == ["q_000.flac"]
    both = AudioDataset(tmp_path, sample_rate=SR, sample_length=SR, split=None)
    assert [f.split for f in both.files] == ["train", "train", "test"]


def test_json_labels(tmp_path: Path) -> None:
    sf.write(tmp_path / "x.ogg", tone(440, 1.5), SR, format="OGG", subtype="VORBIS")
    (tmp_path / "labels.json").write_text(
        json.dumps({"x.ogg": {"artist": "Ada", "genre": "folk", "lyrics": "hey"}}), encoding="utf-8"
    )
    ds = AudioDataset(tmp_path, sample_rate=SR, sample_length=SR)
    assert ds.files[0].lyrics == "hey" and abs(len(ds.files[0].audio) - 1.5 * SR) < 2
    assert scan_labels(tmp_path) == (["Ada"], ["folk"])
    (tmp_path / "labels.json").write_text(json.dumps([{"file": "x.ogg", "artist": "A", "genre": "g"}]))
    assert read_labels(tmp_path / "labels.json")["x.ogg"].artist == "A"


def test_folder_problems_are_explained(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"No labels file.*file,artist,genre,lyrics"):
        AudioDataset(tmp_path, sample_rate=SR, sample_length=SR)
    (tmp_path / "labels.csv").write_text("name,singer\nx.wav,Ada\n")
    with pytest.raises(DatasetError, match="missing: file, artist, genre"):
        AudioDataset(tmp_path, sample_rate=SR, sample_length=SR)
    (tmp_path / "labels.csv").write_text("file,artist,genre,lyrics\n../x.wav,Ada,folk,\n")
    with pytest.raises(DatasetError, match="inside the data folder"):
        AudioDataset(tmp_path, sample_rate=SR, sample_length=SR)
    sf.write(tmp_path / "bad.wav", tone(440, 1.0), SR)
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (tmp_path / "labels.csv").write_text("file,artist,genre,lyrics\nbad.wav,Ada,folk,\n")
    with pytest.raises(
        DatasetError,
        match=r"(?s)No usable audio.*bad.wav: the audio data is damaged or truncated \(Error in WAV file",
    ):
        AudioDataset(tmp_path, sample_rate=SR, sample_length=SR)
    with pytest.raises(DatasetError, match="does not exist"):
        AudioDataset(tmp_path / "nope", sample_rate=SR, sample_length=SR)


def test_truncated_compressed_files(tmp_path: Path) -> None:
    sf.write(tmp_path / "f.flac", tone(440, 3.0), SR)
    data = (tmp_path / "f.flac").read_bytes()
    (tmp_path / "f.flac").write_bytes(data[: len(data) // 2])
    sf.write(tmp_path / "o.ogg", tone(440, 3.0), SR, format="OGG", subtype="VORBIS")
    data = (tmp_path / "o.ogg").read_bytes()
    (tmp_path / "o.ogg").write_bytes(data[: len(data) // 2])
    sf.write(tmp_path / "ok.wav", tone(440, 1.0), SR)
    write_csv(tmp_path, [("f.flac", "a", "g", ""), ("o.ogg", "a", "g", ""), ("ok.wav", "a", "g", "")])
    ds = AudioDataset(tmp_path, sample_rate=SR, sample_length=SR)
    reasons = {s.file: s.reason for s in ds.skipped}
    assert set(reasons) == {"f.flac", "o.ogg"}
    assert "damaged or truncated" in reasons["f.flac"] or "truncated" in reasons["f.flac"]
    assert "truncated" in reasons["o.ogg"]


def test_other_formats_through_ffmpeg(tmp_path: Path) -> None:
    sf.write(tmp_path / "src.wav", tone(440, 2.0, 44100), 44100)
    subprocess.run(
        [ffmpeg(), "-v", "error", "-i", str(tmp_path / "src.wav"), "-c:a", "aac", str(tmp_path / "s.m4a")],
        check=True,
    )
    (tmp_path / "src.wav").unlink()
    (tmp_path / "junk.m4a").write_bytes(b"\x00" * 100)
    write_csv(tmp_path, [("s.m4a", "a", "g", ""), ("junk.m4a", "a", "g", "")])
    ds = AudioDataset(tmp_path, sample_rate=SR, sample_length=SR)
    assert [f.file for f in ds.files] == ["s.m4a"]
    assert abs(len(ds.files[0].audio) - 2 * SR) < SR // 10
    assert "not look like an audio file ffmpeg can read" in ds.skipped[0].reason


@pytest.mark.parametrize(("src", "dst"), [(44100, 22050), (48000, 22050), (16000, 22050)])
def test_resample_keeps_pitch_and_level(src: int, dst: int) -> None:
    x = tone(1000, 1.0, src)
    y = resample(x, src, dst)
    assert len(y) == int(np.ceil(len(x) * dst / src))
    mid = y[dst // 10 : -dst // 10]
    spectrum = np.abs(np.fft.rfft(mid * np.hanning(len(mid))))
    assert abs(np.argmax(spectrum) * dst / len(mid) - 1000) < 3
    assert abs(np.sqrt(np.mean(mid**2)) - 0.5 / np.sqrt(2)) < 0.01
    # Above the new Nyquist frequency is removed, not folded back.
    if dst < src:
        high = resample(tone(0.48 * src, 1.0, src), src, dst)[dst // 10 : -dst // 10]
        assert np.sqrt(np.mean(high**2)) < 0.01


def test_load_audio_mono_float(tmp_path: Path) -> None:
    sf.write(tmp_path / "x.wav", np.stack([tone(440, 0.5), -tone(440, 0.5)], 1), SR)
    y = load_audio(tmp_path / "x.wav", SR)
    assert y.dtype == np.float32 and y.ndim == 1 and np.abs(y).max() < 1e-3  # L and R cancel
