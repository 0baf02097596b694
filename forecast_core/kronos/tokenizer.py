"""Kronos tokenizer: OHLCV bars <-> hierarchical (s1, s2) tokens via binary spherical quantisation.

Each bar (6 z-scored columns) goes through a causal transformer encoder to ``s1_bits + s2_bits``
numbers; their signs are the bits of the code. The first ``s1_bits`` form the coarse token s1, the
rest the fine token s2 (bit i has weight 2**i). Decoding maps the bits back to +-1/sqrt(bits) and runs
a causal transformer decoder. Quantisation keeps only signs, so the L2 normalisation upstream applies
before it changes nothing at inference and is only done in :meth:`KronosTokenizer.reconstruct`.

Checkpoint format: ``config.json`` holds the upstream constructor kwargs (:class:`TokenizerConfig`);
a config value ``n_enc_layers = n`` builds ``n - 1`` encoder blocks, as upstream does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import TransformerBlock, config_from_dict, run_blocks


@dataclass(frozen=True)
class TokenizerConfig:
    d_in: int
    d_model: int
    n_heads: int
    ff_dim: int
    n_enc_layers: int
    n_dec_layers: int
    s1_bits: int
    s2_bits: int
    ffn_dropout_p: float = 0.0
    attn_dropout_p: float = 0.0
    resid_dropout_p: float = 0.0
    beta: float = 0.05  # commitment loss weight (training only)
    gamma0: float = 1.0  # entropy-penalty weights of upstream training, kept for the format
    gamma: float = 1.1
    zeta: float = 0.05
    group_size: int = 4

    @classmethod
    def from_dict(cls, data: dict, source: str = "tokenizer") -> "TokenizerConfig":
        return config_from_dict(cls, data, source)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def codebook_dim(self) -> int:
        return self.s1_bits + self.s2_bits


class _BSQBuffers(nn.Module):
    """Holds the constant bit-weight buffers that the published checkpoints store (unused here)."""

    def __init__(self, bits: int, group_size: int):
        super().__init__()
        self.register_buffer("basis", 2 ** torch.arange(bits - 1, -1, -1))
        self.register_buffer("group_basis", 2 ** torch.arange(group_size - 1, -1, -1))


class _Quantizer(nn.Module):
    def __init__(self, bits: int, group_size: int):
        super().__init__()
        self.bsq = _BSQBuffers(bits, group_size)


def bits_to_index(bits: torch.Tensor) -> torch.Tensor:
    """``[..., n]`` booleans -> int64 index, bit i weighted 2**i."""
    weights = 2 ** torch.arange(bits.shape[-1], device=bits.device, dtype=torch.long)
    return (bits.long() * weights).sum(-1)


def index_to_bits(index: torch.Tensor, n: int) -> torch.Tensor:
    weights = 2 ** torch.arange(n, device=index.device, dtype=torch.long)
    return (index.unsqueeze(-1) & weights) != 0


class KronosTokenizer(nn.Module):
    def __init__(self, config: TokenizerConfig):
        super().__init__()
        c = self.config = config
        block = lambda: TransformerBlock(  # noqa: E731
            c.d_model, c.n_heads, c.ff_dim, c.ffn_dropout_p, c.attn_dropout_p, c.resid_dropout_p
        )
        self.embed = nn.Linear(c.d_in, c.d_model)
        self.head = nn.Linear(c.d_model, c.d_in)
        self.encoder = nn.ModuleList([block() for _ in range(c.n_enc_layers - 1)])
        self.decoder = nn.ModuleList([block() for _ in range(c.n_dec_layers - 1)])
        self.quant_embed = nn.Linear(c.d_model, c.codebook_dim)
        self.post_quant_embed_pre = nn.Linear(c.s1_bits, c.d_model)  # decodes from s1 alone (training)
        self.post_quant_embed = nn.Linear(c.codebook_dim, c.d_model)
        self.tokenizer = _Quantizer(c.codebook_dim, c.group_size)

    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)
        for block in self.encoder:
            z = block(z)
        return self.quant_embed(z)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, L, d_in]`` (z-scored) -> ``(s1, s2)`` int64 ``[B, L]``."""
        bits = self._latent(x) > 0
        return bits_to_index(bits[..., : self.config.s1_bits]), bits_to_index(bits[..., self.config.s1_bits:])

    def codes(self, s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        """Tokens -> the quantised vectors, entries +-1/sqrt(codebook_dim)."""
        c = self.config
        bits = torch.cat((index_to_bits(s1, c.s1_bits), index_to_bits(s2, c.s2_bits)), dim=-1)
        # times the reciprocal, as upstream: dividing rounds differently for some sizes (6, 7, 17, 18, 21, ...)
        return (bits.float() * 2 - 1) * (1.0 / c.codebook_dim ** 0.5)

    @torch.no_grad()
    def decode(self, s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        """Whole sequences ``[B, L]`` -> reconstructed bars ``[B, L, d_in]`` (positions from 0)."""
        z = self.post_quant_embed(self.codes(s1, s2))
        for block in self.decoder:
            z = block(z)
        return self.head(z)

    @torch.no_grad()
    def decode_rows(self, prefix: tuple[torch.Tensor, torch.Tensor],
                    rows: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Decode windows that share a prefix: ``prefix`` ``[W, P]`` tokens, ``rows`` ``[W*n, T]``.

        Returns the bars of the rows' own ``T`` positions, ``[W*n, T, d_in]``; identical to decoding
        each row's full sequence and keeping its last ``T`` outputs, without repeating the prefix.
        """
        per = rows[0].shape[0] // prefix[0].shape[0]
        _, z, _ = run_blocks(self.decoder, self.post_quant_embed(self.codes(*prefix)), per,
                          self.post_quant_embed(self.codes(*rows)), capacity=rows[0].shape[1])
        return self.head(z)

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (bars from s1 only, bars from s1+s2, commitment loss), straight-through."""
        z = F.normalize(self._latent(x), dim=-1)
        scale = self.config.codebook_dim ** -0.5
        zq = z + (torch.where(z > 0, scale, -scale) - z).detach()
        commit = self.config.beta * ((zq.detach() - z) ** 2).sum(-1).mean()
        outputs = []
        for h in (self.post_quant_embed_pre(zq[..., : self.config.s1_bits]), self.post_quant_embed(zq)):
            for block in self.decoder:
                h = block(h)
            outputs.append(self.head(h))
        return outputs[0], outputs[1], commit
