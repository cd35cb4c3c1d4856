"""The shipped demo model (engine/model/data/demo): small enough for the repository, loads with nothing to
download, knows the corpus's composers and forms, and makes a (short) song on a CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.model.config import DEMO_DIR, ModelConfig
from engine.model.labels import labels_for_model

PARTS = ("vqvae", "prior_level_0", "prior_level_1", "prior_level_2")


def test_the_demo_model_ships_in_the_package_under_40_mb() -> None:
    assert (DEMO_DIR / "model.json").is_file()
    sizes = {p: (DEMO_DIR / f"{p}.pth.tar").stat().st_size for p in PARTS}
    assert sum(sizes.values()) < 40 * 2**20, sizes
    cfg = ModelConfig.load(DEMO_DIR / "model.json")
    assert cfg.sample_rate == 22050 and cfg.vqvae.hop_lengths == (16, 64, 256)
    temps = json.loads((DEMO_DIR / "sampling.json").read_text())["temperatures"]
    assert len(temps) == 3 and all(0 < t <= 1 for t in temps)


def test_the_demo_labels_are_the_corpus_composers_and_forms() -> None:
    labels = labels_for_model("demo")
    assert {"bach", "mozart", "traditional"} <= set(labels.artists)
    assert {"chorale", "string quartet", "fiddle tune"} <= set(labels.genres)
    assert labels.artist_id("Bach") > 0 and labels.genre_word_ids("Chorale")[0] > 0


def test_the_demo_files_are_original_format_and_trained() -> None:
    from engine.model.checkpoints import read_checkpoint
    from engine.model.config import VQVAEConfig

    vq = read_checkpoint(DEMO_DIR / "vqvae.pth.tar")
    assert VQVAEConfig.from_hparams(vq["hps"]) == ModelConfig.load(DEMO_DIR / "model.json").vqvae
    assert vq["step"] > 500  # trained, not initialised
    for p in PARTS[1:]:
        ck = read_checkpoint(DEMO_DIR / f"{p}.pth.tar")
        assert ck["step"] > 500 and ck["hps"]["level"] == int(p[-1])


def test_the_demo_model_makes_a_short_song_on_cpu() -> None:
    from engine.sampling.pipeline import Engine, SongRequest, make_drafts, upsample

    torch.set_num_threads(1)
    engine = Engine.load("demo", device="cpu", progress=False)
    assert next(engine.model.prior(2).parameters()).dtype == torch.float32  # fp16 on disk, fp32 here
    req = SongRequest(artist="bach", genre="chorale", seconds=1.0, seed=3)
    drafts = make_drafts(engine, req, 2)
    assert drafts.codes.shape == (2, 22050 // 256)
    assert not np.array_equal(drafts.codes[0], drafts.codes[1])
    final = upsample(engine, req, drafts.codes[0], draft_index=0)
    audio = final.audio
    assert audio.shape == (22050 // 256 * 256,) and np.isfinite(audio).all()
    assert 0.001 < float(np.sqrt(np.mean(audio**2))) < 0.9  # neither silence nor clipping


@pytest.mark.parametrize("artist", ["Bachh", "nobody at all"])
def test_unknown_artists_get_suggestions(artist: str) -> None:
    from engine.model.labels import UnknownLabel

    with pytest.raises(UnknownLabel) as e:
        labels_for_model("demo").artist_id(artist)
    if artist == "Bachh":
        assert "bach" in e.value.suggestions
