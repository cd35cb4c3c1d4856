"""One level's prior: the factored transformer plus everything it is conditioned on.

- Labels (`y_emb`): artist + bag-of-genres embedding as the start vector; at the top level a
  timing signal (total length, absolute and relative position of each window position).
- Upsamplers (`conditioner_blocks`): the codes of the level above, embedded and upsampled by a
  dilated conv stack, added at every position.
- Lyrics: 5b_lyrics runs a separate lyric encoder (`prime_prior`) whose states the decoder's
  cross-attention layers read; 1b_lyrics puts the lyric characters in front of the music tokens
  in one sequence (merged vocabulary: characters first, then music codes).

Attribute names reproduce OpenAI's state-dict keys, so `load_state_dict` takes their files as is.

A window is sampled as:

    cond = prior.get_cond(y, upper_codes)          # once per window
    cache = prior.new_cache(batch, device, dtype)  # once, reused for every window
    logits = prior.prefill(cache, context, cond)   # context: music tokens 0..T-1 of the window
    for pos in range(T, n_ctx):
        tok = sample(logits)                       # token at music position `pos`
        if pos + 1 < n_ctx:
            logits = prior.decode_step(cache, tok, pos, cond)   # logits for position pos + 1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.model.attention import Conv1D, Geometry, LayerCache
from engine.model.config import ConditionerConfig, PriorConfig, VQVAEConfig
from engine.model.transformer import ARSpec, AutoregressiveTransformer, BlockStep, LayerNorm
from engine.model.vqvae import DecoderConvBock


class LabelError(ValueError):
    """Labels (artist, genre, timing, lyric tokens) that this model cannot take."""


# ---------------------------------------------------------------------------------------------
# Conditioning modules


class Conditioner(nn.Module):
    """Embeds the level-above codes and upsamples them to this level's resolution."""

    def __init__(
        self, cfg: ConditionerConfig, out_width: int, bins: int, down_t: int, stride_t: int, init_scale: float
    ) -> None:
        super().__init__()
        self.x_emb = nn.Embedding(bins, out_width)
        nn.init.normal_(self.x_emb.weight, std=0.02 * init_scale)
        self.cond = DecoderConvBock(
            out_width,
            out_width,
            down_t,
            stride_t,
            width=cfg.width,
            depth=cfg.depth,
            m_conv=cfg.m_conv,
            dilation_growth_rate=cfg.dilation_growth_rate,
            dilation_cycle=cfg.dilation_cycle,
            zero_out=cfg.zero_out,
            res_scale=cfg.res_scale,
            checkpoint_res=cfg.checkpoint_res,
        )
        self.ln = LayerNorm(out_width)

    def forward(self, z: Tensor) -> Tensor:
        """z: [N, T_up] codes -> [N, T_up * stride**down, width]."""
        x = self.x_emb(z.long()).permute(0, 2, 1)
        return self.ln(self.cond(x).permute(0, 2, 1))


class SimpleEmbedding(nn.Module):
    def __init__(self, bins: int, out_width: int, init_scale: float) -> None:
        super().__init__()
        self.bins = bins
        self.emb = nn.Embedding(bins, out_width)
        nn.init.normal_(self.emb.weight, std=0.01 * init_scale)

    def forward(self, y: Tensor) -> Tensor:
        return self.emb(y)


class RangeEmbedding(nn.Module):
    """Bins a position range [start, end) of the interval [pos_min, pos_max) into `n_time` steps."""

    def __init__(
        self,
        n_time: int,
        bins: int,
        range_: tuple[float, float],
        out_width: int,
        init_scale: float,
        clamp: bool = False,
    ) -> None:
        super().__init__()
        self.n_time, self.bins, self.clamp = int(n_time), bins, clamp
        self.pos_min, self.pos_max = range_
        self.emb = nn.Embedding(bins, out_width)
        nn.init.normal_(self.emb.weight, std=0.01 * init_scale)

    def in_range(self, pos_start: Tensor, pos_end: Tensor | None = None) -> Tensor:
        """Per row: whether the original's asserts would pass."""
        ok = (self.pos_min <= pos_start).all(dim=1) & (pos_start < self.pos_max).all(dim=1)
        if pos_end is not None:
            if self.clamp:
                pos_end = pos_end.clamp(self.pos_min, self.pos_max)
            ok &= ((self.pos_min <= pos_end) & (pos_end <= self.pos_max)).all(dim=1)
        return ok

    def forward(self, pos_start: Tensor, pos_end: Tensor | None = None) -> Tensor:
        pos_start = pos_start.float()
        if pos_end is not None:
            if self.clamp:
                pos_end = pos_end.clamp(self.pos_min, self.pos_max)
            pos_end = pos_end.float()
        if self.n_time != 1:
            assert pos_end is not None
            interpolation = (
                torch.arange(0, self.n_time, dtype=torch.float, device=pos_start.device).view(1, self.n_time)
                / self.n_time
            )
            position = pos_start + (pos_end - pos_start) * interpolation
        else:
            position = pos_start
        normalised = (position - self.pos_min) / (self.pos_max - self.pos_min)
        bins = (self.bins * normalised).floor().long().detach()
        return self.emb(bins)


class LabelConditioner(nn.Module):
    """y = [total_length, offset, length, artist, *genres] -> (start vector, per-position timing)."""

    def __init__(self, cfg: PriorConfig, sample_rate: int, include_time_signal: bool) -> None:
        super().__init__()
        genre_bins, artist_bins = cfg.y_bins
        self.max_bow_genre_size = cfg.max_bow_genre_size
        self.sample_rate = sample_rate
        self.bow_genre_emb = SimpleEmbedding(genre_bins, cfg.width, cfg.init_scale)
        self.artist_emb = SimpleEmbedding(artist_bins, cfg.width, cfg.init_scale)
        self.include_time_signal = include_time_signal
        if include_time_signal:
            if cfg.min_duration is None or cfg.max_duration is None:
                raise LabelError("a top-level prior with labels needs min_duration and max_duration")
            lo, hi = cfg.min_duration * sample_rate, cfg.max_duration * sample_rate
            self.total_length_emb = RangeEmbedding(1, cfg.t_bins, (lo, hi), cfg.width, cfg.init_scale)
            self.absolute_pos_emb = RangeEmbedding(
                cfg.n_ctx, cfg.t_bins, (0.0, hi), cfg.width, cfg.init_scale
            )
            self.relative_pos_emb = RangeEmbedding(
                cfg.n_ctx, cfg.t_bins, (0.0, 1.0), cfg.width, cfg.init_scale, clamp=True
            )

    def check(self, y: Tensor) -> None:
        """Raise LabelError, in words, where the original would hit an assert."""
        sr = self.sample_rate
        artist, genre = y[:, 3], y[:, 4:]
        bad = artist[(artist < 0) | (artist >= self.artist_emb.bins)]
        if bad.numel():
            raise LabelError(
                f"artist id {int(bad[0])} is not one of this model's {self.artist_emb.bins} artists"
            )
        bad = genre[genre >= self.bow_genre_emb.bins]  # negative ids are empty slots, as in the original
        if bad.numel():
            raise LabelError(
                f"genre id {int(bad[0])} is not one of this model's {self.bow_genre_emb.bins} genres"
            )
        if not self.include_time_signal:
            return
        total, start = y[:, 0:1].float(), y[:, 1:2].float()
        end = (y[:, 1:2] + y[:, 2:3]).float()
        tl, ap = self.total_length_emb, self.absolute_pos_emb
        if not bool(tl.in_range(total).all()):
            got = float(total[~tl.in_range(total)][0]) / sr
            raise LabelError(
                f"this model makes songs from {tl.pos_min / sr:.2f} s to {tl.pos_max / sr:.0f} s long; "
                f"the song length given is {got:.2f} s"
            )
        if not bool(ap.in_range(start, end).all()):
            i = int((~ap.in_range(start, end)).nonzero()[0])
            raise LabelError(
                f"a window from {float(start[i]) / sr:.2f} s to {float(end[i]) / sr:.2f} s lies outside "
                f"0 s to {ap.pos_max / sr:.0f} s, the longest song this model knows"
            )
        if not bool(self.relative_pos_emb.in_range(start / total, end / total).all()):
            raise LabelError("a window starts at or after the end of the song (offset >= total length)")

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor | None]:
        total_length, offset, length, artist, genre = y[:, 0:1], y[:, 1:2], y[:, 2:3], y[:, 3:4], y[:, 4:]
        artist_emb = self.artist_emb(artist)
        mask = (genre >= 0).float().unsqueeze(2)  # empty genre slots are -1
        genre_emb = (self.bow_genre_emb(genre.clamp(0)) * mask).sum(dim=1, keepdim=True)
        start_emb = genre_emb + artist_emb
        pos_emb = None
        if self.include_time_signal:
            start, end = offset, offset + length
            total_length, start, end = total_length.float(), start.float(), end.float()
            pos_emb = (
                self.total_length_emb(total_length)
                + self.absolute_pos_emb(start, end)
                + self.relative_pos_emb(start / total_length, end / total_length)
            )
        return start_emb[:, 0], pos_emb


# ---------------------------------------------------------------------------------------------
# Per-window conditioning and the KV cache


@dataclass
class Cond:
    """Everything one window needs besides its tokens (batched over rows)."""

    x_cond: Tensor | None  # [B, seq_len, width] added at every position (lyric prefix rows are zero)
    start: Tensor | None  # [B, width] input of position 0; None: the learned start token
    lyrics: Tensor | None  # [B, n_tokens] lyric characters of this window (lyrics models)
    encoder: Tensor | None  # [B, n_tokens, width] lyric encoder states (separate-encoder models)

    @property
    def batch(self) -> int:
        for t in (self.x_cond, self.start, self.lyrics, self.encoder):
            if t is not None:
                return t.shape[0]
        return 0

    def select(self, rows: Tensor | Sequence[int]) -> Cond:
        idx = torch.as_tensor(rows, dtype=torch.long)

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[idx.to(t.device)]

        return Cond(pick(self.x_cond), pick(self.start), pick(self.lyrics), pick(self.encoder))

    @staticmethod
    def cat(conds: Sequence[Cond]) -> Cond:
        def join(ts: list[Tensor | None]) -> Tensor | None:
            if all(t is None for t in ts):
                return None
            if any(t is None for t in ts):
                raise ValueError("cannot batch windows of different kinds of conditioning")
            return torch.cat(ts, dim=0)  # type: ignore[arg-type]

        return Cond(*(join([getattr(c, f) for c in conds]) for f in ("x_cond", "start", "lyrics", "encoder")))


@dataclass
class KVCache:
    """Static per-layer key/value buffers for `batch` rows (shapes per attention kind)."""

    layers: list[LayerCache]
    batch: int

    def tensors(self) -> list[Tensor]:
        return [t for lc in self.layers for t in (lc.k, lc.v)]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())


# ---------------------------------------------------------------------------------------------


class JukeboxPrior(nn.Module):
    def __init__(self, config: PriorConfig, vqvae: VQVAEConfig) -> None:
        super().__init__()
        c = self.config = config
        self.vqvae_config = vqvae
        self.level = c.level
        self.is_top = c.level == vqvae.levels - 1
        self.n_ctx = c.n_ctx
        self.raw_to_tokens = vqvae.hop_lengths[c.level]
        self.sample_length = c.n_ctx * self.raw_to_tokens  # raw samples per window
        self.sample_rate = vqvae.sample_rate
        self.cond_downsample = None if self.is_top else vqvae.downsamples[c.level + 1]
        self.prefix_len = c.n_tokens if c.lyrics == "prefix" else 0
        self.n_bins = c.l_bins  # logits returned cover the music codes only

        if not self.is_top:
            cond_level = c.level + 1
            self.conditioner_blocks = nn.ModuleList(
                [
                    Conditioner(
                        c.conditioner or ConditionerConfig(),
                        c.width,
                        c.l_bins,
                        vqvae.downs_t[cond_level],
                        vqvae.strides_t[cond_level],
                        c.init_scale,
                    )
                ]
            )
        if c.labels:
            self.y_emb = LabelConditioner(c, vqvae.sample_rate, include_time_signal=self.is_top)

        geo = Geometry(
            seq_len=c.seq_len,
            blocks=c.blocks,
            prime_len=c.n_tokens if c.lyrics == "prefix" else None,
            encoder_len=c.n_tokens if c.lyrics == "separate" else 0,
            spread=c.spread,
        )
        self.prior = AutoregressiveTransformer(
            ARSpec(
                bins=c.bins,
                width=c.width,
                depth=c.depth,
                heads=c.heads,
                attn_order=c.attn_order,
                geo=geo,
                init_scale=c.init_scale,
                m_attn=c.m_attn,
                m_mlp=c.m_mlp,
                zero_out=c.zero_out,
                res_scale=c.res_scale,
                has_start_token=not c.labels,
                merged_decoder=c.merged_decoder,
            )
        )
        if c.lyrics == "separate":
            e = c.lyric_encoder
            assert e is not None
            self.prime_prior = AutoregressiveTransformer(
                ARSpec(
                    bins=c.n_vocab,
                    width=e.width,
                    depth=e.depth,
                    heads=e.heads,
                    attn_order=e.attn_order,
                    geo=Geometry(seq_len=c.n_tokens, blocks=e.blocks, spread=e.spread),
                    init_scale=e.init_scale,
                    m_attn=e.m_attn,
                    m_mlp=e.m_mlp,
                    zero_out=e.zero_out,
                    res_scale=e.res_scale,
                    has_start_token=True,
                    only_encode=True,
                )
            )
            self.prime_state_proj = Conv1D(e.width, c.width, init_scale=e.init_scale)
            self.prime_state_ln = LayerNorm(c.width)
            self.prime_x_out = nn.Linear(c.width, c.n_vocab, bias=False)
            nn.init.normal_(self.prime_x_out.weight, std=0.02 * c.init_scale)

    # -- conditioning ---------------------------------------------------------------------------
    def get_cond(self, labels_y: Tensor | None, upper_codes: Tensor | None = None) -> Cond:
        """Conditioning for one window.

        labels_y: [B, 4 + max_bow_genre_size + n_tokens] from `engine.model.labels.Labeller.window_y`
            (total length, this window's offset and length in raw samples, artist, genres, lyric
            characters of this window). None for a model without labels.
        upper_codes: [B, n_ctx // cond_downsample] codes of the level above covering this window
            (upsamplers only). Shorter is allowed (a song shorter than one window): positions past
            the covered part get no conditioning.
        """
        c = self.config
        device = self.prior.x_emb.weight.device
        start = pos = lyrics = None
        if c.labels:
            if labels_y is None:
                raise LabelError("this model needs labels (artist, genre, timing)")
            y = torch.as_tensor(labels_y, dtype=torch.long, device=device)
            if y.dim() != 2 or y.shape[1] != c.y_len:
                raise LabelError(f"expected labels of shape [batch, {c.y_len}], got {tuple(y.shape)}")
            n_labels = y.shape[1] - c.n_tokens
            self.y_emb.check(y[:, :n_labels])
            start, pos = self.y_emb(y[:, :n_labels])
            if c.n_tokens:
                lyrics = y[:, n_labels:]
                bad = lyrics[(lyrics < 0) | (lyrics >= c.n_vocab)]
                if bad.numel():
                    raise LabelError(
                        f"lyric token {int(bad[0])} is outside the {c.n_vocab}-character vocabulary"
                    )
        x_cond = pos
        if not self.is_top:
            if upper_codes is None:
                raise ValueError(f"the level-{c.level} upsampler needs the codes of level {c.level + 1}")
            z = torch.as_tensor(upper_codes, device=device).long()
            assert self.cond_downsample is not None
            need = c.n_ctx // self.cond_downsample
            if z.dim() != 2 or z.shape[1] > need or z.shape[1] == 0:
                raise ValueError(f"expected upper-level codes [batch, {need}], got {tuple(z.shape)}")
            if bool(((z < 0) | (z >= c.l_bins)).any()):
                raise ValueError(f"upper-level codes must lie in [0, {c.l_bins})")
            x_cond = self.conditioner_blocks[0](z)
            if x_cond.shape[1] < c.n_ctx:
                x_cond = F.pad(x_cond, (0, 0, 0, c.n_ctx - x_cond.shape[1]))
        encoder = None
        if c.lyrics == "separate":
            assert lyrics is not None
            encoder = self.encode_lyrics(lyrics)
        elif c.lyrics == "prefix" and x_cond is not None:
            x_cond = F.pad(x_cond, (0, 0, self.prefix_len, 0))
        return Cond(x_cond=x_cond, start=start, lyrics=lyrics, encoder=encoder)

    def encode_lyrics(self, lyrics: Tensor) -> Tensor:
        """The separate lyric encoder: [B, n_tokens] characters -> [B, n_tokens, width] states."""
        h = self.prime_prior(lyrics[:, :-1], None, None)
        return self.prime_state_ln(self.prime_state_proj(h))

    # -- exact slow path --------------------------------------------------------------------------
    def _sequence(self, tokens: Tensor, cond: Cond) -> Tensor:
        """Music tokens [B, T] -> transformer tokens (lyric prefix first, music shifted past it)."""
        tokens = tokens.long()
        if self.prefix_len:
            assert cond.lyrics is not None
            return torch.cat([cond.lyrics.long(), tokens + self.config.n_vocab], dim=1)
        return tokens

    def _hidden(self, tokens: Tensor, cond: Cond) -> tuple[Tensor, Tensor]:
        seq = self._sequence(tokens, cond)
        if seq.shape[1] > self.config.seq_len:
            raise ValueError(f"at most {self.n_ctx} tokens fit in one window, got {tokens.shape[1]}")
        return seq, self.prior(seq[:, :-1], cond.start, cond.x_cond, cond.encoder)

    def _music(self, logits: Tensor) -> Tensor:
        return logits[..., self.config.n_vocab :] if self.prefix_len else logits

    def logits(self, tokens: Tensor, cond: Cond) -> Tensor:
        """[B, T] music tokens -> [B, T, l_bins]: logits[:, t] predicts tokens[:, t] from tokens[:, :t]."""
        _, h = self._hidden(tokens, cond)
        return self._music(self.prior.head(h[:, self.prefix_len :]))

    def loss(self, tokens: Tensor, cond: Cond) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss in bits per token, weighted like the original (`prime_loss_fraction`)."""
        c = self.config
        seq, h = self._hidden(tokens, cond)
        logits = self.prior.head(h)
        p = self.prefix_len
        ln2 = math.log(2.0)
        gen = F.cross_entropy(logits[:, p:].reshape(-1, c.bins), seq[:, p:].reshape(-1)) / ln2
        prime = torch.zeros((), device=logits.device)
        prime_dims = 0
        if c.lyrics == "prefix":
            prime = F.cross_entropy(logits[:, :p].reshape(-1, c.bins), seq[:, :p].reshape(-1)) / ln2
            prime_dims = p
        elif c.lyrics == "separate":
            assert cond.encoder is not None and cond.lyrics is not None
            pl = self.prime_x_out(cond.encoder.float().to(self.prime_x_out.weight.dtype)).float()
            prime = F.cross_entropy(pl.reshape(-1, c.n_vocab), cond.lyrics.reshape(-1).long()) / ln2
            prime_dims = c.n_tokens
        gen_dims = tokens.shape[1]
        total = prime_dims + gen_dims
        loss = c.prime_loss_fraction * prime * prime_dims / total + gen * gen_dims / total
        return loss, {"bpd": gen.detach(), "gen_loss": gen.detach(), "prime_loss": prime.detach()}

    # -- fast path --------------------------------------------------------------------------------
    def new_cache(self, batch: int, device: torch.device | str, dtype: torch.dtype) -> KVCache:
        return KVCache(self.prior.transformer.new_cache(batch, device, dtype), batch)

    def prefill(self, cache: KVCache, tokens: Tensor, cond: Cond, rows: Tensor | None = None) -> Tensor:
        """Run a window's context (music tokens 0..T-1, T may be 0) in one pass and fill the cache.

        Returns float32 logits [B, l_bins] for music position T. With `rows` (LongTensor [R]) only
        those cache rows are written; tokens and cond then have R rows.
        """
        if tokens.shape[1] >= self.n_ctx:
            raise ValueError(f"the window is already full ({tokens.shape[1]} of {self.n_ctx} tokens)")
        seq = self._sequence(tokens, cond)
        h = self.prior(seq, cond.start, cond.x_cond, cond.encoder, cache=cache.layers, rows=rows)
        return self._music(self.prior.head(h[:, -1]))

    def decode_step(
        self,
        cache: KVCache,
        tokens: Tensor,
        pos: int | Tensor,
        cond: Cond,
        block_step: BlockStep | None = None,
    ) -> Tensor:
        """Feed the token sampled for music position `pos` ([B]; int or LongTensor [B] or scalar),
        return float32 logits [B, l_bins] for position pos + 1. Valid for pos + 1 < n_ctx (larger
        positions are clamped, and their logits are meaningless). `block_step`: see
        `Transformer.step` (the fast decoder's compiled block)."""
        b = tokens.shape[0]
        p = torch.as_tensor(pos, device=tokens.device, dtype=torch.long).expand(b)
        s = (p + 1 + self.prefix_len).clamp(max=self.config.seq_len - 1)
        tok = tokens.long() + (self.config.n_vocab if self.prefix_len else 0)
        h = self.prior.step(tok, s, cond.x_cond, cache.layers, block_step)
        return self._music(self.prior.head(h[:, 0]))
