"""Soak verdict and plot shared by `fourd bench` (the engine) and scripts/soak_node.py (the node).

A soak fails when resident memory, after warm-up, grows by more than the latent cache budget
(the cache is the only state that may grow, and it is bounded by that budget), or when the time
per frame drifts up: the median over the last window above `SOAK_MAX_LATENCY_RATIO` times the
median over the first.
"""

from __future__ import annotations

import resource

import numpy as np

SOAK_MAX_LATENCY_RATIO = 1.1


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def resident_mb(pid: int | str = 'self') -> float:
    """Resident memory (VmRSS from /proc/PID/status) of process `pid`, this one by default,
    MiB; NaN when unavailable (not Linux, or the process is gone)."""
    try:
        with open(f'/proc/{pid}/status') as fh:
            for line in fh:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float('nan')


def soak_failure(res: dict) -> str:
    """Why a soak fails ('' = it passes): resident memory after warm-up grew by more than
    the cache budget, or the per-frame latency drifted up (last/first median ratio)."""
    why = []
    if res['soak_rss_growth_mb'] > res['cache_budget_mb']:
        why.append(f"RSS grew {res['soak_rss_growth_mb']:.1f} MiB after warm-up, more than "
                   f"the cache budget of {res['cache_budget_mb']:g} MiB")
    if res['soak_latency_ratio'] > SOAK_MAX_LATENCY_RATIO:
        why.append(f"latency last/first {res['soak_latency_ratio']:.2f} > "
                   f'{SOAK_MAX_LATENCY_RATIO}')
    return '; '.join(why)


def plot_soak(path: str, frames: np.ndarray, rss: np.ndarray, latency_ms: np.ndarray,
              cache_mb: np.ndarray, title: str, budget_mb: float,
              latency_label: str = 'latency (ms)') -> str:
    """PNG of resident memory (MiB), per-frame time (ms) and cache size (MiB) against the frame
    count of a soak (`fourd bench`, scripts/soak_node.py)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for ax, y, label in ((axes[0], rss, 'resident memory (MiB)'),
                         (axes[1], latency_ms, latency_label),
                         (axes[2], cache_mb, 'latent cache (MiB)')):
        ax.plot(frames, y, lw=1.0)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[2].axhline(budget_mb, color='r', ls='--', lw=0.8, label='budget')
    axes[2].legend(loc='lower right')
    axes[2].set_xlabel('frame')
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def soak_title(name: str, res: dict) -> str:
    """Plot title with the soak's verdict figures."""
    return (f"{name}: RSS growth after warm-up {res['soak_rss_growth_mb']:.1f} MiB, "
            f"time per frame last/first {res['soak_latency_ratio']:.2f}")
