"""fourd_ros: streaming 4D perception for ROS 2.

`fourd_ros.core` is ROS-free (numpy/torch/OpenCV/Open3D only); `fourd_ros.ros` is the thin rclpy
layer on top of it.
"""

__version__ = '0.1.0'
