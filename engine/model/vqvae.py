"""The Jukebox VQ-VAE: per level a strided-conv encoder, a codebook, and a transposed-conv decoder.

Level L compresses audio by hop_lengths[L] (8/32/128 samples per code when released). Decoding a
level uses only that level's decoder: final audio comes from level-0 codes, level 1/2 decodes are
previews. Attribute names reproduce the original state-dict keys
(`encoders.L.level_blocks.i.model.j...`, `bottleneck.level_blocks.L.k`).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.model.config import VQVAEConfig


class ResConv1DBlock(nn.Module):
    def __init__(
        self, n_in: int, n_state: int, dilation: int = 1, zero_out: bool = False, res_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(n_in, n_state, 3, 1, dilation, dilation),
            nn.ReLU(),
            nn.Conv1d(n_state, n_in, 1, 1, 0),
        )
        if zero_out:
            out = cast(nn.Conv1d, self.model[-1])
            nn.init.zeros_(out.weight)
            if out.bias is not None:
                nn.init.zeros_(out.bias)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.model(x)


class Resnet1D(nn.Module):
    """Dilated residual conv stack. `checkpoint_res` only changes the key name (`blocks` vs `model`)
    so that the upsampler conditioners' checkpoints load."""

    def __init__(
        self,
        n_in: int,
        n_depth: int,
        m_conv: float = 1.0,
        dilation_growth_rate: int = 1,
        dilation_cycle: int | None = None,
        zero_out: bool = False,
        res_scale: bool = False,
        reverse_dilation: bool = False,
        checkpoint_res: bool = False,
    ) -> None:
        super().__init__()
        blocks = [
            ResConv1DBlock(
                n_in,
                int(m_conv * n_in),
                dilation=dilation_growth_rate ** (d if dilation_cycle is None else d % dilation_cycle),
                zero_out=zero_out,
                res_scale=1.0 if not res_scale else 1.0 / math.sqrt(n_depth),
            )
            for d in range(n_depth)
        ]
        if reverse_dilation:
            blocks = blocks[::-1]
        self.checkpoint_res = checkpoint_res
        if checkpoint_res:
            self.blocks = nn.ModuleList(blocks)
        else:
            self.model = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        if self.checkpoint_res:
            for block in self.blocks:
                x = block(x)
            return x
        return self.model(x)


class EncoderConvBlock(nn.Module):
    def __init__(
        self,
        input_emb_width: int,
        output_emb_width: int,
        down_t: int,
        stride_t: int,
        width: int,
        depth: int,
        m_conv: float,
        dilation_growth_rate: int = 1,
        dilation_cycle: int | None = None,
        zero_out: bool = False,
        res_scale: bool = False,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        filter_t, pad_t = stride_t * 2, stride_t // 2
        for i in range(down_t):
            blocks.append(
                nn.Sequential(
                    nn.Conv1d(input_emb_width if i == 0 else width, width, filter_t, stride_t, pad_t),
                    Resnet1D(width, depth, m_conv, dilation_growth_rate, dilation_cycle, zero_out, res_scale),
                )
            )
        if down_t > 0:
            blocks.append(nn.Conv1d(width, output_emb_width, 3, 1, 1))
        self.model = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class DecoderConvBock(nn.Module):  # sic: the original's class name
    def __init__(
        self,
        input_emb_width: int,
        output_emb_width: int,
        down_t: int,
        stride_t: int,
        width: int,
        depth: int,
        m_conv: float,
        dilation_growth_rate: int = 1,
        dilation_cycle: int | None = None,
        zero_out: bool = False,
        res_scale: bool = False,
        reverse_decoder_dilation: bool = False,
        checkpoint_res: bool = False,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        if down_t > 0:
            filter_t, pad_t = stride_t * 2, stride_t // 2
            blocks.append(nn.Conv1d(output_emb_width, width, 3, 1, 1))
            for i in range(down_t):
                blocks.append(
                    nn.Sequential(
                        Resnet1D(
                            width,
                            depth,
                            m_conv,
                            dilation_growth_rate,
                            dilation_cycle,
                            zero_out=zero_out,
                            res_scale=res_scale,
                            reverse_dilation=reverse_decoder_dilation,
                            checkpoint_res=checkpoint_res,
                        ),
                        nn.ConvTranspose1d(
                            width, input_emb_width if i == down_t - 1 else width, filter_t, stride_t, pad_t
                        ),
                    )
                )
        self.model = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _block_kwargs(cfg: VQVAEConfig, level: int) -> dict:
    m = cfg.multipliers[level]
    return dict(
        width=cfg.width * m,
        depth=cfg.depth * m,
        m_conv=cfg.m_conv,
        dilation_growth_rate=cfg.dilation_growth_rate,
        dilation_cycle=cfg.dilation_cycle,
    )


class Encoder(nn.Module):
    """Encoder of one level: level_blocks[0..level] each downsample by stride**down."""

    def __init__(self, cfg: VQVAEConfig, level: int) -> None:
        super().__init__()
        kw = _block_kwargs(cfg, level)
        self.level_blocks = nn.ModuleList(
            EncoderConvBlock(
                1 if i == 0 else cfg.emb_width, cfg.emb_width, cfg.downs_t[i], cfg.strides_t[i], **kw
            )
            for i in range(level + 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.level_blocks:
            x = block(x)
        return x


class Decoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig, level: int) -> None:
        super().__init__()
        kw = _block_kwargs(cfg, level)
        self.level_blocks = nn.ModuleList(
            DecoderConvBock(
                cfg.emb_width,
                cfg.emb_width,
                cfg.downs_t[i],
                cfg.strides_t[i],
                reverse_decoder_dilation=cfg.reverse_decoder_dilation,
                **kw,
            )
            for i in range(level + 1)
        )
        self.out = nn.Conv1d(cfg.emb_width, 1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        for block in reversed(self.level_blocks):
            x = block(x)
        return self.out(x)


class BottleneckBlock(nn.Module):
    """A codebook `k` [l_bins, emb_width]; codes are nearest neighbours in L2."""

    k: Tensor

    def __init__(self, l_bins: int, emb_width: int) -> None:
        super().__init__()
        self.l_bins, self.emb_width = l_bins, emb_width
        self.register_buffer("k", torch.zeros(l_bins, emb_width))

    def encode(self, x: Tensor) -> Tensor:
        """x: [N, C, T] -> codes [N, T]."""
        n, _, t = x.shape
        x = x.permute(0, 2, 1).reshape(-1, self.emb_width).float()
        k_w = self.k.float().t()
        # Same expression as the original so that ties resolve the same way.
        distance = (
            (x**2).sum(dim=-1, keepdim=True) - 2 * torch.matmul(x, k_w) + (k_w**2).sum(dim=0, keepdim=True)
        )
        return torch.min(distance, dim=-1).indices.view(n, t)

    def decode(self, z: Tensor) -> Tensor:
        """codes [N, T] -> [N, C, T]."""
        return F.embedding(z, self.k).permute(0, 2, 1)


class Bottleneck(nn.Module):
    def __init__(self, l_bins: int, emb_width: int, levels: int) -> None:
        super().__init__()
        self.level_blocks = nn.ModuleList(BottleneckBlock(l_bins, emb_width) for _ in range(levels))

    def __getitem__(self, level: int) -> BottleneckBlock:
        return cast(BottleneckBlock, self.level_blocks[level])


class VQVAE(nn.Module):
    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleList(Encoder(config, level) for level in range(config.levels))
        self.decoders = nn.ModuleList(Decoder(config, level) for level in range(config.levels))
        self.bottleneck = Bottleneck(config.l_bins, config.emb_width, config.levels)

    @property
    def hop_lengths(self) -> tuple[int, ...]:
        return self.config.hop_lengths

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def levels(self) -> int:
        return self.config.levels

    def _dtype(self) -> torch.dtype:
        return self.bottleneck[0].k.dtype

    def encode(self, audio: Tensor, start_level: int = 0, end_level: int | None = None) -> list[Tensor]:
        """audio [B, T] (float in [-1, 1]) -> codes per level in [start_level, end_level) (default:
        to the top), each [B, T // hop_lengths[level]]. T should be a multiple of the top hop length."""
        end_level = self.levels if end_level is None else end_level
        if audio.dim() != 2:
            raise ValueError(f"expected audio [batch, samples], got shape {tuple(audio.shape)}")
        hop = self.hop_lengths[end_level - 1]
        if audio.shape[1] % hop or audio.shape[1] == 0:
            raise ValueError(
                f"audio of {audio.shape[1]} samples: the VQ-VAE needs a positive multiple of {hop}"
            )
        x = audio[:, None].to(self._dtype())
        zs = []
        for level in range(start_level, end_level):
            h = cast(Encoder, self.encoders[level])(x)
            zs.append(self.bottleneck[level].encode(h))
        return zs

    def decode(self, codes: list[Tensor], start_level: int = 0, end_level: int | None = None) -> Tensor:
        """Audio [B, T] from the codes of `start_level` (codes[0]); higher levels are not needed."""
        end_level = self.levels if end_level is None else end_level
        if len(codes) != end_level - start_level:
            raise ValueError(f"expected {end_level - start_level} code tensors, got {len(codes)}")
        z = codes[0].long()
        x = self.bottleneck[start_level].decode(z)
        return cast(Decoder, self.decoders[start_level])(x)[:, 0].float()
