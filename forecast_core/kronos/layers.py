"""Transformer pieces shared by the Kronos tokenizer and model, with a KV cache built for sampling.

Attribute names (``norm1``, ``self_attn.q_proj``, ``ffn.w1``, ``rotary.inv_freq``, ...) follow the
published checkpoints, so ``state_dict`` keys match them one to one.

The cache is what makes sampling cheap. Many rows (samples x sampling configs) continue the same
context, so the context's keys/values are stored once per *window* (``prefix_k``/``prefix_v``,
``[W, heads, P, head_dim]``) and each row only stores the tokens it generated itself (``k``/``v``,
``[R, heads, T, head_dim]`` with ``R = W * rows_per_window``, rows of a window adjacent). Attention
over the concatenation is computed in two parts with one softmax, so the context is never copied
per row.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt((xf * xf).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, d_model: int, ff_dim: int, dropout: float = 0.0):
        super().__init__()
        self.w1 = nn.Linear(d_model, ff_dim, bias=False)
        self.w3 = nn.Linear(d_model, ff_dim, bias=False)
        self.w2 = nn.Linear(ff_dim, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class Rotary(nn.Module):
    """Rotary position embedding; positions count from the start of the attention window."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)))

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rotate ``x`` ``[..., T, head_dim]`` whose first position is ``start``."""
        t = torch.arange(start, start + x.shape[-2], device=x.device, dtype=self.inv_freq.dtype)
        freqs = t[:, None] * self.inv_freq[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)
        x1, x2 = x.chunk(2, dim=-1)
        return x * angles.cos() + torch.cat((-x2, x1), dim=-1) * angles.sin()


@dataclass
class KVCache:
    """One attention layer's cache: a prefix shared by each window's rows, then each row's suffix.

    ``k``/``v`` are preallocated to ``capacity`` positions; ``length`` of them are filled.
    """

    prefix_k: torch.Tensor  # [W, heads, P, head_dim]
    prefix_v: torch.Tensor
    k: torch.Tensor | None = None  # [R, heads, capacity, head_dim]
    v: torch.Tensor | None = None
    length: int = 0

    def filled(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows' own keys/values so far (possibly none), ``[rows, heads, length, head_dim]``."""
        if self.k is None:
            empty = self.prefix_k.new_empty(rows, self.prefix_k.shape[1], 0, self.prefix_k.shape[3])
            return empty, empty
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def append(self, k: torch.Tensor, v: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k is None:
            shape = (k.shape[0], k.shape[1], capacity, k.shape[3])
            self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        end = self.length + k.shape[2]
        if end > self.k.shape[2]:
            raise RuntimeError(f"KV cache capacity {self.k.shape[2]} exceeded ({end} positions)")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


def attend_with_prefix(q, prefix_k, prefix_v, k, v) -> torch.Tensor:
    """Softmax attention of row queries over [shared window prefix, own suffix].

    q: ``[R, h, Q, d]``, the last Q suffix positions (causal among themselves, see all the prefix);
    prefix: ``[W, h, P, d]``; k/v: ``[R, h, T, d]`` with T >= Q.
    """
    rows, heads, nq, dim = q.shape
    windows, plen = prefix_k.shape[0], prefix_k.shape[2]
    per = rows // windows
    scale = 1.0 / math.sqrt(dim)
    # All rows of a window share the prefix: one [per*Q, P] matmul per window and head.
    qw = q.view(windows, per, heads, nq, dim).transpose(1, 2).reshape(windows, heads, per * nq, dim)
    s_prefix = (qw @ prefix_k.transpose(-1, -2)) * scale
    s_prefix = s_prefix.view(windows, heads, per, nq, plen).transpose(1, 2).reshape(rows, heads, nq, plen)
    s_own = (q @ k.transpose(-1, -2)) * scale
    total = k.shape[2]
    if nq > 1:
        allowed = torch.arange(total, device=q.device)[None, :] <= torch.arange(total - nq, total, device=q.device)[:, None]
        s_own = s_own.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(torch.cat((s_prefix, s_own), dim=-1), dim=-1)
    p_prefix = probs[..., :plen].reshape(windows, per, heads, nq, plen).transpose(1, 2).reshape(windows, heads, per * nq, plen)
    out_prefix = (p_prefix @ prefix_v).view(windows, heads, per, nq, dim).transpose(1, 2).reshape(rows, heads, nq, dim)
    return out_prefix + probs[..., plen:] @ v


class Attention(nn.Module):
    """Multi-head attention with biases and optional RoPE.

    ``forward`` is self-attention, on a whole sequence (causal, no cache: training and prefill) or
    with ``cache=`` to extend each row past a shared prefix. The model's s2 layer uses the pieces
    (``heads``, ``project_kv``, ``merge``) as cross-attention.
    """

    def __init__(self, d_model: int, n_heads: int, rotate: bool = True, attn_dropout: float = 0.0,
                 resid_dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.rotary = Rotary(self.head_dim)  # its inv_freq is part of the checkpoint format even when unused
        self.rotate = rotate
        self.attn_dropout = attn_dropout
        self.resid_dropout = nn.Dropout(resid_dropout)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.n_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.heads(self.k_proj(x))
        return (self.rotary(k, start) if self.rotate else k), self.heads(self.v_proj(x))

    def merge(self, out: torch.Tensor) -> torch.Tensor:
        rows, _, length, _ = out.shape
        return self.resid_dropout(self.out_proj(out.transpose(1, 2).reshape(rows, length, -1)))

    def forward(self, x: torch.Tensor, start: int = 0, cache: KVCache | None = None, capacity: int = 0,
                return_kv: bool = False):
        """Self-attention of ``x`` ``[rows, T, d]`` at window positions ``start .. start+T-1``.

        Without a cache the whole window is in ``x`` (causal SDPA, like upstream). With one, ``x``
        holds each row's newest tokens; their keys are appended to ``cache`` (``capacity`` sizes it).
        ``return_kv`` also returns this call's keys/values (to build a prefix cache).
        """
        q = self.heads(self.q_proj(x))
        if self.rotate:
            q = self.rotary(q, start)
        k, v = self.project_kv(x, start)
        if cache is None:
            dropout = self.attn_dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            k_all, v_all = cache.append(k, v, capacity)
            out = attend_with_prefix(q, cache.prefix_k, cache.prefix_v, k_all, v_all)
        return (self.merge(out), (k, v)) if return_kv else self.merge(out)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm1 x), then + ffn(norm2 x)."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, ffn_dropout: float = 0.0,
                 attn_dropout: float = 0.0, resid_dropout: float = 0.0):
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.self_attn = Attention(d_model, n_heads, True, attn_dropout, resid_dropout)
        self.norm2 = RMSNorm(d_model)
        self.ffn = FeedForward(d_model, ff_dim, ffn_dropout)

    def forward(self, x: torch.Tensor, start: int = 0, cache: KVCache | None = None, capacity: int = 0):
        x = x + self.self_attn(self.norm1(x), start, cache, capacity)
        return x + self.ffn(self.norm2(x))

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        """Run a whole window (positions from 0) and keep its keys/values as a shared prefix."""
        attn, (k, v) = self.self_attn(self.norm1(x), return_kv=True)
        x = x + attn
        return x + self.ffn(self.norm2(x)), KVCache(k, v)


def run_blocks(blocks, prefix: torch.Tensor, rows_per_window: int, suffix: torch.Tensor | None = None,
               capacity: int = 0) -> tuple[torch.Tensor, torch.Tensor | None, list[KVCache]]:
    """Prefill ``prefix`` ``[W, P, d]`` once, then (optionally) extend every row with ``suffix``.

    Returns the prefix's output ``[W, P, d]``, the suffix's output ``[W*rows_per_window, T, d]`` (or
    None) and per-layer caches for further decoding. An empty prefix (P = 0) is allowed.
    """
    caches = []
    x = prefix
    for block in blocks:
        x, cache = block.prefill(x) if prefix.shape[1] else (x, empty_cache(block, prefix))
        caches.append(cache)
    if suffix is None:
        return x, None, caches
    y = suffix
    for block, cache in zip(blocks, caches):
        y = block(y, prefix.shape[1], cache, capacity)
    return x, y, caches


def empty_cache(block: TransformerBlock, prefix: torch.Tensor) -> KVCache:
    attn = block.self_attn
    empty = prefix.new_empty(prefix.shape[0], attn.n_heads, 0, attn.head_dim)
    return KVCache(empty, empty)


def config_from_dict(cls, data: dict, source: str):
    """Build a config dataclass from ``config.json`` (the upstream constructor kwargs), naming bad keys."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    missing = sorted(f.name for f in fields(cls) if f.default is MISSING and f.name not in data)
    if unknown or missing:
        raise ValueError(
            f"{source}: config.json does not describe a {cls.__name__}: "
            + (f"unknown keys {unknown} " if unknown else "")
            + (f"missing keys {missing} " if missing else "")
            + f"(expected keys: {sorted(names)})"
        )
    return cls(**data)
