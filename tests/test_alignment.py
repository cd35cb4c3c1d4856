"""Lyrics alignment (engine/sampling/alignment.py) against the original code's alignment attention.

Small lyric priors of both kinds (1b_lyrics-style prefix, 5b_lyrics-style separate encoder) are
built with the original code, given random weights, saved in its format and loaded into ours. The
attention of the alignment layer/head must equal what the original records in `z_forward(...,
get_attn_weights={alignment_layer})`, window by window and placed into the song like the original's
`get_alignment` does; character times and LRC files follow from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine.model.checkpoints import load_into
from engine.model.config import PriorConfig, VQVAEConfig
from engine.model.labels import Labeller, released_labels
from engine.model.prior import JukeboxPrior
from engine.sampling.alignment import (
    AlignmentError,
    alignment_record,
    character_times,
    labelled_inputs,
    lrc_text,
    song_alignment,
    window_attention,
)
from tests.engine_reference import (
    SMALL_PRIORS,
    SMALL_VQVAE,
    build_reference_prior,
    build_reference_vqvae,
    cpu_reference,
    one_thread,
    randomize_,
    save_original,
)

KINDS = ("prior_1b_lyrics", "prior_5b_lyrics")
LYRICS = "Here comes the sun\nlittle darling, it's been a long cold lonely winter\n\nhere it comes"
TOTAL = 30 * 44100


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Any:
    with one_thread():
        yield


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder: Path = tmp_path_factory.mktemp("lyric_models")
    vq = build_reference_vqvae(SMALL_VQVAE, 64 * 128)
    vq_cfg = VQVAEConfig.from_hparams(SMALL_VQVAE)
    out: dict[str, Any] = {}
    for i, kind in enumerate(KINDS):
        ref = build_reference_prior(SMALL_PRIORS[kind], vq)
        randomize_(ref, seed=30 + i)
        path = save_original(ref, folder / f"{kind}.pth.tar", hps=SMALL_PRIORS[kind])
        ours = JukeboxPrior(PriorConfig.from_hparams(SMALL_PRIORS[kind], l_bins=vq_cfg.l_bins), vq_cfg)
        load_into(ours, path, kind)
        out[kind] = (ref, ours.eval())
    return out


def _labeller(prior: JukeboxPrior) -> tuple[Labeller, Any]:
    cfg = prior.config
    lab = Labeller(
        released_labels(cfg.labels_version), cfg.max_bow_genre_size, cfg.n_tokens, prior.sample_length
    )
    song = lab.encode("The Beatles", "rock" if cfg.labels_version == "v3" else "Hip Hop", LYRICS)
    assert len(song.tokens) == len(song.lyrics)  # one token per cleaned character: times map back
    return lab, song


def _reference_window(ref: Any, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The original's recorded alignment attention for one row: [1, n_ctx, n_tokens]."""
    with cpu_reference(), torch.no_grad():
        ws = ref.z_forward(z, [], y, fp16=False, get_attn_weights={ref.alignment_layer})
    assert len(ws) == 1
    return ws[0][:, ref.alignment_head].float()


@pytest.mark.parametrize("kind", KINDS)
def test_window_attention_is_the_originals_alignment_attention(kind: str, models: dict[str, Any]) -> None:
    ref, prior = models[kind]
    lab, song = _labeller(prior)
    y = torch.tensor([lab.window_y(song, TOTAL, 3 * prior.sample_length)])
    z = torch.randint(0, 64, (1, prior.n_ctx), generator=torch.Generator().manual_seed(1))
    want = _reference_window(ref, z, y)
    got = window_attention(prior, z, prior.get_cond(y, None), int(prior.config.alignment_layer or 0))
    got = got[:, int(prior.config.alignment_head or 0)]
    assert got.shape == want.shape == (1, prior.n_ctx, prior.config.n_tokens)
    # attention that prefers some characters (uniform is 1 / n_tokens), so a mistake would show
    assert float(want.max()) > 2.0 / prior.config.n_tokens
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_song_alignment_places_windows_like_the_original(kind: str, models: dict[str, Any]) -> None:
    ref, prior = models[kind]
    lab, song = _labeller(prior)
    n_ctx, total_tokens, hop_fraction = prior.n_ctx, 96, 0.5  # windows at 0 and 32
    z = torch.randint(0, 64, (2, total_tokens), generator=torch.Generator().manual_seed(2))
    inputs = labelled_inputs(lab, song, TOTAL, prior.raw_to_tokens, rows=2)
    got = song_alignment(prior, z, inputs, [len(song.tokens)] * 2, hop_fraction=hop_fraction)

    for row in range(2):  # the original: later windows first, so the earlier window wins
        want = np.zeros((total_tokens, len(song.tokens) + 1), dtype=np.float32)
        for start in (32, 0):
            y, indices = inputs(start)
            w = _reference_window(ref, z[row : row + 1, start : start + n_ctx], y[row : row + 1])
            want[start : start + n_ctx, np.asarray(indices[row])] = w[0].numpy()
        np.testing.assert_allclose(got[row], want[:, :-1], atol=1e-5)
        assert len(np.unique(np.asarray(inputs(32)[1][0]))) > 1
    assert got[0].shape == (total_tokens, len(song.tokens))


def test_a_song_shorter_than_a_window_is_padded_like_the_original(models: dict[str, Any]) -> None:
    _, prior = models["prior_1b_lyrics"]
    lab, song = _labeller(prior)
    z = torch.randint(0, 64, (1, 40), generator=torch.Generator().manual_seed(3))
    inputs = labelled_inputs(lab, song, TOTAL, prior.raw_to_tokens, rows=1)
    got = song_alignment(prior, z, inputs, [len(song.tokens)])[0]
    padded = torch.cat([z, torch.zeros(1, 24, dtype=torch.long)], dim=1)
    full = song_alignment(prior, padded, inputs, [len(song.tokens)])[0]
    assert got.shape == (40, len(song.tokens))
    np.testing.assert_allclose(got, full[:40])


def test_a_model_without_lyrics_has_no_alignment(models: dict[str, Any]) -> None:
    vq_cfg = VQVAEConfig.from_hparams(SMALL_VQVAE)
    plain = JukeboxPrior(PriorConfig.from_hparams(SMALL_PRIORS["prior_5b"], l_bins=64), vq_cfg)
    with pytest.raises(AlignmentError, match="no lyrics alignment"):
        song_alignment(plain, torch.zeros(1, 64, dtype=torch.long), lambda s: (torch.zeros(1, 9), [[]]), [0])


def test_character_times_alignment_json_and_lrc() -> None:
    lyrics = "ab\n\ncd e"
    # 8 tokens: a at 0-1, b at 2, (newlines never most attended), c at 4, d at 5 (and a stray look
    # back at b at 6, which does not move time backwards), e at 7.
    most = [0, 0, 1, 1, 4, 5, 1, 7]
    alignment = np.zeros((8, len(lyrics)), dtype=np.float32)
    alignment[np.arange(8), most] = 1.0
    times = character_times(alignment, seconds_per_token=0.5)
    assert times == [0.0, 1.0, 2.0, 2.0, 2.0, 2.5, 3.5, 3.5]
    record = alignment_record(lyrics, times, 0.5)
    assert record["characters"][4] == {"char": "c", "time": 2.0}
    assert lrc_text(lyrics, times) == "[00:00.00]ab\n[00:02.00]cd e\n"
    assert lrc_text("x" * 3, [61.25, 62.0, 63.0]) == "[01:01.25]xxx\n"
    with pytest.raises(AlignmentError, match="3 characters but 2 times"):
        lrc_text("abc", [0.0, 1.0])
