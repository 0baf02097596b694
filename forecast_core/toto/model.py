"""The Toto network (Datadog's Toto-Open-Base-1.0 architecture), written for inference-time tuning.

Same weights and numbers as ``toto-ts`` 0.2.0, organised differently:

- ``encode`` runs the context once and keeps the time-wise keys/values of every window;
  ``decode`` feeds one sampled patch per row (row = window x sample) against that shared cache.
- Only the last position is unembedded at inference (768 -> 49,152 is the largest matrix).
- The causal patch scaler runs in float64 and carries a running state (count, sum, Welford M2)
  so decoded patches update it without rescanning the context.

Checkpoint format: ``config.json`` (the upstream constructor kwargs) + ``model.safetensors`` with
keys ``model.patch_embed.projection.*``, ``model.transformer.layers.{i}.{norm1,norm2}.scale``,
``...attention.{wQKV,wO}.*``, ``...mlp.{0,2}.*`` (or fused ``mlp.0.w12``/``mlp.0.w3``),
``model.unembed.*``, ``model.output_distribution.{df,loc_proj,scale_proj,mixture_weights}.*``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from forecast_core.checkpoints import (
    WEIGHTS_FILE, CheckpointError, load_strict, read_config, resolve_checkpoint, save_checkpoint,
)

log = logging.getLogger(__name__)

SCALER_CLASS = "<class 'model.scaler.CausalPatchStdMeanScaler'>"
MIXTURE_CLASS = "<class 'model.distribution.MixtureOfStudentTsOutput'>"
MIN_SCALE = 0.1  # upstream CausalPatchStdMeanScaler default; not part of config.json
XPOS_SCALE_BASE = 512.0  # rotary-embedding-torch default used by upstream
ROPE_THETA = 10000.0
# CPU BLAS picks other kernels (other rounding) for very small matrices (measured on AVX-512 MKL: one
# row rounds differently from two or more). Padding network passes to at least this many rows keeps
# small calls on the kernels large ones use. It does not make a row's result independent of the row
# count: kernels also split work by shape (vector body vs scalar tail of elementwise ops, blocking,
# threads), per CPU. The guarantee that holds is stated in forecaster.py (BATCH_RTOL).
MIN_ROWS = 16
# Buffers this implementation recomputes that published or older checkpoints may carry: the rotary
# frequencies, and the xPos scales rotary-embedding-torch before 0.5 saved (persistent buffers then).
# A checkpoint key ending so is dropped with a log line naming it; weights stay strictly checked.
COMPUTED_BUFFERS = ("rotary_emb.freqs", "rotary_emb.scale")
# Keys that carry no architecture (upstream kernels / legacy flags): accepted and ignored.
_IGNORED_CONFIG_KEYS = {"use_memory_efficient_attention", "pre_xformers_checkpoint"}


@dataclass(frozen=True)
class TotoConfig:
    patch_size: int = 64
    stride: int = 64
    embed_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_hidden_dim: int = 3072
    dropout: float = 0.1  # training-time only; inference never drops
    spacewise_every_n_layers: int = 12
    spacewise_first: bool = True
    k_components: int = 24
    stabilize_with_global: bool = True
    scale_factor_exponent: float = 10.0

    def __post_init__(self) -> None:
        problems = []
        if self.stride != self.patch_size:
            problems.append(f"stride {self.stride} != patch_size {self.patch_size} (overlapping patches unsupported)")
        if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 2:
            problems.append(f"embed_dim {self.embed_dim} must split into {self.num_heads} heads of even size")
        n = self.spacewise_every_n_layers
        if n != -1 and (n < 1 or self.num_layers % n):
            problems.append(f"num_layers {self.num_layers} is not a multiple of spacewise_every_n_layers {n}")
        if problems:
            raise CheckpointError("invalid Toto config: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def layer_is_spacewise(self) -> list[bool]:
        """Same layout rule as upstream: one space-wise layer per block, first or last in the block."""
        n = self.spacewise_every_n_layers
        if n == -1:
            return [False] * self.num_layers
        block = [False] * (n - 1)
        block = [True] + block if self.spacewise_first else block + [True]
        return block * (self.num_layers // n)

    @classmethod
    def from_dict(cls, raw: dict) -> "TotoConfig":
        """Read an upstream ``config.json``; unknown keys are an error (they may change the network)."""
        raw = dict(raw)
        scaler = raw.pop("scaler_cls", SCALER_CLASS)
        heads = raw.pop("output_distribution_classes", [MIXTURE_CLASS])
        kwargs = raw.pop("output_distribution_kwargs", None) or {}
        if scaler != SCALER_CLASS:
            raise CheckpointError(f"unsupported scaler_cls {scaler!r}; this implementation supports {SCALER_CLASS}")
        if list(heads) != [MIXTURE_CLASS]:
            raise CheckpointError(f"unsupported output_distribution_classes {heads}; expected [{MIXTURE_CLASS!r}]")
        for key in _IGNORED_CONFIG_KEYS:
            raw.pop(key, None)
        known = set(cls.__dataclass_fields__) - {"k_components"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CheckpointError(f"unknown Toto config keys {unknown}; known: {sorted(known | _IGNORED_CONFIG_KEYS)}")
        if "k_components" not in kwargs:
            raise CheckpointError("config output_distribution_kwargs lacks k_components (mixture size)")
        return cls(**raw, k_components=int(kwargs["k_components"]))

    def to_dict(self) -> dict:
        """The ``config.json`` upstream ``Toto(**config)`` accepts."""
        out = asdict(self)
        out["output_distribution_kwargs"] = {"k_components": out.pop("k_components")}
        out["scaler_cls"] = SCALER_CLASS
        out["output_distribution_classes"] = [MIXTURE_CLASS]
        out["use_memory_efficient_attention"] = False
        return out


# ----------------------------------------------------------------------------------------------
# Causal patch scaler (float64)


@dataclass
class ScalerState:
    """Running statistics of everything seen so far, per (row, variate), float64.

    ``low``/``high`` are the global-stabilisation bounds, fixed from the context alone.
    """

    count: torch.Tensor
    total: torch.Tensor
    m2: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    def select(self, index: torch.Tensor) -> "ScalerState":
        return ScalerState(*(t[index] for t in (self.count, self.total, self.m2, self.low, self.high)))


def context_scaler_state(context: torch.Tensor, config: TotoConfig) -> ScalerState:
    """Empty running statistics plus the clamp bounds from the whole context ``[B, V, T]`` float64."""
    zeros = torch.zeros(context.shape[:-1], dtype=torch.float64, device=context.device)
    if config.stabilize_with_global:
        mean = context.mean(-1, keepdim=True)
        glob = torch.sqrt(((context - mean) ** 2).mean(-1) + MIN_SCALE)
        low = torch.clamp(glob * 10.0 ** (-config.scale_factor_exponent), min=MIN_SCALE)
        high = glob * 10.0**config.scale_factor_exponent
    else:
        low, high = torch.full_like(zeros, MIN_SCALE), torch.full_like(zeros, math.inf)
    return ScalerState(zeros, zeros.clone(), zeros.clone(), low, high)


def scale_patches(values: torch.Tensor, state: ScalerState, patch_size: int):
    """Scale ``values [B, V, n*patch]`` (float64) patch by patch with causal statistics.

    Each patch uses mean/std of all data up to its own end (Welford, Bessel-corrected, +MIN_SCALE
    under the square root, clamped to the global bounds). Returns scaled values, per-patch
    loc and scale ``[B, V, n]`` and the updated state.
    """
    steps = torch.arange(1, values.shape[-1] + 1, dtype=torch.float64, device=values.device)
    count = state.count[..., None] + steps
    total = state.total[..., None] + torch.cumsum(values, -1)
    mean = total / count
    first_prev = (state.total / state.count.clamp(min=1.0))[..., None]
    prev = torch.cat([first_prev, mean[..., :-1]], -1)
    m2 = state.m2[..., None] + torch.cumsum((values - prev) * (values - mean), -1)
    scale = torch.sqrt(m2 / (count - 1.0).clamp(min=1.0) + MIN_SCALE)
    ends = slice(patch_size - 1, None, patch_size)
    loc, scale = mean[..., ends], scale[..., ends]
    scale = torch.minimum(torch.maximum(scale, state.low[..., None]), state.high[..., None])
    scaled = (values - loc.repeat_interleave(patch_size, -1)) / scale.repeat_interleave(patch_size, -1)
    new_state = ScalerState(count[..., -1], total[..., -1], m2[..., -1], state.low, state.high)
    return scaled, loc, scale, new_state


# ----------------------------------------------------------------------------------------------
# Network


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps) * self.scale


class SwiGLU(nn.Module):
    """Gate is the FIRST half of the doubled projection (the xFormers order upstream uses)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = x.chunk(2, dim=-1)
        return F.silu(gate) * value


class XPosRotary(nn.Module):
    """Interleaved rotary embedding with xPos scaling, as ``rotary-embedding-torch`` 0.8.6 + Toto.

    Quirks kept for parity: the xPos exponent is centred on ``max(position) // 2`` of the current
    call (so cached keys keep the scale of the call that made them), and the per-pair scales are
    tiled ``[s, s]`` rather than interleaved like the angles.
    """

    def __init__(self, head_dim: int):
        super().__init__()
        even = torch.arange(0, head_dim, 2).float()
        self.register_buffer("inv_freq", 1.0 / ROPE_THETA ** (even / head_dim), persistent=False)
        self.register_buffer("xpos", (even + 0.4 * head_dim) / (1.4 * head_dim), persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        """Rotate ``q, k [..., T, head_dim]`` at float ``positions [T]``."""
        # float32 tables even when the model runs in bfloat16 (the buffers follow model.to(dtype))
        angles = (positions[:, None] * self.inv_freq.float()).repeat_interleave(2, -1)
        power = (positions - torch.div(positions.max(), 2, rounding_mode="floor")) / XPOS_SCALE_BASE
        scale = self.xpos.float() ** power[:, None]
        scale = torch.cat([scale, scale], -1).to(q.dtype)
        cos, sin = angles.cos().to(q.dtype), angles.sin().to(q.dtype)
        q = q * cos * scale + _rotate_pairs(q) * sin * scale
        inv = scale**-1
        k = k * cos * inv + _rotate_pairs(k) * sin * inv
        return q, k


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack([-pairs[..., 1], pairs[..., 0]], -1).flatten(-2)


class Attention(nn.Module):
    """Multi-head attention; ``wQKV`` packs its output as (qkv, head_dim, heads), heads fastest."""

    def __init__(self, config: TotoConfig):
        super().__init__()
        self.heads, self.head_dim = config.num_heads, config.head_dim
        self.wQKV = nn.Linear(config.embed_dim, 3 * config.embed_dim)
        self.wO = nn.Linear(config.embed_dim, config.embed_dim)

    def qkv(self, x: torch.Tensor):
        """``x [B, T, E]`` -> q, k, v each ``[B, heads, T, head_dim]``."""
        b, t, _ = x.shape
        return self.wQKV(x).view(b, t, 3, self.head_dim, self.heads).permute(2, 0, 4, 1, 3).unbind(0)

    def out(self, y: torch.Tensor) -> torch.Tensor:
        return self.wO(y.transpose(1, 2).flatten(2))


class TransformerLayer(nn.Module):
    """Pre-norm block: RMSNorm -> attention (over time or over variates) -> RMSNorm -> SwiGLU MLP."""

    def __init__(self, config: TotoConfig, spacewise: bool):
        super().__init__()
        self.spacewise = spacewise
        self.norm1 = RMSNorm(config.embed_dim)
        self.norm2 = RMSNorm(config.embed_dim)
        self.attention = Attention(config)
        self.mlp = nn.Sequential(
            nn.Linear(config.embed_dim, 2 * config.mlp_hidden_dim),
            SwiGLU(),
            nn.Linear(config.mlp_hidden_dim, config.embed_dim),
        )

    def forward(self, x, rotary, positions, past=None):
        """``x [B, V, T, E]``. Time-wise layers return their new (k, v) ``[B*V, heads, T, hd]``.

        ``past`` = cached (k, v) ``[B*V, heads, M, hd]`` for decoding one patch (T = 1) against them.
        """
        b, v, t, e = x.shape
        h = self.norm1(x)
        if self.spacewise:  # every time step attends across its variates (all in one group)
            q, k, val = self.attention.qkv(h.transpose(1, 2).reshape(b * t, v, e))
            y = self.attention.out(F.scaled_dot_product_attention(q, k, val))
            x = x + y.view(b, t, v, e).transpose(1, 2)
            new_kv = None
        else:
            q, k, val = self.attention.qkv(h.reshape(b * v, t, e))
            q, k = rotary(q, k, positions)
            new_kv = (k, val)
            if past is None:
                y = F.scaled_dot_product_attention(q, k, val, is_causal=True)
            else:  # one query per row; elementwise so each row's result ignores the batch size
                keys = torch.cat([past[0], k], 2)
                values = torch.cat([past[1], val], 2)
                weights = torch.softmax((q * keys).sum(-1) / math.sqrt(q.shape[-1]), -1)
                y = (weights[..., None] * values).sum(2, keepdim=True)
            x = x + self.attention.out(y).view(b, v, t, e)
        return x + self.mlp(self.norm2(x)), new_kv


class PatchEmbedding(nn.Module):
    def __init__(self, config: TotoConfig):
        super().__init__()
        self.projection = nn.Linear(config.patch_size, config.embed_dim)


class Transformer(nn.Module):
    def __init__(self, config: TotoConfig):
        super().__init__()
        self.rotary = XPosRotary(config.head_dim)
        self.layers = nn.ModuleList(TransformerLayer(config, s) for s in config.layer_is_spacewise())


class MixtureOfStudentT(nn.Module):
    """Per output step: K Student-T components (df > 2) and their mixture weights."""

    def __init__(self, config: TotoConfig):
        super().__init__()
        k = config.k_components
        self.df = nn.Linear(config.embed_dim, k)
        self.loc_proj = nn.Linear(config.embed_dim, k)
        self.scale_proj = nn.Linear(config.embed_dim, k)
        self.mixture_weights = nn.Linear(config.embed_dim, k)

    def forward(self, x: torch.Tensor) -> "Mixture":
        eps = torch.finfo(x.dtype).eps
        return Mixture(
            df=2.0 + F.softplus(self.df(x)).clamp_min(eps),
            loc=self.loc_proj(x),
            scale=F.softplus(self.scale_proj(x)).clamp_min(eps),
            log_weights=torch.log_softmax(self.mixture_weights(x), -1),
        )


@dataclass
class Mixture:
    """Mixture parameters in scaled space, each ``[..., K]``."""

    df: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor
    log_weights: torch.Tensor

    def mean(self) -> torch.Tensor:
        return (self.log_weights.exp() * self.loc).sum(-1)

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """Log density of ``y [...]`` (training objective)."""
        z = (y[..., None] - self.loc) / self.scale
        df = self.df
        log_t = (
            torch.lgamma((df + 1) / 2) - torch.lgamma(df / 2) - 0.5 * torch.log(df * math.pi)
            - torch.log(self.scale) - (df + 1) / 2 * torch.log1p(z * z / df)
        )
        return torch.logsumexp(self.log_weights + log_t, -1)

    def map(self, fn) -> "Mixture":
        return Mixture(fn(self.df), fn(self.loc), fn(self.scale), fn(self.log_weights))


class TotoBackbone(nn.Module):
    def __init__(self, config: TotoConfig):
        super().__init__()
        self.patch_embed = PatchEmbedding(config)
        self.transformer = Transformer(config)
        self.unembed = nn.Linear(config.embed_dim, config.embed_dim * config.patch_size)
        self.output_distribution = MixtureOfStudentT(config)


@dataclass
class Encoded:
    """What ``encode`` keeps per window: the time-wise cache and the scaler state.

    ``kv[i]`` = (k, v) ``[W*V, heads, N, hd]`` of the i-th time-wise layer. ``next`` is the mixture
    for the first future patch ``[W, V, patch, K]``, ``loc``/``scale`` ``[W, V]`` float64 map it
    back to prices.
    """

    kv: list
    scaler: ScalerState
    num_patches: int
    next: Mixture
    loc: torch.Tensor
    scale: torch.Tensor


@dataclass
class Rows:
    """Decoding state of R sample paths: their window, scaler state and own cached patches."""

    window: torch.Tensor  # [R] index into the encoded windows
    scaler: ScalerState
    kv: list  # per time-wise layer (k, v) [R*V, heads, step, hd] of the decoded patches
    step: int = 0  # patches decoded so far

    @classmethod
    def start(cls, encoded: Encoded, window: torch.Tensor) -> "Rows":
        return cls(window, encoded.scaler.select(window), [])


def _log_computed_buffers(directory: Path) -> None:
    """Name the computed buffers a checkpoint carries (``load_strict`` drops them); reads keys only."""
    from safetensors import safe_open

    try:
        with safe_open(str(Path(directory) / WEIGHTS_FILE), framework="pt") as handle:
            dropped = sorted(k for k in handle.keys() if k.endswith(COMPUTED_BUFFERS))
    except Exception:  # unreadable: load_strict raises the CheckpointError that names the file
        return
    if dropped:
        log.info("toto: %s carries %d buffer(s) recomputed here, dropped: %s", directory, len(dropped), dropped)


class TotoModel(nn.Module):
    """Toto with its config; parameters live under ``model.`` like the published checkpoint."""

    def __init__(self, config: TotoConfig):
        super().__init__()
        self.config = config
        self.model = TotoBackbone(config)

    # -- loading / saving ------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, source: str | Path, revision: str | None = None, device="cpu",
                        dtype: torch.dtype = torch.float32) -> "TotoModel":
        """Build from ``config.json`` and load ``model.safetensors`` strictly (local dir or HF repo id)."""
        directory = resolve_checkpoint(source, revision)
        model = cls(TotoConfig.from_dict(read_config(directory)))
        fused = {}
        for i in range(model.config.num_layers):
            mlp = f"model.transformer.layers.{i}.mlp."
            fused[mlp + "0.w12."] = mlp + "0."
            fused[mlp + "0.w3."] = mlp + "2."
        _log_computed_buffers(directory)
        load_strict(model, directory, rename=fused, computed_suffixes=COMPUTED_BUFFERS)
        return model.to(device=device, dtype=dtype).eval()

    def save(self, directory: str | Path) -> Path:
        return save_checkpoint(self, self.config.to_dict(), Path(directory))

    # -- computation -----------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.model.unembed.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.unembed.weight.device

    @classmethod
    def compile_targets(cls) -> tuple:
        """The per-step hot path worth ``torch.compile``: the transformer layers and the last-position head.

        ``forecast_core.compiled`` replaces these methods on one instance by compiled wrappers of the
        same name (the class stays eager; deleting the instance attributes restores it)."""
        return cls._run_layers, cls._head

    def _embed(self, scaled: torch.Tensor) -> torch.Tensor:
        patches = scaled.to(self.dtype).unflatten(-1, (-1, self.config.patch_size))
        return self.model.patch_embed.projection(patches)

    def _run_layers(self, x: torch.Tensor, positions: torch.Tensor, past=None):
        new_kv, cache_i = [], 0
        for layer in self.model.transformer.layers:
            layer_past = None if past is None or layer.spacewise else past[cache_i]
            x, kv = layer(x, self.model.transformer.rotary, positions, layer_past)
            if kv is not None:
                new_kv.append(kv)
                cache_i += 1
        return x, new_kv

    def _check_context(self, context: torch.Tensor) -> None:
        p = self.config.patch_size
        if context.ndim != 3 or context.shape[-1] == 0 or context.shape[-1] % p:
            raise ValueError(
                f"context must be [batch, variates, time] with time a positive multiple of the patch size {p} "
                f"(no zero left-padding); got shape {tuple(context.shape)}: trim the oldest bars"
            )

    def forward(self, context: torch.Tensor) -> tuple[Mixture, torch.Tensor, torch.Tensor]:
        """Teacher-forced pass (training): mixtures predicting every next patch.

        Returns the mixture ``[B, V, N, patch, K]`` for patches 1..N (scaled by the loc/scale of the
        patch before), and those loc, scale ``[B, V, N]`` float64.
        """
        self._check_context(context)
        state = context_scaler_state(context, self.config)
        scaled, loc, scale, _ = scale_patches(context, state, self.config.patch_size)
        positions = torch.arange(loc.shape[-1], dtype=torch.float32, device=context.device)
        hidden, _ = self._run_layers(self._embed(scaled), positions)
        out = self.model.unembed(hidden).unflatten(-1, (self.config.patch_size, self.config.embed_dim))
        return self.model.output_distribution(out), loc, scale

    @torch.no_grad()
    def encode(self, context: torch.Tensor) -> Encoded:
        """Run the context ``[W, V, T]`` (float64 prices, T a multiple of the patch size) once."""
        self._check_context(context)
        w, v, t = context.shape
        n = t // self.config.patch_size
        pad = max(0, math.ceil(MIN_ROWS / (v * n)) - w)
        context = torch.cat([context, context[:1].expand(pad, v, t)])
        state = context_scaler_state(context, self.config)
        scaled, loc, scale, state = scale_patches(context, state, self.config.patch_size)
        positions = torch.arange(n, dtype=torch.float32, device=context.device)
        hidden, kv = self._run_layers(self._embed(scaled), positions)
        mixture = self._head(hidden[:w, :, -1])
        kv = [(k[: w * v], val[: w * v]) for k, val in kv]
        return Encoded(kv, state.select(slice(0, w)), n, mixture, loc[:w, :, -1], scale[:w, :, -1])

    @torch.no_grad()
    def decode(self, encoded: Encoded, rows: "Rows", patch: torch.Tensor):
        """Feed one new patch per row ``[R, V, patch]`` (float64 prices) against the shared cache.

        Returns the mixture for the following patch ``[R, V, patch, K]``, its loc and scale
        ``[R, V]`` (float64) and the rows' updated decoding state.
        """
        v = patch.shape[1]
        scaled, loc, scale, scaler = scale_patches(patch, rows.scaler, self.config.patch_size)
        index = (rows.window[:, None] * v + torch.arange(v, device=patch.device)).flatten()
        past = [(k[index], val[index]) for k, val in encoded.kv]
        if rows.kv:
            past = [(torch.cat([c[0], o[0]], 2), torch.cat([c[1], o[1]], 2)) for c, o in zip(past, rows.kv)]
        position = torch.tensor([encoded.num_patches + rows.step], dtype=torch.float32, device=patch.device)
        hidden, new_kv = self._run_layers(self._embed(scaled), position, past)
        if rows.kv:
            new_kv = [(torch.cat([o[0], n[0]], 2), torch.cat([o[1], n[1]], 2)) for o, n in zip(rows.kv, new_kv)]
        return self._head(hidden[:, :, -1]), loc[..., -1], scale[..., -1], Rows(rows.window, scaler, new_kv,
                                                                                  rows.step + 1)

    def _head(self, last: torch.Tensor) -> Mixture:
        """Unembed only the last position ``[B, V, E]`` -> mixture ``[B, V, patch, K]``."""
        flat = last.reshape(-1, last.shape[-1])
        rows = flat.shape[0]
        flat = torch.cat([flat, flat[:1].expand(max(0, MIN_ROWS - rows), -1)])
        out = self.model.unembed(flat)[:rows].view(*last.shape[:-1], self.config.patch_size, -1)
        return self.model.output_distribution(out)
