"""Checkpoint download (mirrors, resume, SHA-256, licence) against a local fake host, and strict
loading of original-format files (fp16, `module.` prefixes, legacy and zip formats, `hps`), with
clear errors for truncated, wrong and unsafe files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from db.settings import Settings
from engine.model.checkpoint_download import (
    LICENSE_NOTICE,
    RELEASED_KNOWN,
    DownloadError,
    KnownFile,
    fetch,
    fetch_released,
    released_files,
)
from engine.model.checkpoints import CheckpointError, hparams_of, load_into, read_checkpoint
from engine.model.config import tiny_config
from engine.model.jukebox import load_model
from engine.model.manifests import Manifest, sha256_file
from engine.model.prior import JukeboxPrior
from engine.model.vqvae import VQVAE
from tests.fakes.model_hub import ModelHub, serve_model_hub

REL = "jukebox/models/5b/vqvae.pth.tar"
PAYLOAD = os.urandom(300_000)


@pytest.fixture
def hub() -> Iterator[ModelHub]:
    with serve_model_hub({REL: PAYLOAD}) as h:
        yield h


def _fetch(tmp_path: Path, mirrors: list[str], **kw: Any) -> Path:
    kw.setdefault("known", {})  # PAYLOAD is not OpenAI's file: these tests check the manifest alone
    return fetch(REL, cache_dir=tmp_path / "cache", mirrors=mirrors, progress=False, backoff=0.0, **kw)


def _manifest(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "cache" / "manifest.json").read_text())


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


# --- download --------------------------------------------------------------------------------------


def test_first_download_records_sha256_and_later_calls_use_the_cache(hub: ModelHub, tmp_path: Path) -> None:
    seen: list[str] = []
    path = _fetch(tmp_path, [hub.url], notice=seen.append)
    assert path.read_bytes() == PAYLOAD and not path.with_name(path.name + ".part").exists()
    entry = _manifest(tmp_path)[REL]
    assert entry["sha256"] == sha256_file(path) and entry["source"] == hub.url + REL
    assert seen == [LICENSE_NOTICE]  # the noncommercial licence is shown when weights are fetched
    assert _fetch(tmp_path, [hub.url], notice=seen.append) == path
    assert len(hub.gets()) == 1 and seen == [LICENSE_NOTICE]


def test_a_cut_download_resumes_with_a_range_request(hub: ModelHub, tmp_path: Path) -> None:
    hub.cut_next(2, at=0.4)
    path = _fetch(tmp_path, [hub.url])
    assert path.read_bytes() == PAYLOAD
    gets = hub.gets(REL)
    assert len(gets) == 3
    assert gets[0][2] is None  # whole file, cut at 40 %
    first_cut = int(len(PAYLOAD) * 0.4)
    assert gets[1][2] == f"bytes={first_cut}-" and gets[1][3] == 206
    assert gets[2][2] is not None and int(gets[2][2][6:-1]) > first_cut


def test_a_part_file_left_by_a_killed_process_is_resumed(hub: ModelHub, tmp_path: Path) -> None:
    part = tmp_path / "cache" / (REL + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:1000])
    assert _fetch(tmp_path, [hub.url]).read_bytes() == PAYLOAD
    assert hub.gets(REL)[0][2] == "bytes=1000-"


def test_server_errors_are_retried(hub: ModelHub, tmp_path: Path) -> None:
    hub.fail_next(2, status=503)
    assert _fetch(tmp_path, [hub.url], attempts=3).read_bytes() == PAYLOAD
    assert [g[3] for g in hub.gets()] == [503, 503, 200]


def test_mirrors_are_tried_in_order(tmp_path: Path) -> None:
    empty_folder = tmp_path / "user-mirror"
    empty_folder.mkdir()
    with serve_model_hub({}) as cdn, serve_model_hub({REL: PAYLOAD}) as origin:
        path = _fetch(tmp_path, [str(empty_folder), cdn.url, origin.url])
        assert path.read_bytes() == PAYLOAD
        assert [g[3] for g in cdn.gets()] == [404]  # a 404 is not retried
        assert len(origin.gets()) == 1
        assert _manifest(tmp_path)[REL]["source"] == origin.url + REL


def test_a_local_folder_mirror_is_copied(tmp_path: Path) -> None:
    folder = tmp_path / "weights" / "5b"
    folder.mkdir(parents=True)
    (folder / "vqvae.pth.tar").write_bytes(PAYLOAD)  # laid out without the jukebox/models/ prefix
    assert _fetch(tmp_path, [str(tmp_path / "weights"), "https://unused.invalid/"]).read_bytes() == PAYLOAD


def test_all_mirrors_failing_names_each_url_and_why(tmp_path: Path) -> None:
    dead = _closed_port_url()
    with serve_model_hub({}) as missing, serve_model_hub({REL: PAYLOAD}) as flaky:
        flaky.fail_next(10, status=500)
        with pytest.raises(DownloadError) as err:
            _fetch(tmp_path, [missing.url, flaky.url, dead], attempts=2, timeout=5)
    text = str(err.value)
    assert f"could not download {REL}" in text
    assert f"{missing.url}{REL}: HTTP 404" in text
    assert f"{flaky.url}{REL}: HTTP 500" in text
    assert f"{dead}{REL}: cannot connect" in text


def test_a_different_file_is_downloaded_again_once_then_refused(hub: ModelHub, tmp_path: Path) -> None:
    path = _fetch(tmp_path, [hub.url])
    recorded = _manifest(tmp_path)[REL]["sha256"]
    path.unlink()
    hub.files[REL] = b"not the same weights" * 1000
    with pytest.raises(CheckpointError, match=f"{REL}: downloaded twice and its SHA-256") as err:
        _fetch(tmp_path, [hub.url])
    assert recorded in str(err.value)
    assert len(hub.gets()) == 3 and not path.exists()


def test_a_cached_file_that_changed_is_fetched_again(hub: ModelHub, tmp_path: Path) -> None:
    path = _fetch(tmp_path, [hub.url])
    path.write_bytes(PAYLOAD[:-10] + b"corrupted!")  # same size, different time and content
    os.utime(path, ns=(1, 1))
    assert _fetch(tmp_path, [hub.url]).read_bytes() == PAYLOAD
    assert len(hub.gets()) == 2


def test_fetch_released_uses_settings_and_shows_the_licence_once(tmp_path: Path) -> None:
    files = released_files("1b_lyrics")
    with serve_model_hub({rel: rel.encode() * 100 for rel in files.values()}) as cdn:
        settings = Settings(model_cache_dir=tmp_path / "cache", model_mirrors=[cdn.url], model_url=None)
        seen: list[str] = []
        paths = fetch_released("1b_lyrics", settings=settings, progress=False, notice=seen.append, known={})
    assert set(paths) == {"vqvae", "prior_level_0", "prior_level_1", "prior_level_2"}
    assert paths["prior_level_2"] == tmp_path / "cache" / "jukebox/models/1b_lyrics/prior_level_2.pth.tar"
    assert seen == [LICENSE_NOTICE]
    with pytest.raises(KeyError, match="unknown released model"):
        released_files("7b")


def test_a_substitute_for_openais_vqvae_is_refused_by_the_shipped_table(tmp_path: Path) -> None:
    """The report: JUKEBOT_MODEL_URL pointed at a folder with a 1.6 kB vqvae, recorded as good."""
    folder = tmp_path / "elsewhere" / "5b"
    folder.mkdir(parents=True)
    (folder / "vqvae.pth.tar").write_bytes(os.urandom(1600))
    settings = Settings(
        model_cache_dir=tmp_path / "cache", model_url=str(tmp_path / "elsewhere"), model_mirrors=[]
    )
    with pytest.raises(CheckpointError, match="OpenAI's file has 69745413"):
        fetch_released("5b", ["vqvae"], settings=settings, progress=False, notice=lambda _: None)
    assert not (tmp_path / "cache" / REL).exists()
    assert REL not in Manifest(tmp_path / "cache").entries
    assert RELEASED_KNOWN[REL].sha256 and RELEASED_KNOWN[released_files("5b")["prior_level_2"]].size


def _known(payload: bytes) -> dict[str, KnownFile]:
    return {REL: KnownFile(size=len(payload), sha256=hashlib.sha256(payload).hexdigest())}


def test_the_known_file_is_accepted_and_anything_else_refused(hub: ModelHub, tmp_path: Path) -> None:
    assert _fetch(tmp_path, [hub.url], known=_known(PAYLOAD)).read_bytes() == PAYLOAD
    hub.files[REL] = os.urandom(len(PAYLOAD))  # same size, other bytes
    with pytest.raises(CheckpointError, match="SHA-256"):
        _fetch(tmp_path / "b", [hub.url], known=_known(PAYLOAD))
    hub.files[REL] = PAYLOAD[:1600]  # a small stand-in
    with pytest.raises(CheckpointError, match=f"1600 bytes, OpenAI's file is {len(PAYLOAD)}"):
        _fetch(tmp_path / "c", [hub.url], known=_known(PAYLOAD))
    assert not (tmp_path / "c" / "cache" / REL).exists()


def test_a_substitute_the_manifest_recorded_as_good_is_replaced(hub: ModelHub, tmp_path: Path) -> None:
    cached = tmp_path / "cache" / REL
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x" * 1600)
    Manifest(tmp_path / "cache").record(REL, cached, sha256_file(cached), "a stranger's folder")
    assert _fetch(tmp_path, [hub.url], known=_known(PAYLOAD)).read_bytes() == PAYLOAD
    assert _manifest(tmp_path)[REL]["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()


# --- loading ---------------------------------------------------------------------------------------


class Hyperparams(dict):  # pickled under the original's module name, like OpenAI's files
    def __getattr__(self, attr: str) -> Any:
        return self[attr]


def _save_like_openai(path: Path, sd: dict[str, torch.Tensor], *, legacy: bool, half_w: bool) -> None:
    fake = types.ModuleType("jukebox.hparams")
    Hyperparams.__module__ = "jukebox.hparams"
    fake.Hyperparams = Hyperparams  # type: ignore[attr-defined]
    sys.modules["jukebox"] = types.ModuleType("jukebox")
    sys.modules["jukebox.hparams"] = fake
    try:
        model = {"module." + k: (v.half() if half_w and k.endswith(".w") else v) for k, v in sd.items()}
        hps = Hyperparams(prior_width=32, y_bins=(2, 3))
        torch.save(
            {"hps": hps, "model": model, "step": 12, "opt": {"state": {}}},
            path,
            _use_new_zipfile_serialization=not legacy,
        )
    finally:
        del sys.modules["jukebox"], sys.modules["jukebox.hparams"]
        Hyperparams.__module__ = __name__


@pytest.mark.parametrize("legacy", [True, False])
def test_original_files_load_strictly(tmp_path: Path, legacy: bool) -> None:
    cfg = tiny_config(lyrics="prefix")
    src = JukeboxPrior(cfg.top, cfg.vqvae)
    path = tmp_path / "prior_level_2.pth.tar"
    _save_like_openai(path, src.state_dict(), legacy=legacy, half_w=True)
    ckpt = read_checkpoint(path)
    assert hparams_of(ckpt) == {"prior_width": 32, "y_bins": (2, 3)} and ckpt["step"] == 12
    dst = JukeboxPrior(cfg.top, cfg.vqvae)
    load_into(dst, path)
    for k, v in src.state_dict().items():
        want = v.half().float() if k.endswith(".w") else v  # fp16 weights in the file
        assert torch.equal(dst.state_dict()[k], want), k
    assert dst.prior.x_out.weight is dst.prior.x_emb.weight  # still tied


def test_a_truncated_file_is_named(tmp_path: Path) -> None:
    cfg = tiny_config()
    vq = VQVAE(cfg.vqvae)
    buf = io.BytesIO()
    torch.save({"model": vq.state_dict()}, buf)
    path = tmp_path / "vqvae.pth.tar"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(CheckpointError, match=r"vqvae\.pth\.tar: cannot read this checkpoint.*truncated"):
        load_into(VQVAE(cfg.vqvae), path)


def test_a_wrong_checkpoint_lists_expected_and_found_shapes(tmp_path: Path) -> None:
    big, small = tiny_config(width=48), tiny_config(width=32)
    path = tmp_path / "prior_level_0.pth.tar"
    torch.save({"model": JukeboxPrior(big.priors[0], big.vqvae).state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_into(JukeboxPrior(small.priors[0], small.vqvae), path, "level-0 prior of tiny")
    text = str(err.value)
    assert str(path) in text and "does not fit the level-0 prior of tiny" in text
    assert "47 tensors have other shapes" in text
    assert "conditioner_blocks.0.x_emb.weight: expected [64, 32], found [64, 48]" in text

    # A prior file where the VQ-VAE belongs: the missing and unexpected keys are named.
    with pytest.raises(CheckpointError, match=r"expected tensors are missing: encoders\.0"):
        load_into(VQVAE(small.vqvae), path, "VQ-VAE")


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth.tar"
    with open(path, "wb") as f:
        pickle.dump({"model": {}, "hps": _Evil()}, f)
    with pytest.raises(CheckpointError, match=r"holds \w+\.system, which is not allowed") as err:
        read_checkpoint(path)
    assert "truncated" not in str(err.value)  # the file is whole: do not tell people to delete it


def test_load_model_from_a_folder_with_model_json(tmp_path: Path) -> None:
    cfg = tiny_config(lyrics="separate")
    cfg.save(tmp_path / "model.json")
    torch.save({"model": VQVAE(cfg.vqvae).state_dict()}, tmp_path / "vqvae.pth.tar")
    priors = [JukeboxPrior(p, cfg.vqvae) for p in cfg.priors]
    for level, p in enumerate(priors):
        torch.save({"model": p.state_dict()}, tmp_path / f"prior_level_{level}.pth.tar")
    model = load_model(tmp_path, device="cpu", dtype=torch.bfloat16, levels=[2])
    assert model.priors[0] is None and model.priors[2] is not None
    assert model.priors[2].prior.x_emb.weight.dtype == torch.bfloat16
    assert model.vqvae.bottleneck[0].k.dtype == torch.float32  # the VQ-VAE stays float32
    model.unload_level(2)
    model.load_level(1)
    assert [p is not None for p in model.priors] == [False, True, False]
    with pytest.raises(RuntimeError, match="level 0 is not loaded"):
        model.prior(0)
    (tmp_path / "prior_level_0.pth.tar").write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match=r"prior_level_0\.pth\.tar: cannot read"):
        model.load_level(0)


# --- the manifest of a trained model folder -------------------------------------------------------


def test_a_trained_folder_refuses_files_that_changed_since(tmp_path: Path) -> None:
    from engine.model.manifests import record_model_file
    from tests.pipeline_fixtures import write_tiny_model

    folder = write_tiny_model(tmp_path / "model")
    assert load_model(folder).priors[2] is not None  # no manifest (older folders, the demo): loaded
    names = ["model.json", "vqvae.pth.tar", *(f"prior_level_{i}.pth.tar" for i in range(3))]
    for name in names:
        record_model_file(folder, name)
    assert load_model(folder).priors[2] is not None

    # A VQ-VAE of the same shapes from another run (the swap of issue #14: a file that loads fine).
    other = write_tiny_model(tmp_path / "other", seed=1)
    good = (folder / "vqvae.pth.tar").read_bytes()
    (folder / "vqvae.pth.tar").write_bytes((other / "vqvae.pth.tar").read_bytes())
    with pytest.raises(CheckpointError, match=r"vqvae\.pth\.tar is not the file `jukebot train` wrote"):
        load_model(folder)
    (folder / "vqvae.pth.tar").write_bytes(good)

    cfg = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**cfg, "name": "renamed"}))
    with pytest.raises(CheckpointError, match=r"model\.json is not the file"):
        load_model(folder)
    (folder / "model.json").write_text(json.dumps(cfg, indent=1) + "\n")
    record_model_file(folder, "model.json")

    (folder / "sampling.json").write_text('{"temperatures": [0.99, 0.99, 0.98]}')  # added by hand
    assert load_model(folder).priors[2] is not None  # not listed: not checked

    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"manifest\.json is damaged"):
        load_model(folder)
