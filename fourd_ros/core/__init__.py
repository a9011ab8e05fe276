"""ROS-free core: geometry, data, streaming engine, backends, model, training, evaluation.

Nothing under this package may import rclpy or any ROS message package.
"""
