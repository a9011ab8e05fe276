"""QoS profiles of the package's topics and services, and fresh copies of them.

rclpy writes QoS overrides (``qos_overrides.<topic>.*`` parameters) into the profile object it is
given, so a profile shared by several publishers or subscriptions would carry one topic's
overrides to the others: each gets `fresh` copy.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

# latched: a late subscriber gets the last message (~/map_points, /tf_static of one broadcaster)
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)
# tf2's static listener QoS: every broadcaster's latched message (a URDF's and each camera
# driver's), not only the last one received
TF_STATIC_QOS = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                           reliability=ReliabilityPolicy.RELIABLE)
# services keep up to 1000 waiting requests (ROS's default keeps 10: a planner that sends more at
# once loses the rest, unanswered)
SERVICE_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


def fresh(profile: QoSProfile | int) -> QoSProfile:
    """A new profile equal to `profile` (an int: keep last that many, reliable)."""
    if isinstance(profile, int):
        return QoSProfile(depth=profile)
    return QoSProfile(history=profile.history, depth=profile.depth,
                      reliability=profile.reliability, durability=profile.durability)
