"""Random draws for Toto's Student-T mixture that do not depend on how samples are chunked.

The random stream is cut into fixed blocks of ``BLOCK`` sample paths. Block ``b`` of decoding
step ``j`` of a window with seed ``s`` has its own ``torch.Generator`` seeded from ``(s, j, b)``,
so sample path ``i`` always gets the same numbers: whatever ``samples_per_batch`` is, however
windows are batched, and a smaller ``num_samples`` is a prefix of a larger one.

Student-T variates use Bailey's polar method: the rejection step only looks at uniforms, never
at the degrees of freedom, so how many numbers a block consumes is fixed by its seed and a
tiny float difference in the model output cannot shift the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .model import Mixture

BLOCK = 64
ROUNDS = 4


@dataclass
class Uniforms:
    """Per sample and output step: a uniform picking the component and Bailey's accepted (u, w)."""

    component: torch.Tensor
    u: torch.Tensor
    w: torch.Tensor


def block_generator(seed: int, step: int, block: int) -> torch.Generator:
    words = np.random.SeedSequence([int(seed) % 2**64, step, block]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(words[0]) | (int(words[1]) << 32))


def _block(seed: int, step: int, block: int, shape: tuple[int, ...]) -> Uniforms:
    gen = block_generator(seed, step, block)
    size = (BLOCK, *shape)
    component = torch.rand(size, generator=gen, dtype=torch.float64)
    n = component.numel()
    # ROUNDS candidate points per element at once; the first inside the unit disc is kept.
    ab = torch.rand((ROUNDS, 2, n), generator=gen, dtype=torch.float64) * 2 - 1
    r2 = ab[:, 0] ** 2 + ab[:, 1] ** 2
    inside = (r2 <= 1) & (r2 > 0)
    u, w, done = ab[0, 0], r2[0], inside[0]
    for r in range(1, ROUNDS):
        take = inside[r] & ~done
        u, w, done = torch.where(take, ab[r, 0], u), torch.where(take, r2[r], w), done | take
    every = torch.arange(n)
    pending = every[~done]
    while pending.numel():  # all ROUNDS outside: 0.215**ROUNDS per element, then more draws
        a = torch.rand(pending.numel(), generator=gen, dtype=torch.float64) * 2 - 1
        b = torch.rand(pending.numel(), generator=gen, dtype=torch.float64) * 2 - 1
        r2 = a * a + b * b
        ok = (r2 <= 1) & (r2 > 0)
        u[pending[ok]], w[pending[ok]] = a[ok], r2[ok]
        pending = pending[~ok]
    return Uniforms(component, u.view(size), w.view(size))


def uniforms(seed: int, step: int, start: int, stop: int, shape: tuple[int, ...]) -> Uniforms:
    """The draws of sample paths ``[start, stop)`` of one window at one decoding step."""
    blocks = [_block(seed, step, b, shape) for b in range(start // BLOCK, (stop - 1) // BLOCK + 1)]
    offset = start - (start // BLOCK) * BLOCK
    pick = slice(offset, offset + stop - start)
    return Uniforms(*(torch.cat([getattr(b, f) for b in blocks])[pick] for f in ("component", "u", "w")))


def stack(per_window: list[Uniforms]) -> Uniforms:
    return Uniforms(*(torch.stack([getattr(x, f) for x in per_window]) for f in ("component", "u", "w")))


def draw(mixture: Mixture, rand: Uniforms) -> torch.Tensor:
    """Sample the mixture (params ``[..., K]`` broadcastable to the draws' shape) in float64."""
    weights = mixture.log_weights.double().exp()
    cdf = torch.cumsum(weights, -1)
    k = weights.shape[-1]
    pick = (rand.component[..., None] > cdf).sum(-1, keepdim=True).clamp(max=k - 1)
    shape = (*rand.component.shape, k)
    df, loc, scale = (torch.gather(p.double().expand(shape), -1, pick)[..., 0]
                      for p in (mixture.df, mixture.loc, mixture.scale))
    # Bailey (1994): T = U * sqrt(df * (W^(-2/df) - 1) / W) for (U, V) uniform in the unit disc.
    t = rand.u * torch.sqrt(df * (rand.w ** (-2.0 / df) - 1.0) / rand.w)
    return loc + scale * t
