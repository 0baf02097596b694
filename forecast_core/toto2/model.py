"""The Toto 2.0 network (Datadog's Toto-2.0-{4m,22m,313m,1B,2.5B}), in one readable file.

What the network is (facts from the published ``toto-2`` 2.0.0 package; this is an independent
implementation of the same arithmetic, checked against it by ``tests/parity/test_toto2_parity.py``):

- Input ``[batch, variates, time]`` with ``time`` a multiple of ``patch_size``. A causal scaler gives
  each position the mean and standard deviation of its series up to the end of its patch (float64,
  Welford, Bessel-corrected, floor ``MIN_SCALE``); values are standardised, then squashed by ``asinh``.
- Each patch (its ``patch_size`` squashed values next to ``patch_size`` "unobserved" flags) becomes a
  ``d_model`` vector through a residual MLP.
- ``num_layers`` pre-norm transformer layers in groups of ``layer_group_size``; in each group
  ``num_variate_layers_per_group`` layers attend across variates at the same patch (no position, no
  mask) and the others attend causally along time with rotary embeddings on the first half of each
  query/key head. Attention is grouped-query (``num_groups`` key/value heads), queries and keys are
  RMS-normalised (QK-norm) and the logits are scaled by ``1/qk_dim`` (u-muP), not ``1/sqrt(qk_dim)``.
- u-muP arithmetic: every linear map multiplies its output by ``fan_in ** -0.5`` (readout maps of the
  output head by ``1 / fan_in``); residual branches are mixed as ``(tau * branch + skip) / sqrt(1 +
  tau**2)`` with per-layer ``tau`` from the u-muP depth rule (stored in checkpoints as ``attn_tau`` /
  ``mlp_tau``); the patch and head MLPs use a unit-scaled SiLU (``silu(x) * SILU_SCALE``).
- Output: for the next patch, 9 quantiles (levels 0.1 ... 0.9) per step, in the squashed space; back
  in prices they are ``sinh(q) * scale + loc`` and sorted so they never cross.

Forecasting (``Toto2Model.forecast``): ``horizon`` steps are ``ceil(horizon / patch_size)`` patches.
Single pass (``decode_block_size=None``): append that many empty (unobserved) patches to the context,
run once; the output at the last context patch and at each empty patch but the last predicts the next
patch. Block decoding (a multiple of ``patch_size``): predict ``decode_block_size / patch_size``
patches that way, write their median into the series as observed values, rescale, and predict the
next block, until the horizon is covered. Deterministic: no sampling.

Work skipped, none of it changing a result beyond float rounding (``tests/parity/test_toto2_model.py``
compares against re-running the whole sequence per block): the last empty patch is never fed (no
output needs it, and causal attention hides it from the others); from the last time-wise layer on,
only the positions whose outputs are read are computed; a variate layer over a single variate is its
value projection (softmax over one key is 1). Block decoding keeps, as upstream does, a key/value
cache of the time-wise layers (``KVCache``): each block feeds only the previous block's patches, now
observed, and its own empty ones. That is exact because the scaler is causal and rotary positions are
absolute: an observed patch's inputs, keys and values are the same in every later block. u-muP gains
and residual mixes ride on the GEMMs' alpha/beta (``ScaledLinear``).

Not supported (refused when the config asks for it): ``use_xpos`` (xPos key/query scaling, whose
cached keys upstream depend on the block layout), ``num_output_patches != 1`` (upstream's decoder
cannot use it either) and non-zero dropout. Missing values are not supported either: inputs must be
finite and fully observed.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

QUANTILE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MEDIAN = QUANTILE_LEVELS.index(0.5)
MIN_SCALE = 1e-6  # floor of the causal scaler's standard deviation
ROPE_BASE = 10000.0
ROPE_FRACTION = 0.5  # rotary embeddings on the first half of each query/key head
ROPE_MAX_POSITIONS = 8192  # patches; longer sequences are refused
# u-muP SiLU output scale at mult 1: geometric interpolation between 2 and sqrt(2 / (1 - 1/pi)),
# weight 1 / (1 + 0.25) on the upper end.
SILU_SCALE = math.exp(0.8 * math.log((2 / (1 - 1 / math.pi)) ** 0.5) + 0.2 * math.log(2.0))
# Default clip of real-space quantiles: [context min - K * scale, context max + K * scale] (the
# upstream GluonTS predictor's default; the bare upstream ``forecast`` defaults to no clipping, 0).
QUANTILE_CAP_K = 1e4


class Toto2ConfigError(ValueError):
    """A Toto 2.0 config this implementation cannot build."""


@dataclass(frozen=True)
class Toto2Config:
    """The fields of a published ``config.json`` (same names, same defaults as upstream)."""

    patch_size: int
    d_model: int
    num_heads: int
    num_layers: int
    layer_group_size: int
    num_variate_layers_per_group: int
    variate_layer_first: bool
    residual_attn_ratio: float
    dropout_p: float = 0.0
    norm_eps: float = 5e-5
    attn_bias: bool = False
    mlp_bias: bool = False
    num_output_patches: int = 1
    pre_norm: bool = True  # upstream always pre-norms whatever this says
    d_ff: int | None = None
    qk_dim: int | None = None
    v_dim: int | None = None
    num_groups: int | None = None
    heads_per_group: int | None = None  # derived: num_heads // num_groups
    residual_mult: float = 1.0
    qk_norm: bool = True
    norm_include_weight: bool = False
    qk_norm_include_weight: bool | None = None
    per_dim_scale: bool = False
    use_xpos: bool = False

    def __post_init__(self) -> None:
        # Fill the derived sizes exactly as upstream does, so configs round-trip unchanged.
        derived = {
            "d_ff": self.d_ff or (int(4 * self.d_model * 2 / 3) + 7) // 8 * 8,
            "qk_norm_include_weight": (self.norm_include_weight if self.qk_norm_include_weight is None
                                       else self.qk_norm_include_weight),
            "num_groups": self.num_groups or self.num_heads,
        }
        derived["qk_dim"] = self.qk_dim or self.d_model // self.num_heads
        derived["v_dim"] = self.v_dim or derived["qk_dim"]
        for key, value in derived.items():
            object.__setattr__(self, key, value)
        problems = []
        if self.num_heads < 1 or self.d_model % self.num_heads:
            problems.append(f"d_model {self.d_model} is not a multiple of num_heads {self.num_heads}")
        if self.num_heads % self.num_groups:
            problems.append(f"num_heads {self.num_heads} is not a multiple of num_groups {self.num_groups}")
        elif self.heads_per_group not in (None, self.num_heads // self.num_groups):
            problems.append(f"heads_per_group {self.heads_per_group} != num_heads / num_groups")
        if self.layer_group_size < 1 or self.num_layers % self.layer_group_size:
            problems.append(f"num_layers {self.num_layers} is not a multiple of layer_group_size "
                            f"{self.layer_group_size}")
        if not 0 <= self.num_variate_layers_per_group <= self.layer_group_size:
            problems.append("num_variate_layers_per_group must lie in [0, layer_group_size]")
        if int(self.qk_dim * ROPE_FRACTION) % 2:
            problems.append(f"qk_dim {self.qk_dim}: the rotary half must have an even width")
        if self.dropout_p != 0.0:
            problems.append(f"dropout_p {self.dropout_p} (upstream refuses non-zero dropout too)")
        if self.num_output_patches != 1:
            problems.append(f"num_output_patches {self.num_output_patches} (only 1 is supported)")
        if self.use_xpos:
            problems.append("use_xpos true (xPos scaling is not implemented here)")
        if problems:
            raise Toto2ConfigError("unsupported Toto 2.0 config: " + "; ".join(problems))
        object.__setattr__(self, "heads_per_group", self.num_heads // self.num_groups)

    @classmethod
    def from_dict(cls, raw: dict) -> tuple["Toto2Config", list[str]]:
        """Build from a ``config.json``; returns the config and the keys it ignored.

        Upstream builds its network from these fields only and ignores any other key, so other keys
        cannot change the network; the caller logs them.
        """
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        absent = sorted(required - set(raw))
        if absent:
            raise Toto2ConfigError(f"Toto 2.0 config lacks {absent}")
        return cls(**{k: v for k, v in raw.items() if k in known}), sorted(set(raw) - known)

    def to_dict(self) -> dict:
        return asdict(self)

    def is_variate_layer(self, index: int) -> bool:
        position, n = index % self.layer_group_size, self.num_variate_layers_per_group
        return position < n if self.variate_layer_first else position >= self.layer_group_size - n


# ----------------------------------------------------------------------------------------------
# u-muP building blocks


def rms_normalise(x: torch.Tensor, eps: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps)`` over the last axis (accumulated in float32), times ``weight``."""
    norm = torch.linalg.vector_norm(x.float(), dim=-1, keepdim=True)  # no x^2 temporary
    out = x / (norm.square() / x.shape[-1] + eps).sqrt().to(x.dtype)
    return out * weight if weight is not None else out


class Norm(nn.Module):
    def __init__(self, dim: int, eps: float, with_weight: bool):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if with_weight else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_normalise(x, self.eps, self.weight)


class ScaledLinear(nn.Linear):
    """``nn.Linear`` whose output is multiplied by ``fan_in ** -power`` (u-muP: 0.5, readouts 1).

    ``skip``: return the u-muP residual mix ``(tau * output + skip) / sqrt(1 + tau^2)`` instead, written
    into ``skip`` when autograd is off (no fresh buffer to fault in). Gain and mix ride on the GEMM's
    alpha/beta, so neither costs a pass over the output. ``outputs``: only those output features.
    """

    def __init__(self, fan_in: int, fan_out: int, bias: bool, power: float = 0.5):
        super().__init__(fan_in, fan_out, bias=bias)
        self.gain = 1.0 / fan_in ** power

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, tau: float = 1.0,
                outputs: slice = slice(None)) -> torch.Tensor:
        weight = self.weight[outputs]
        bias = self.bias[outputs] if self.bias is not None else None
        flat = x.reshape(-1, x.shape[-1])
        if skip is None:
            base, beta = (bias, self.gain) if bias is not None else (flat.new_zeros(()), 0.0)
            out = torch.addmm(base, flat, weight.t(), beta=beta, alpha=self.gain)
        else:
            norm = (1 + tau**2) ** 0.5
            alpha = self.gain * tau / norm
            skip = skip.reshape(-1, weight.shape[0])
            if torch.is_grad_enabled():
                out = torch.addmm(skip, flat, weight.t(), beta=1 / norm, alpha=alpha)
            else:
                out = skip.addmm_(flat, weight.t(), beta=1 / norm, alpha=alpha)
            if bias is not None:
                out.add_(bias, alpha=alpha)
        return out.view(*x.shape[:-1], weight.shape[0])


def residual_tau(index: int, depth: int, mult: float, attn_ratio: float) -> float:
    """u-muP depth rule: tau of residual branch ``index`` (attention even, MLP odd) of ``depth``.

    Chosen so that every attention branch contributes alike, every MLP branch alike, their ratio
    is ``attn_ratio`` and all branches together weigh ``mult`` against the embedding.
    """
    alpha_mlp = mult * (2 / (1 + attn_ratio**2)) ** 0.5
    alpha_attn = attn_ratio * alpha_mlp
    attn_before, mlp_before = (index + 1) // 2, index // 2
    alpha = alpha_attn if index % 2 == 0 else alpha_mlp
    return alpha / (depth / 2 + attn_before * alpha_attn**2 + mlp_before * alpha_mlp**2) ** 0.5


class ResidualMLP(nn.Module):
    """``(silu_u(x W1) W2 + x Ws) / sqrt(2)``: the patch embedding and the quantile head.

    ``readout`` (the head): ``W2`` and ``Ws`` scale by ``1 / fan_in`` instead of ``fan_in ** -0.5``.
    """

    def __init__(self, fan_in: int, hidden: int, fan_out: int, readout: bool):
        super().__init__()
        power = 1.0 if readout else 0.5
        self.linear1 = ScaledLinear(fan_in, hidden, bias=True)
        self.linear2 = ScaledLinear(hidden, fan_out, bias=True, power=power)
        self.skip_proj = ScaledLinear(fan_in, fan_out, bias=True, power=power)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.linear1(x), inplace=not torch.is_grad_enabled()).mul_(SILU_SCALE)
        return self.linear2(hidden, skip=self.skip_proj(x), tau=1.0)


# ----------------------------------------------------------------------------------------------
# Attention


class Rotary(nn.Module):
    """Interleaved rotary embedding (pairs ``(0,1), (2,3), ...``) of the first ``width`` dims."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        inverse = 1.0 / torch.pow(ROPE_BASE, torch.arange(0, width, 2, dtype=torch.float32) / width)
        angles = torch.arange(ROPE_MAX_POSITIONS, dtype=torch.float32)[:, None] * inverse[None, :]
        angles = angles.repeat_interleave(2, dim=-1)  # each frequency serves one pair
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """``x``: ``[rows, seq, heads, head_dim]`` at positions ``start .. start+seq-1`` (absolute patches)."""
        end = start + x.shape[1]
        if end > ROPE_MAX_POSITIONS:
            raise ValueError(f"Toto 2.0: {end} patches exceed the {ROPE_MAX_POSITIONS} rotary positions")
        rotated, rest = x[..., : self.width], x[..., self.width:]
        even, odd = rotated[..., 0::2], rotated[..., 1::2]
        turned = torch.stack([-odd, even], dim=-1).flatten(-2)  # (a, b) -> (-b, a) per pair
        cos, sin = self.cos[start:end, None].to(x.dtype), self.sin[start:end, None].to(x.dtype)
        return torch.cat([torch.addcmul(cos * rotated, sin, turned), rest], dim=-1)


class KVCache:
    """Keys and values of the patches fed so far, per time-wise attention layer (block decoding).

    Patches ``[0, length)`` are kept. A forward pass writes its patches' keys/values after them and
    attends to everything up to its own; ``commit(n)`` then keeps its first ``n`` patches (the
    observed ones), and the rest (empty patches being forecast) are overwritten by the next pass.
    Positions are absolute and the scaler is causal, so a kept patch's keys/values never change.
    """

    def __init__(self, capacity: int):
        self.capacity, self.length, self.store = capacity, 0, {}

    def extend(self, layer: nn.Module, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``k``, ``v``: ``[rows, groups, new, dim]`` -> keys/values of patches ``0 .. length+new-1``."""
        end = self.length + k.shape[-2]
        if layer not in self.store:
            self.store[layer] = tuple(t.new_empty(*t.shape[:-2], self.capacity, t.shape[-1]) for t in (k, v))
        keys, values = self.store[layer]
        keys[..., self.length:end, :] = k
        values[..., self.length:end, :] = v
        return keys[..., :end, :], values[..., :end, :]

    def commit(self, patches: int) -> None:
        self.length += patches


class Attention(nn.Module):
    """Grouped-query self-attention with QK-norm; causal + rotary along time, plain across variates."""

    def __init__(self, config: Toto2Config, along_time: bool):
        super().__init__()
        c = config
        self.config, self.along_time = c, along_time
        self.sizes = [c.qk_dim * c.num_heads, c.qk_dim * c.num_groups, c.v_dim * c.num_groups]
        self.in_proj = ScaledLinear(c.d_model, sum(self.sizes), bias=c.attn_bias)
        self.out_proj = ScaledLinear(c.v_dim * c.num_heads, c.d_model, bias=c.attn_bias)
        if c.qk_norm:
            self.q_norm = Norm(c.qk_dim, c.norm_eps, c.qk_norm_include_weight)
            self.k_norm = Norm(c.qk_dim, c.norm_eps, c.qk_norm_include_weight)
        if c.per_dim_scale:
            self._pds = PerDimScale(c.qk_dim)
        self.rotary = Rotary(int(c.qk_dim * ROPE_FRACTION)) if along_time else None

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, queries: int | None = None) -> torch.Tensor:
        """``x``: ``[rows, seq, d_model]``; attends along ``seq`` (after ``cache``'s patches, if any).

        Returns the heads before ``out_proj``, ``[rows, queries or seq, heads * v_dim]``; ``queries``
        keeps only the last positions (their keys/values still come from every position).
        """
        c = self.config
        heads, qk_size = c.num_heads, self.sizes[0] + self.sizes[1]
        qkv = self.in_proj(x)
        qk = qkv[..., :qk_size].unflatten(-1, (heads + c.num_groups, c.qk_dim))  # [rows, seq, heads + groups, dim]
        v = qkv[..., qk_size:].unflatten(-1, (c.num_groups, c.v_dim))
        if c.qk_norm and c.qk_norm_include_weight:
            qk = torch.cat([self.q_norm(qk[..., :heads, :]), self.k_norm(qk[..., heads:, :])], dim=-2)
        elif c.qk_norm:  # queries and keys in one call
            qk = rms_normalise(qk, c.norm_eps)
        if c.per_dim_scale:
            qk = torch.cat([self._pds(qk[..., :heads, :]), qk[..., heads:, :]], dim=-2)
        if self.rotary is not None:
            qk = self.rotary(qk, cache.length if cache is not None else 0)
        q, k = qk[..., :heads, :], qk[..., heads:, :]
        if queries is not None:  # an output layer needs the last few positions only
            q = q[:, -queries:]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [rows, heads, seq, dim]
        if cache is not None:
            k, v = cache.extend(self, k, v)
        q_len, kv_len = q.shape[-2], k.shape[-2]
        mask = None
        if self.along_time and q_len != kv_len:  # queries are the last positions (SDPA's is_causal aligns top-left)
            mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=x.device).tril(kv_len - q_len)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.along_time and mask is None,
                                           scale=1.0 / c.qk_dim, enable_gqa=c.num_groups != c.num_heads)
        return y.transpose(1, 2).flatten(-2)

    def single_key(self, x: torch.Tensor) -> torch.Tensor:
        """Attention over one key (a lone variate): softmax weight 1, so each head returns its group's value."""
        c = self.config
        v = self.in_proj(x, outputs=slice(sum(self.sizes[:2]), None))
        if c.num_groups == c.num_heads:
            return v
        return v.unflatten(-1, (c.num_groups, c.v_dim)).repeat_interleave(c.heads_per_group, dim=-2).flatten(-2)


class PerDimScale(nn.Module):
    """Learned positive per-dimension query gain ``softplus(p) / ln 2`` (1 at ``p = 0``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.per_dim_scale = nn.Parameter(torch.zeros(dim))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return q * (F.softplus(self.per_dim_scale) / math.log(2.0)).to(q.dtype)


class GatedMLP(nn.Module):
    """SwiGLU: the first half of ``fc1`` gates SiLU of the second half; ``skip``/``tau`` as ``ScaledLinear``."""

    def __init__(self, config: Toto2Config):
        super().__init__()
        self.fc1 = ScaledLinear(config.d_model, 2 * config.d_ff, bias=config.mlp_bias)
        self.fc2 = ScaledLinear(config.d_ff, config.d_model, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, tau: float = 1.0) -> torch.Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)
        if torch.is_grad_enabled():
            return self.fc2(gate * F.silu(value), skip=skip, tau=tau)
        return self.fc2(gate.mul_(F.silu(value, inplace=True)), skip=skip, tau=tau)  # in fc1's buffer


class Layer(nn.Module):
    def __init__(self, config: Toto2Config, index: int):
        super().__init__()
        self.attn = Attention(config, along_time=not config.is_variate_layer(index))
        self.ffn = GatedMLP(config)
        self.norm1 = Norm(config.d_model, config.norm_eps, config.norm_include_weight)
        self.norm2 = Norm(config.d_model, config.norm_eps, config.norm_include_weight)
        depth, mult, ratio = 2 * config.num_layers, config.residual_mult, config.residual_attn_ratio
        # Stored in checkpoints (upstream saves them); checked against the rule when loading.
        self.register_buffer("attn_tau", torch.tensor(residual_tau(2 * index, depth, mult, ratio)))
        self.register_buffer("mlp_tau", torch.tensor(residual_tau(2 * index + 1, depth, mult, ratio)))

    def forward(self, x: torch.Tensor, variates: int, taus: tuple[float, float], cache: KVCache | None = None,
                queries: int | None = None) -> torch.Tensor:
        """``x``: ``[batch * variates, seq, d_model]``; ``taus``: this layer's ``(attn_tau, mlp_tau)``;
        ``cache``/``queries``: see ``Attention`` (time layers only)."""
        h = self.norm1(x)
        if self.attn.along_time:
            h = self.attn(h, cache, queries)
            x = x if queries is None else x[:, -queries:]
        elif variates == 1 and not torch.is_grad_enabled():  # training keeps the q/k weights in the graph
            h = self.attn.single_key(h)
        else:  # attend across the variates of each (batch, patch)
            rows, seq, dim = h.shape
            across = h.unflatten(0, (rows // variates, variates)).transpose(1, 2).flatten(0, 1)
            h = self.attn(across).unflatten(0, (rows // variates, seq)).transpose(1, 2).flatten(0, 1)
        x = self.attn.out_proj(h, skip=x, tau=taus[0])
        return self.ffn(self.norm2(x), skip=x, tau=taus[1])


class Transformer(nn.Module):
    def __init__(self, config: Toto2Config):
        super().__init__()
        self.layers = nn.ModuleList(Layer(config, i) for i in range(config.num_layers))
        self.out_norm = Norm(config.d_model, config.norm_eps, config.norm_include_weight)
        self.last_time_layer = max((i for i in range(config.num_layers) if not config.is_variate_layer(i)),
                                   default=-1)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, queries: int | None = None) -> torch.Tensor:
        """``x``: ``[batch, variates, seq, d_model]`` -> same shape, or only the last ``queries`` patches.

        Only the time layers mix positions, so from the last one on just those rows are computed.
        """
        batch, variates = x.shape[:2]
        h = x.flatten(0, 1)
        if queries is not None and self.last_time_layer < 0:
            h = h[:, -queries:]
        # The residual taus as floats for the GEMMs' alpha/beta, read in one go (one device sync).
        taus = torch.stack([torch.stack([layer.attn_tau, layer.mlp_tau]) for layer in self.layers]).tolist()
        for i, layer in enumerate(self.layers):
            h = layer(h, variates, taus[i], cache, queries if i == self.last_time_layer else None)
        return self.out_norm(h).unflatten(0, (batch, variates))


class QuantileHead(nn.Module):
    def __init__(self, config: Toto2Config):
        super().__init__()
        self.patch_size = config.patch_size
        self.proj = ResidualMLP(config.d_model, 4 * config.d_model, config.patch_size * len(QUANTILE_LEVELS),
                                readout=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_model]`` -> ``[..., patch_size, quantiles]`` (squashed, standardised space)."""
        return self.proj(x).unflatten(-1, (self.patch_size, len(QUANTILE_LEVELS)))


# ----------------------------------------------------------------------------------------------
# Scaler


def causal_patch_scaler(values: torch.Tensor, observed: torch.Tensor, patch_size: int):
    """Per position, mean and std of the observed values of its series up to the end of its patch.

    float64 running (Welford) statistics; std is Bessel-corrected (divisor ``max(n - 1, 1)``) and
    floored at ``MIN_SCALE``. Returns ``loc, scale`` shaped like ``values``, in its dtype.
    """
    x, m = values.double(), observed.double()
    count = m.cumsum(-1)
    mean = (x * m).cumsum(-1) / count.clamp(min=1)
    previous = F.pad(mean[..., :-1], (1, 0))
    m2 = ((x - previous) * (x - mean) * m).cumsum(-1)
    std = (m2 / (count - 1).clamp(min=1)).sqrt().clamp(min=MIN_SCALE)

    def end_of_patch(t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (-1, patch_size))[..., -1:].expand(*t.shape[:-1], -1, patch_size).flatten(-2)

    return end_of_patch(mean).to(values.dtype), end_of_patch(std).to(values.dtype)


# ----------------------------------------------------------------------------------------------
# The model


class Toto2Model(nn.Module):
    """Parameters are named like the published checkpoints (``patch_proj.*``, ``transformer.*``,
    ``output_head.param_projection.proj.*``)."""

    def __init__(self, config: Toto2Config):
        super().__init__()
        self.config = config
        self.patch_proj = ResidualMLP(2 * config.patch_size, 4 * config.d_model, config.d_model, readout=False)
        self.transformer = Transformer(config)
        self.output_head = nn.Module()
        self.output_head.param_projection = QuantileHead(config)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_proj.linear1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_proj.linear1.weight.device

    def hidden(self, values: torch.Tensor, observed: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
               cache: KVCache | None = None, queries: int | None = None) -> torch.Tensor:
        """``[batch, variates, time]`` -> ``[batch, variates, patches, d_model]`` after the last norm.

        ``cache``: these patches follow the cached ones; ``queries``: return only the last that many.
        """
        p = self.config.patch_size
        squashed = torch.where(observed, (values - loc) / scale, torch.zeros_like(values)).asinh()
        missing = (~observed).to(values.dtype)
        patches = torch.cat([squashed.unflatten(-1, (-1, p)), missing.unflatten(-1, (-1, p))], dim=-1)
        return self.transformer(self.patch_proj(patches), cache, queries)

    @torch.no_grad()
    def forecast(self, context: torch.Tensor, horizon: int, decode_block_size: int | None = None,
                 quantile_cap_k: float = QUANTILE_CAP_K) -> torch.Tensor:
        """Quantiles of the next ``horizon`` steps: ``[batch, variates, time]`` -> ``[9, batch, variates,
        horizon]`` in price units, sorted along the first axis (levels :data:`QUANTILE_LEVELS`).

        ``context`` must be finite, in the model's dtype, with ``time`` a positive multiple of the patch
        size. ``quantile_cap_k`` > 0 clips each quantile to ``[min - K*s, max + K*s]`` of its series'
        context (``s`` the scale at the last context step); 0 turns the clip off.
        """
        p = self.config.patch_size
        batch, variates, length = context.shape
        if length < p or length % p:
            raise ValueError(f"Toto 2.0: context length {length} must be a positive multiple of the patch "
                             f"size {p}")
        if horizon < 1:
            raise ValueError(f"Toto 2.0: horizon must be >= 1, got {horizon}")
        patches = math.ceil(horizon / p)
        if decode_block_size is None:
            block = patches
        else:
            if decode_block_size < p or decode_block_size % p:
                raise ValueError(f"Toto 2.0: decode_block_size {decode_block_size} must be a positive "
                                 f"multiple of the patch size {p}")
            block = min(decode_block_size // p, patches)
        values = torch.cat([context, context.new_zeros(batch, variates, patches * p)], dim=-1)
        observed = torch.zeros_like(values, dtype=torch.bool)
        observed[..., :length] = True
        cache = KVCache(length // p + patches) if block < patches else None
        out = context.new_empty(len(QUANTILE_LEVELS), batch, variates, patches, p)
        low = high = None
        done = 0
        while done < patches:
            step = min(block, patches - done)
            start, end = length + done * p, length + (done + step) * p
            loc, scale = causal_patch_scaler(values[..., :end], observed[..., :end], p)
            if quantile_cap_k > 0 and low is None:
                margin = quantile_cap_k * scale[..., length - 1: length]
                low = (context.amin(-1, keepdim=True) - margin)[..., None]
                high = (context.amax(-1, keepdim=True) + margin)[..., None]
            # Feed the patches not yet cached up to the block's last one, which no output needs (the
            # output at a patch predicts the next); the last ``step`` outputs predict the block.
            fed = cache.length if cache is not None else 0
            span = slice(fed * p, end - p)
            hidden = self.hidden(values[..., span], observed[..., span], loc[..., span], scale[..., span],
                                 cache, queries=step)
            if cache is not None:
                cache.commit(start // p - fed)  # the observed ones: context, or the previous block
            squashed = self.output_head.param_projection(hidden).movedim(-1, 0)
            shape = (batch, variates, step, p)
            real = squashed.sinh() * scale[..., start:end].reshape(shape) + loc[..., start:end].reshape(shape)
            real = _replace_infinities(real)
            if low is not None:
                real = torch.maximum(torch.minimum(real, high), low)
            real = real.sort(dim=0).values
            out[:, :, :, done:done + step] = real
            done += step
            if done < patches:  # the median becomes the observed past of the next block
                values[..., start:end] = real[MEDIAN].flatten(-2)
                observed[..., start:end] = True
        return out.flatten(-2)[..., :horizon]


def _replace_infinities(x: torch.Tensor) -> torch.Tensor:
    """Within each patch, +inf becomes the largest finite value and -inf the smallest (as upstream)."""
    finite = x.isfinite()
    largest = torch.where(finite, x, torch.full_like(x, -math.inf)).amax(-1, keepdim=True)
    smallest = torch.where(finite, x, torch.full_like(x, math.inf)).amin(-1, keepdim=True)
    x = torch.where(x == math.inf, largest.expand_as(x), x)
    return torch.where(x == -math.inf, smallest.expand_as(x), x)
