"""Test peer: serves fourd_ros_msgs/srv/QueryMotion on /peer/query_motion (echo of the points).

It answers every point as VALID at its own position + (1, 0, 0) so the caller can check the
round trip of every field.
"""

import rclpy
from rclpy.node import Node

from fourd_ros_msgs.srv import QueryMotion
from geometry_msgs.msg import Point, Vector3


def main() -> None:
    rclpy.init()
    node = Node('query_motion_peer', namespace='peer')

    def handle(request: QueryMotion.Request, response: QueryMotion.Response):
        response.success = True
        response.message = f'{len(request.points)} points, type {request.query_type}'
        response.header.stamp = request.target_stamp
        response.header.frame_id = request.target_frame or 'map'
        response.positions = [Point(x=p.x + 1.0, y=p.y, z=p.z) for p in request.points]
        response.displacements = [Vector3(x=1.0) for _ in request.points]
        response.confidence = [1.0] * len(request.points)
        response.status = [QueryMotion.Response.VALID] * len(request.points)
        return response

    node.create_service(QueryMotion, 'query_motion', handle)
    print('query_motion_peer ready', flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass


if __name__ == '__main__':
    main()
