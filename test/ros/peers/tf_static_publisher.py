"""Test peer: latches one map -> camera transform on /tf_static (depth 1, transient local)."""

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from geometry_msgs.msg import TransformStamped
from tf2_msgs.msg import TFMessage


def main() -> None:
    rclpy.init()
    node = Node('tf_static_peer')
    qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(TFMessage, '/tf_static', qos)
    t = TransformStamped()
    t.header.frame_id = 'map'
    t.child_frame_id = 'camera_link'
    t.transform.translation.x = 1.5
    t.transform.rotation.w = 1.0
    pub.publish(TFMessage(transforms=[t]))
    print('tf_static_peer published', flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass


if __name__ == '__main__':
    main()
