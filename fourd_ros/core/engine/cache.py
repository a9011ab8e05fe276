"""Bounded latent cache: anchor frame + last K frames + keyframes, within memory budgets (host
and each accelerator)."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass

from fourd_ros.core.engine.backend import CacheEntry


@dataclass
class CachePolicy:
    """Retention policy of the latent cache.

    Attributes:
        budget_mb: hard budget of the cached entries in host memory ('cpu': numpy arrays, and
            tensors of a model on the CPU), MiB.
        recent: number of most recent frames always kept (if the budgets allow).
        max_keyframes: keyframes kept besides the recent frames (oldest evicted first).
        keep_anchor: keep the first frame of the stream (the world frame's origin).
        device_budget_mb: hard budget of the cached entries on each accelerator ('cuda:0',
            ...: a model's keys/values on the GPU), MiB; None = `budget_mb`. Host and device
            memory are separate resources: a GPU's latents do not crowd out the host's
            arrays, nor the other way round.
    """

    budget_mb: float = 256.0
    recent: int = 30
    max_keyframes: int = 32
    keep_anchor: bool = True
    device_budget_mb: float | None = None

    def budget_bytes(self, device: str) -> float:
        """The budget of `device` ('cpu', 'cuda:0', ...), bytes."""
        mb = self.budget_mb if device == 'cpu' or self.device_budget_mb is None \
            else self.device_budget_mb
        return mb * 2**20


def budget_policy(budget_mb: float | None = None, device_budget_mb: float | None = None,
                  **policy: int | bool) -> CachePolicy:
    """A retention policy with these budgets, MiB (`budget_mb` None: the default; the device's
    None or 0: the host's) and the other `CachePolicy` fields given. Raises ValueError for a
    host budget <= 0 or a negative device budget."""
    if budget_mb is not None and not budget_mb > 0:
        raise ValueError(f'the host cache budget must be > 0 MiB, got {budget_mb:g}')
    if device_budget_mb is not None and not device_budget_mb >= 0:
        raise ValueError(f"the device cache budget must be >= 0 MiB (0: the host's), got "
                         f'{device_budget_mb:g}')
    out = CachePolicy(device_budget_mb=device_budget_mb or None, **policy)
    if budget_mb is not None:
        out.budget_mb = float(budget_mb)
    return out


class LatentCache:
    """Cached frames ordered by stamp; evicts by policy, never grows past the budget.

    Not thread-safe by itself: the engine guards it with its lock.
    """

    def __init__(self, policy: CachePolicy) -> None:
        self.policy = policy
        self._entries: list[CacheEntry] = []
        self._stamps: list[float] = []
        self._bytes: Counter[str] = Counter()
        self.evicted_count = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """All cached bytes, every device."""
        return sum(self._bytes.values())

    @property
    def megabytes(self) -> float:
        return self.nbytes / 2**20

    def nbytes_by_device(self) -> dict[str, int]:
        """Cached bytes per device ('cpu', 'cuda:0', ...)."""
        return {d: n for d, n in self._bytes.items() if n}

    def entries(self) -> list[CacheEntry]:
        """Cached entries, oldest first (a copy of the list; the entries are shared)."""
        return list(self._entries)

    def latest(self) -> CacheEntry | None:
        return self._entries[-1] if self._entries else None

    def get(self, stamp: float, tolerance: float = 1e-6) -> CacheEntry | None:
        """The entry whose stamp equals `stamp` within `tolerance` seconds, else None."""
        i = bisect.bisect_left(self._stamps, stamp - tolerance)
        if i < len(self._stamps) and abs(self._stamps[i] - stamp) <= tolerance:
            return self._entries[i]
        return None

    def between(self, first: CacheEntry, last: CacheEntry) -> list[CacheEntry]:
        """Cached entries strictly between two entries in time (oldest first)."""
        lo, hi = sorted((first.stamp, last.stamp))
        return [e for e in self._entries if lo < e.stamp < hi]

    def oversize(self, entry: CacheEntry) -> str:
        """'' when the entry alone fits every device's budget (else `add` refuses it), else
        what does not fit ('2.0 MiB on cuda:0, budget 1 MiB')."""
        for device, n in sorted(entry.nbytes_by_device.items()):
            budget = self.policy.budget_bytes(device)
            if n > budget:
                return f'{n / 2**20:.1f} MiB on {device}, budget {budget / 2**20:g} MiB'
        return ''

    def fits(self, entry: CacheEntry) -> bool:
        """Whether the entry alone fits every device's budget (else `add` refuses it)."""
        return not self.oversize(entry)

    def add(self, entry: CacheEntry) -> list[CacheEntry]:
        """Insert the newest entry and evict what the policy drops; returns the evicted.
        Raises ValueError for an entry out of order or one that alone exceeds a budget (the
        budgets are hard: nothing is cached then)."""
        if self._stamps and entry.stamp <= self._stamps[-1]:
            raise ValueError('cache entries must arrive in increasing stamp order')
        if too_big := self.oversize(entry):
            raise ValueError(f'a cached frame exceeds the cache budget ({too_big})')
        self._entries.append(entry)
        self._stamps.append(entry.stamp)
        self._bytes.update(entry.nbytes_by_device)
        evicted = self._apply_policy()
        self.evicted_count += len(evicted)
        return evicted

    def clear(self) -> None:
        self._entries.clear()
        self._stamps.clear()
        self._bytes.clear()

    def _over_budget(self) -> set[str]:
        """The devices whose cached bytes exceed their budget."""
        return {d for d, n in self._bytes.items() if n > self.policy.budget_bytes(d)}

    def _budget_victim(self, over: set[str]) -> int:
        """Index of the entry a full budget evicts: the oldest holding memory on a device in
        `over` (a frame without any frees nothing there), the anchor only when no other does.
        The newest entry fits by itself (`add` checked), so another one always holds some."""
        holders = [i for i, e in enumerate(self._entries[:-1])
                   if any(e.nbytes_by_device.get(d, 0) for d in over)]
        anchor = [i for i in holders if self.policy.keep_anchor and self._entries[i].index == 0]
        others = [i for i in holders if i not in anchor]
        return (others or anchor)[0]

    def _protected(self, i: int) -> bool:
        """Whether entry i survives the count-based policy."""
        n = len(self._entries)
        if i >= n - self.policy.recent:
            return True
        if self.policy.keep_anchor and self._entries[i].index == 0:
            return True
        return False

    def _apply_policy(self) -> list[CacheEntry]:
        evicted: list[CacheEntry] = []
        # 1) count policy: non-recent, non-anchor frames survive only as keyframes
        keyframes = [i for i, e in enumerate(self._entries)
                     if e.keyframe and not self._protected(i)]
        drop_kf = set(keyframes[:max(0, len(keyframes) - self.policy.max_keyframes)])
        keep = [i for i in range(len(self._entries))
                if self._protected(i) or (i in keyframes and i not in drop_kf)]
        if len(keep) != len(self._entries):
            keep_set = set(keep)
            evicted = [e for i, e in enumerate(self._entries) if i not in keep_set]
            self._entries = [self._entries[i] for i in keep]
        # 2) memory budgets: drop the oldest entries holding memory on a full device (anchor
        # last) until every device's fits; the newest entry fits by itself (`add` checked), so
        # the stream goes on
        # counted afresh, then swapped in whole (diagnostics read it without the engine's lock)
        used: Counter[str] = Counter()
        for e in self._entries:
            used.update(e.nbytes_by_device)
        self._bytes = used
        while (over := self._over_budget()) and len(self._entries) > 1:
            e = self._entries.pop(self._budget_victim(over))
            self._bytes.subtract(e.nbytes_by_device)
            evicted.append(e)
        self._stamps = [e.stamp for e in self._entries]
        return evicted
