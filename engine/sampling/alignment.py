"""Timed lyrics from a lyric model's alignment head.

The original (`jukebox/sample.py: get_alignment`) runs the top prior's training forward pass over
each window of the finished top-level codes, keeps the attention of layer `alignment_layer`, head
`alignment_head` (music positions x the window's lyric characters), and places every window's rows
into one [top tokens, song characters] matrix by the characters' indices in the song, the later
windows first so that an earlier window wins where windows overlap. It runs after sampling, on the
finished codes, so sampling is not slowed at all.

From that matrix: the time of each character (`character_times`), `alignment.json`
(`alignment_record`) and an LRC file (`lrc_text`).

    rows = song_alignment(prior, top_codes, window_inputs, n_chars, hop_fraction=0.125)
    times = character_times(rows[0], seconds_per_token)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine.model.attention import CROSS, PRIME
from engine.model.labels import Labeller, SongLabels
from engine.model.prior import Cond, JukeboxPrior
from engine.sampling.windows import get_starts


class AlignmentError(ValueError):
    """A model or input that has no lyric alignment."""


def alignment_site(prior: JukeboxPrior) -> tuple[int, int]:
    """(layer, head) of the prior's alignment attention; AlignmentError for a model without one."""
    c = prior.config
    if c.lyrics == "none" or c.alignment_layer is None or c.alignment_head is None:
        raise AlignmentError("this model has no lyrics alignment (alignment_layer/alignment_head)")
    return int(c.alignment_layer), int(c.alignment_head)


@torch.no_grad()
def window_attention(prior: JukeboxPrior, tokens: Tensor, cond: Cond, layer: int) -> Tensor:
    """The attention of `layer` over the lyrics for one whole window of music tokens [B, n_ctx]:
    float32 [B, heads, n_ctx, n_tokens] (music queries x lyric characters), the original's
    `record_attn` weights (for a prefix model, its `w[:, :, prime_len:, :prime_len]`)."""
    ar = prior.prior
    blocks = ar.transformer.layers
    if not 0 <= layer < len(blocks) or blocks[layer].attn.kind not in (CROSS, PRIME):
        raise AlignmentError(f"layer {layer} does not attend to the lyrics")
    seq = prior._sequence(tokens, cond)
    x = ar.embed(seq[:, :-1], cond.start, cond.x_cond)
    for blk in blocks[:layer]:
        x = blk(x, cond.encoder if blk.attn.kind == CROSS else None, None, None)
    att = blocks[layer].attn
    qkv = att.c_attn(blocks[layer].ln_0(x))
    if att.kind == CROSS:
        if cond.encoder is None:
            raise AlignmentError("the alignment layer attends to the lyric encoder: pass lyrics")
        q = att._split(qkv)
        k, _ = att.encoder_kv(cond.encoder)
        return torch.softmax((q.float() @ k.float().transpose(-1, -2)) * att.scale, dim=-1)
    q, k, _ = (att._split(t) for t in qkv.chunk(3, dim=-1))
    s = q.shape[2]
    keys = min(att.geo.prime_keys, s)
    w = (q.float() @ k[:, :, :keys].float().transpose(-1, -2)) * att.scale
    seen = torch.arange(keys, device=w.device)[None] <= torch.arange(s, device=w.device)[:, None]
    w = torch.softmax(w.masked_fill(~seen, float("-inf")), dim=-1)
    p = prior.prefix_len
    return w[:, :, p:, :p]


# (window start in top tokens) -> (labels y [B, y_len], each row's song-character index of every
# lyric token the window sees, -1 for padding)
WindowInputs = Callable[[int], tuple[Tensor, Sequence[Sequence[int]]]]


@torch.no_grad()
def song_alignment(
    prior: JukeboxPrior,
    codes: Tensor | np.ndarray,
    window_inputs: WindowInputs,
    n_chars: Sequence[int],
    *,
    hop_fraction: float = 0.125,
) -> list[np.ndarray]:
    """Per row, float32 [T, n_chars[row]]: how much top-level token t attends to each character of
    the song (the original's `get_alignment`; a song shorter than a window is padded with code 0).
    `hop_fraction` is the top level's (the original's 0.125)."""
    layer, head = alignment_site(prior)
    z = torch.as_tensor(np.asarray(codes) if isinstance(codes, np.ndarray) else codes).long()
    dev = next(prior.parameters()).device
    z = z.to(dev)
    n_ctx = prior.n_ctx
    total = z.shape[1]
    pad = max(0, n_ctx - total)
    if pad:
        z = torch.cat([z, z.new_zeros(z.shape[0], pad)], dim=1)
        total = z.shape[1]
    starts = get_starts(total, n_ctx, int(hop_fraction * n_ctx))
    hops: dict[int, tuple[np.ndarray, Sequence[Sequence[int]]]] = {}
    for start in starts:
        y, indices = window_inputs(start)
        rows = []
        for i in range(z.shape[0]):  # one row at a time, as the original does
            cond = prior.get_cond(y[i : i + 1].to(dev), None)
            w = window_attention(prior, z[i : i + 1, start : start + n_ctx], cond, layer)
            rows.append(w[:, head])
        hops[start] = (torch.cat(rows).cpu().numpy(), indices)
    out = []
    for i, n in enumerate(n_chars):
        full = np.zeros((total, n + 1), dtype=np.float32)  # column n takes the padding (-1)
        for start in reversed(starts):
            weights, indices = hops[start]
            full[start : start + n_ctx, np.asarray(indices[i])] = weights[i]
        out.append(full[: total - pad, :-1])
    return out


def labelled_inputs(
    labeller: Labeller, song: SongLabels, total_length: int, raw_to_tokens: int, rows: int
) -> WindowInputs:
    """`window_inputs` for `rows` copies of one song: the y and lyric indices of each window, as the
    original's `prior.get_y(labels, start, get_indices=True)` gives them."""

    def inputs(start: int) -> tuple[Tensor, Sequence[Sequence[int]]]:
        offset = start * raw_to_tokens
        y = torch.tensor([labeller.window_y(song, total_length, offset)] * rows, dtype=torch.long)
        return y, [labeller.window_lyric_indices(song, total_length, offset)] * rows

    return inputs


def character_times(alignment: np.ndarray, seconds_per_token: float) -> list[float]:
    """The time (s) each character starts: the first top-level token whose most-attended
    character is at or past it (kept moving forward: the lyrics are sung in order)."""
    n_tokens, n_chars = alignment.shape
    if n_chars == 0:
        return []
    if n_tokens == 0:
        return [0.0] * n_chars
    reached = np.maximum.accumulate(alignment.argmax(axis=1))
    first = np.searchsorted(reached, np.arange(n_chars), side="left")  # n_tokens where never reached
    return [round(float(min(t, n_tokens - 1)) * seconds_per_token, 3) for t in first]


def alignment_record(lyrics: str, times: Sequence[float], seconds_per_token: float) -> dict[str, Any]:
    """What `alignment.json` holds: every sung character with its start time in seconds."""
    if len(lyrics) != len(times):
        raise AlignmentError(f"{len(lyrics)} characters but {len(times)} times")
    return {
        "seconds_per_token": seconds_per_token,
        "characters": [{"char": ch, "time": t} for ch, t in zip(lyrics, times, strict=True)],
    }


def lrc_text(lyrics: str, times: Sequence[float]) -> str:
    """An LRC file: each non-empty lyric line at the time of its first character."""
    if len(lyrics) != len(times):
        raise AlignmentError(f"{len(lyrics)} characters but {len(times)} times")
    out, pos = [], 0
    for line in lyrics.split("\n"):
        text = line.strip()
        if text:
            t = times[pos + line.index(text[0])]
            minutes, seconds = divmod(t, 60.0)
            out.append(f"[{int(minutes):02d}:{seconds:05.2f}]{text}")
        pos += len(line) + 1
    return "\n".join(out) + ("\n" if out else "")


__all__ = [
    "AlignmentError",
    "WindowInputs",
    "alignment_record",
    "alignment_site",
    "character_times",
    "labelled_inputs",
    "lrc_text",
    "song_alignment",
    "window_attention",
]
