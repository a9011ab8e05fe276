"""Test peer: latches one transform on /tf_static (depth 1, transient local).

Usage: tf_static_publisher.py [parent child tx ty tz qx qy qz qw]; default map -> camera_link,
1.5 m along x.
"""

import sys

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from geometry_msgs.msg import TransformStamped
from tf2_msgs.msg import TFMessage


def main() -> None:
    rclpy.init(args=[])
    node = Node('tf_static_peer')
    qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(TFMessage, '/tf_static', qos)
    args = sys.argv[1:] or ['map', 'camera_link', '1.5', '0', '0', '0', '0', '0', '1']
    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = args[0], args[1]
    tx, ty, tz, qx, qy, qz, qw = (float(a) for a in args[2:9])
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = tx, ty, tz
    r = t.transform.rotation
    r.x, r.y, r.z, r.w = qx, qy, qz, qw
    pub.publish(TFMessage(transforms=[t]))
    print('tf_static_peer published', flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass


if __name__ == '__main__':
    main()
