"""Kronos: an autoregressive transformer over hierarchical (s1, s2) bar tokens.

Per position: embed s1 and s2 and fuse them, add a time embedding (minute, hour, weekday, day,
month), run causal blocks and a final RMSNorm. The s1 head reads that hidden state. s2 is predicted
after s1 is chosen: a "dependency-aware" cross-attention whose query is the embedding of the chosen
s1 and whose keys/values are the hidden states of the window, followed by a residual RMSNorm and the
s2 head. Upstream applies RoPE in that cross-attention, but at inference its query has length 1,
which makes the rotation the identity for both query and keys; this implementation therefore never
rotates there (training included, so the tiny model learns exactly what inference computes).

Decoding API (used by :mod:`forecast_core.kronos.forecaster`): :meth:`Kronos.prefill` runs the
context of each window once; :meth:`Kronos.extend` appends tokens per row against that shared
prefix; :meth:`Kronos.s1_logits` / :meth:`Kronos.s2_logits` are the heads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from .layers import Attention, KVCache, RMSNorm, TransformerBlock, attend_with_prefix, config_from_dict, run_blocks

TIME_FEATURES = ("minute", "hour", "weekday", "day", "month")
TIME_SIZES = (60, 24, 7, 32, 13)


@dataclass(frozen=True)
class KronosConfig:
    s1_bits: int
    s2_bits: int
    n_layers: int
    d_model: int
    n_heads: int
    ff_dim: int
    ffn_dropout_p: float = 0.0
    attn_dropout_p: float = 0.0
    resid_dropout_p: float = 0.0
    token_dropout_p: float = 0.0
    learn_te: bool = True

    @classmethod
    def from_dict(cls, data: dict, source: str = "model") -> "KronosConfig":
        return config_from_dict(cls, data, source)

    def to_dict(self) -> dict:
        return asdict(self)


class HierarchicalEmbedding(nn.Module):
    def __init__(self, c: KronosConfig):
        super().__init__()
        self.d_model = c.d_model
        self.emb_s1 = nn.Embedding(2 ** c.s1_bits, c.d_model)
        self.emb_s2 = nn.Embedding(2 ** c.s2_bits, c.d_model)
        self.fusion_proj = nn.Linear(2 * c.d_model, c.d_model)

    def forward(self, s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        scale = math.sqrt(self.d_model)
        return self.fusion_proj(torch.cat((self.emb_s1(s1) * scale, self.emb_s2(s2) * scale), dim=-1))


class _FixedEmbedding(nn.Module):
    """Sinusoidal table (``learn_te = false`` checkpoints store it as ``*.emb.weight``)."""

    def __init__(self, size: int, d_model: int):
        super().__init__()
        position = torch.arange(size).float()[:, None]
        div = (torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model)).exp()
        table = torch.zeros(size, d_model)
        table[:, 0::2], table[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
        self.emb = nn.Embedding(size, d_model)
        self.emb.weight = nn.Parameter(table, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.emb(x)


class TemporalEmbedding(nn.Module):
    def __init__(self, d_model: int, learn: bool):
        super().__init__()
        make = nn.Embedding if learn else _FixedEmbedding
        for name, size in zip(TIME_FEATURES, TIME_SIZES):
            setattr(self, f"{name}_embed", make(size, d_model))

    def forward(self, stamp: torch.Tensor) -> torch.Tensor:
        """``stamp`` ``[..., 5]`` int64 in :data:`TIME_FEATURES` order."""
        parts = [getattr(self, f"{name}_embed")(stamp[..., i]) for i, name in enumerate(TIME_FEATURES)]
        minute, hour, weekday, day, month = parts
        return hour + weekday + day + month + minute  # upstream's summation order (bitwise parity)


class DependencyAwareLayer(nn.Module):
    """s2 conditioning: norm(h + cross_attn(query=emb_s1(chosen s1), keys/values=window hidden states)).

    Upstream hard-codes 4 heads here whatever the model's ``n_heads``.
    """

    def __init__(self, c: KronosConfig):
        super().__init__()
        self.cross_attn = Attention(c.d_model, 4, rotate=False, attn_dropout=c.attn_dropout_p,
                                    resid_dropout=c.resid_dropout_p)
        self.norm = RMSNorm(c.d_model)


class DualHead(nn.Module):
    def __init__(self, c: KronosConfig):
        super().__init__()
        self.proj_s1 = nn.Linear(c.d_model, 2 ** c.s1_bits)
        self.proj_s2 = nn.Linear(c.d_model, 2 ** c.s2_bits)


@dataclass
class DecodeState:
    """Everything a row needs to continue decoding: block caches and the s2 layer's keys/values.

    ``last`` is the final hidden state of each row's newest position, ``[R, d]``.
    """

    caches: list[KVCache]
    dep: KVCache
    capacity: int
    last: torch.Tensor

    @property
    def position(self) -> int:
        """Window position of the next token to feed."""
        return self.dep.prefix_k.shape[2] + self.dep.length


class Kronos(nn.Module):
    def __init__(self, config: KronosConfig):
        super().__init__()
        c = self.config = config
        self.embedding = HierarchicalEmbedding(c)
        self.time_emb = TemporalEmbedding(c.d_model, c.learn_te)
        self.token_drop = nn.Dropout(c.token_dropout_p)
        self.transformer = nn.ModuleList([
            TransformerBlock(c.d_model, c.n_heads, c.ff_dim, c.ffn_dropout_p, c.attn_dropout_p, c.resid_dropout_p)
            for _ in range(c.n_layers)
        ])
        self.norm = RMSNorm(c.d_model)
        self.dep_layer = DependencyAwareLayer(c)
        self.head = DualHead(c)

    @classmethod
    def compile_targets(cls) -> tuple:
        """The per-step hot path worth ``torch.compile``: one decoding step and the two heads.

        ``forecast_core.compiled`` replaces these methods on one instance by compiled wrappers of the
        same name (the class stays eager; deleting the instance attributes restores it)."""
        return cls.extend, cls.s1_logits, cls.s2_logits

    def embed(self, s1: torch.Tensor, s2: torch.Tensor, stamp: torch.Tensor) -> torch.Tensor:
        return self.token_drop(self.embedding(s1, s2) + self.time_emb(stamp))

    def forward(self, s1, s2, stamp, s1_next):
        """Training (teacher forcing): logits for the next s1, and for the next s2 given ``s1_next``."""
        x = self.embed(s1, s2, stamp)
        for block in self.transformer:
            x = block(x)
        h = self.norm(x)
        attn = self.dep_layer.cross_attn
        q = attn.heads(attn.q_proj(self.embedding.emb_s1(s1_next)))
        k, v = attn.project_kv(h)
        out = nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=attn.attn_dropout if self.training else 0.0, is_causal=True)
        h2 = self.dep_layer.norm(h + attn.merge(out))
        return self.head.proj_s1(h), self.head.proj_s2(h2)

    @torch.no_grad()
    def prefill(self, s1, s2, stamp, rows_per_window: int, capacity: int,
                rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> DecodeState:
        """Start decoding: the window's shared tokens ``[W, P]`` once, then each row's own tokens.

        ``rows`` (s1, s2, stamp) ``[W * rows_per_window, T]`` are tokens a row already generated that
        are still inside the window (after a window slide); ``capacity`` bounds the tokens per row.
        """
        if s1.shape[1] == 0 and rows is None:
            raise ValueError("prefill needs at least one token")
        attn = self.dep_layer.cross_attn
        prefix_out, rows_out, caches = run_blocks(
            self.transformer, self.embed(s1, s2, stamp), rows_per_window,
            None if rows is None else self.embed(*rows), capacity)
        hidden = self.norm(prefix_out)
        dep = KVCache(*attn.project_kv(hidden))  # the s2 layer attends to the whole window
        if rows is None:
            last = hidden[:, -1].repeat_interleave(rows_per_window, dim=0)
        else:
            rows_hidden = self.norm(rows_out)
            dep.append(*attn.project_kv(rows_hidden), capacity)
            last = rows_hidden[:, -1]
        return DecodeState(caches, dep, capacity, last)

    @torch.no_grad()
    def extend(self, state: DecodeState, s1, s2, stamp) -> None:
        """Feed one new token per row ``[R, 1]``; updates ``state`` in place."""
        x = self.embed(s1, s2, stamp)
        start = state.position
        for block, cache in zip(self.transformer, state.caches):
            x = block(x, start, cache, state.capacity)
        hidden = self.norm(x)
        state.dep.append(*self.dep_layer.cross_attn.project_kv(hidden), state.capacity)
        state.last = hidden[:, -1]

    def s1_logits(self, state: DecodeState) -> torch.Tensor:
        return self.head.proj_s1(state.last)

    @torch.no_grad()
    def s2_logits(self, state: DecodeState, s1: torch.Tensor) -> torch.Tensor:
        """Logits of s2 for each row given its chosen ``s1`` ``[R]``."""
        attn = self.dep_layer.cross_attn
        q = attn.heads(attn.q_proj(self.embedding.emb_s1(s1[:, None])))
        dep = state.dep
        out = attend_with_prefix(q, dep.prefix_k, dep.prefix_v, *dep.filled(q.shape[0]))
        h2 = self.dep_layer.norm(state.last[:, None] + attn.merge(out))
        return self.head.proj_s2(h2[:, 0])
