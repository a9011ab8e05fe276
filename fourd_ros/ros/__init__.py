"""ROS 2 layer: nodes, message conversions, launch helpers (imports rclpy)."""
