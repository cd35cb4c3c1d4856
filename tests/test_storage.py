"""db.storage: keys, atomic writes under a concurrent reader, local and memory:// URLs, bad URLs."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from pathlib import Path

import pytest

from db.settings import Settings
from db.storage import Storage, StorageUnavailable, check_key, get_storage


@pytest.fixture(params=["local", "memory"])
def any_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return Storage(tmp_path / "store")
    return Storage(f"memory://jukebot-test-{uuid.uuid4().hex}")


def test_round_trip_list_delete(any_storage: Storage) -> None:
    s = any_storage
    s.write_bytes("songs/1/draft-0.wav", b"RIFF0")
    s.write_bytes("songs/1/draft-1.wav", b"RIFF1")
    s.write_bytes("songs/2/clip.wav", b"RIFF2")
    s.write_bytes("songs/1/draft-0.wav", b"RIFF0-new")  # overwrite
    assert s.read_bytes("songs/1/draft-0.wav") == b"RIFF0-new"
    assert s.list() == ["songs/1/draft-0.wav", "songs/1/draft-1.wav", "songs/2/clip.wav"]
    assert s.list("songs/1") == ["songs/1/draft-0.wav", "songs/1/draft-1.wav"]
    assert s.list("songs/1/") == s.list("songs/1")
    assert s.list("nothing/here") == []
    assert s.exists("songs/2/clip.wav") and not s.exists("songs/2")
    assert s.size("songs/2/clip.wav") == 5
    assert s.delete("songs/2/clip.wav") is True
    assert s.delete("songs/2/clip.wav") is False
    with pytest.raises(FileNotFoundError, match=r"Nothing is stored under 'songs/2/clip\.wav'"):
        s.read_bytes("songs/2/clip.wav")


def test_local_path_only_for_local_storage(tmp_path: Path) -> None:
    local = Storage(tmp_path / "store")
    local.write_bytes("a/b.wav", b"x")
    path = local.local_path("a/b.wav")
    assert path == (tmp_path / "store" / "a" / "b.wav").resolve() and path.read_bytes() == b"x"
    assert Storage("memory://somewhere").local_path("a/b.wav") is None


def test_write_file(any_storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "render.mp3"
    src.write_bytes(b"ID3 fake mp3 bytes")
    any_storage.write_file("clips/3.mp3", src)
    assert any_storage.read_bytes("clips/3.mp3") == b"ID3 fake mp3 bytes"


@pytest.mark.parametrize(
    "key",
    [
        "",
        " ",
        "../etc/passwd",
        "a/../../b",
        "/etc/passwd",
        "a//b",
        "./a",
        "a/./b",
        "a/..",
        "..",
        "a\\..\\b",
        "..\\x",
        "C:/Windows/x",
        "~/secret",
        "s3://bucket/x",
        "a\x00b",
        "a/b\n",
    ],
)
def test_keys_cannot_escape_the_root(any_storage: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="is not allowed"):
        any_storage.write_bytes(key, b"x")
    with pytest.raises(ValueError):
        any_storage.read_bytes(key)
    with pytest.raises(ValueError):
        any_storage.exists(key)


def test_nothing_is_written_outside_the_root(tmp_path: Path) -> None:
    s = Storage(tmp_path / "root")
    for key in ("../outside.txt", "/tmp/outside.txt", "a/../../outside.txt"):
        with pytest.raises(ValueError):
            s.write_bytes(key, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    assert check_key("songs/1/draft-0.wav") == "songs/1/draft-0.wav"
    with pytest.raises(ValueError):
        s.list("../")


def _hammer_reader(root: str, key: str, sizes: list[int], stop: threading.Event, seen: list[str]) -> None:
    s = Storage(root)
    while not stop.is_set():
        try:
            data = s.read_bytes(key)
        except FileNotFoundError:
            seen.append("missing")
            continue
        # Each version is one repeated byte of a known length: a torn read shows as a mix or a short file.
        if len(data) not in sizes or data.count(data[:1]) != len(data):
            seen.append(f"TORN len={len(data)}")
        else:
            seen.append("ok")


def test_a_reader_never_sees_half_a_file(any_storage: Storage) -> None:
    key = "songs/9/clip.wav"
    versions = [bytes([65 + i]) * (2_000_000 + i * 333_333) for i in range(4)]
    any_storage.write_bytes(key, versions[0])
    stop = threading.Event()
    seen: list[str] = []
    # memory:// lives in this process, so the reader shares the Storage's filesystem object.
    reader = threading.Thread(
        target=_hammer_reader, args=(any_storage.url, key, [len(v) for v in versions], stop, seen)
    )
    reader.start()
    try:
        for i in range(40):
            any_storage.write_bytes(key, versions[i % len(versions)])
    finally:
        stop.set()
        reader.join()
    assert seen, "the reader never ran"
    assert [x for x in seen if x != "ok"] == []
    assert any_storage.list("songs/9") == [key]  # no temporary files left behind


def _reader_process(
    root: str, key: str, sizes: list[int], seconds: float, out: multiprocessing.Queue
) -> None:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    seen: list[str] = []
    _hammer_reader(root, key, sizes, stop, seen)
    out.put(seen)


def test_a_reader_in_another_process_never_sees_half_a_file(tmp_path: Path) -> None:
    s = Storage(tmp_path / "store")
    key = "codes/1.npz"
    versions = [bytes([97 + i]) * (3_000_000 + i * 500_000) for i in range(3)]
    s.write_bytes(key, versions[0])
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    proc = ctx.Process(target=_reader_process, args=(s.root, key, [len(v) for v in versions], 3.0, out))
    proc.start()
    i = 0
    while proc.is_alive() and out.empty():
        s.write_bytes(key, versions[i % len(versions)])
        i += 1
    seen = out.get(timeout=30)
    proc.join(30)
    assert len(seen) > 5 and i > 5
    assert [x for x in seen if x != "ok"] == []


def test_unknown_protocol_is_a_clear_error() -> None:
    with pytest.raises(StorageUnavailable) as err:
        Storage("nosuchproto://bucket/x")
    assert "The storage URL 'nosuchproto://bucket/x' cannot be used" in str(err.value)
    assert "Protocol not known: nosuchproto" in str(err.value)
    assert "JUKEBOT_STORAGE_URL" in str(err.value)


def test_protocol_without_its_package_says_what_to_install() -> None:
    with pytest.raises(StorageUnavailable) as err:
        Storage("gcs://bucket/jukebot")  # gcsfs is not installed (s3fs is, for tests/test_multihost.py)
    assert "needs a package that is not installed" in str(err.value)
    assert "gcsfs" in str(err.value)


def test_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file, not a folder")
    with pytest.raises(StorageUnavailable) as err:
        Storage(blocker / "store")
    assert f"Cannot create the storage folder {blocker / 'store'}" in str(err.value)
    with pytest.raises(StorageUnavailable, match="storage URL is empty"):
        Storage("")


def test_get_storage_uses_the_settings(tmp_path: Path) -> None:
    settings = Settings(storage_url=str(tmp_path / "from-settings"), _env_file=None)  # type: ignore[call-arg]
    s = get_storage(settings)
    s.write_bytes("x.bin", b"1")
    assert (tmp_path / "from-settings" / "x.bin").read_bytes() == b"1"


def test_storage_fixture_is_a_temp_folder(storage: Storage, tmp_path: Path) -> None:
    storage.write_bytes("a.txt", b"hello")
    assert storage.local_path("a.txt") == (tmp_path / "storage" / "a.txt").resolve()
