"""Metres for a monocular map: per-frame estimates of metres per map unit turned into
corrections.

`MetricScale` (the floor's estimates: its image motion and the camera's known height,
`ground_scale`): the median of the first few estimates sets the map's scale (from then on the
output is metric); later ones pull it back when the monocular pose's scale drifts, by a bounded
step a frame; a frame without an estimate leaves the scale as it is.

`depth_sensor_scale` (a registered depth sensor's estimate): precise on every frame, and the
map is in metres already (the learned backend starts its landmarks at the sensor's points), so
it rescales only that frame's depth.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MetricScaleConfig:
    """How estimates correct the map's scale.

    Attributes:
        window: estimates kept (the median of them is what corrects the map; only those of
            the last ``2 x window`` frames).
        first_estimates: estimates the first (full) correction waits for; until then the
            output stays up to scale.
        gain, max_step: later corrections move the map's scale by ``gain`` x the logarithm of
            the median estimate, at most ``max_step`` (log) per frame.
    """

    window: int = 15
    first_estimates: int = 5
    gain: float = 0.2
    max_step: float = 0.02


def depth_sensor_scale(sensor_depth: np.ndarray, depth: np.ndarray, usable: np.ndarray,
                       min_pixels: int) -> float | None:
    """Metres per map unit from a registered depth sensor: the median ratio of the sensor's
    depth (metres; NaN or <= 0 = none) to the map's ``depth`` (same pixels) over ``usable``
    pixels (static), or None with fewer than ``min_pixels`` of them."""
    with np.errstate(invalid='ignore'):
        ok = usable & (sensor_depth > 0) & (depth > 0) & np.isfinite(sensor_depth)
    if ok.sum() < min_pixels:
        return None
    return float(np.median(sensor_depth[ok] / depth[ok]))


class MetricScale:
    """Metres per map unit, from per-frame estimates (see the module docstring). `step`
    returns the factor to multiply the map by now; `metric` says whether the first correction
    has happened."""

    def __init__(self, config: MetricScaleConfig = MetricScaleConfig()) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._frame = 0
        # (frame, log metres per map unit) of the recent estimates, in today's map units
        self._log_scale: deque[tuple[int, float]] = deque(maxlen=self.config.window)
        self.metric = False

    @property
    def frames_since_estimate(self) -> int:
        """Frames since the last estimate was recorded (a large number before the first)."""
        return self._frame - self._log_scale[-1][0] if self._log_scale else 1 << 30

    def step(self, metres_per_unit: float | None) -> float:
        """Record this frame's estimate (metres per map unit; None = none) and return the
        factor the map is to be multiplied by (1.0 = leave it). Without an estimate the map
        keeps its scale; estimates older than two windows of frames are forgotten."""
        cfg = self.config
        self._frame += 1
        while self._log_scale and self._frame - self._log_scale[0][0] > 2 * cfg.window:
            self._log_scale.popleft()
        if metres_per_unit is None or not np.isfinite(metres_per_unit) \
                or metres_per_unit <= 0:
            return 1.0
        self._log_scale.append((self._frame, float(np.log(metres_per_unit))))
        median = float(np.median([x for _, x in self._log_scale]))
        if not self.metric:
            if len(self._log_scale) < cfg.first_estimates:
                return 1.0
            self.metric = True
            step = median
        else:
            step = float(np.clip(cfg.gain * median, -cfg.max_step, cfg.max_step))
        # the stored estimates are in the old map units: re-express them in the new ones
        self._log_scale = deque(((k, x - step) for k, x in self._log_scale),
                                maxlen=cfg.window)
        return float(np.exp(step))
