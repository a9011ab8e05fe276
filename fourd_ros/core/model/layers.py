"""Building blocks of the S-4RC model: attention with external keys/values, AdaLN, embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sincos_2d(h: int, w: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(h*w) x dim fixed 2D sine-cosine position embedding of a token grid (row-major)."""
    quarter = dim // 4
    omega = 1.0 / (100.0 ** (torch.arange(quarter, device=device, dtype=torch.float32)
                             / max(1, quarter)))
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing='ij')
    out = []
    for c in (xs.reshape(-1), ys.reshape(-1)):
        arg = c[:, None] * omega[None]
        out += [torch.sin(arg), torch.cos(arg)]
    emb = torch.cat(out, dim=1)
    return F.pad(emb, (0, dim - emb.shape[1]))


def time_embedding(t: torch.Tensor, dim: int, max_period: float = 1000.0) -> torch.Tensor:
    """B x dim sinusoidal embedding of times ``t`` (B, seconds; any sign)."""
    half = dim // 2
    steps = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * steps / half)
    # times are seconds; x10 so that tenths of a second are resolved by the fastest frequency
    arg = 10.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float = 4.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, int(dim * ratio))
        self.fc2 = nn.Linear(int(dim * ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head attention whose keys/values may be extended by cached ones.

    ``forward(x, context_kv)`` attends from x (B x N x D) to [cached keys/values..., x's own] and
    returns the output and x's own (keys, values), B x heads x N x D/heads, for the cache.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor,
                context_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if context_kv:
            k_all = torch.cat([c[0] for c in context_kv] + [k], dim=2)
            v_all = torch.cat([c[1] for c in context_kv] + [v], dim=2)
        else:
            k_all, v_all = k, v
        out = F.scaled_dot_product_attention(q, k_all, v_all)
        # k and v are views of the fused qkv output: copies, so a cached pair does not keep
        # the queries alive (a third less memory per cached frame)
        out = self.proj(out.transpose(1, 2).reshape(b, n, d))
        return out, (k.contiguous(), v.contiguous())


class CrossAttention(nn.Module):
    """Queries from x, keys/values from another token set."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        m = mem.shape[1]
        h = self.heads
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
        kv = self.kv(mem).reshape(b, m, 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class AdaLN(nn.Module):
    """Layer norm whose scale and shift come from a conditioning vector (zero-initialised)."""

    def __init__(self, dim: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.mod = nn.Linear(cond_dim, 2 * dim)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.mod(cond).unsqueeze(1).chunk(2, dim=-1)
        return self.norm(x) * (1.0 + scale) + shift


def conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv + GroupNorm + GELU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1),
                         nn.GroupNorm(min(8, cout), cout), nn.GELU())
