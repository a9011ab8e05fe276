"""Launch fourd_node (and optionally the synthetic camera).

With ROS 2 installed (launch_ros available):
    ros2 launch fourd_ros fourd.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info depth:=/camera/aligned_depth_to_color/image_raw
Without launch_ros (the pip-installed runtime), the same file starts the same processes:
    python launch/fourd.launch.py use_synthetic_camera:=true depth:=/camera/depth

Arguments (name, default, meaning):
    image                 /camera/image_raw    input sensor_msgs/Image topic
    camera_info           /camera/camera_info  input CameraInfo topic ('' = none: the node's
                                               use_camera_info:=false)
    depth                 ''                   registered depth topic ('' = monocular)
    config                <share>/config/fourd.yaml  parameter file
    backend               ''                   auto | learned | rgbd
    image_transport       ''                   raw | compressed (reads <image>/compressed)
    depth_image_transport ''                   raw | compressedDepth (<depth>/compressedDepth)
    image_rectified       ''                   true: the image is image_proc's image_rect
    image_bits            ''                   16-bit images' significant bits (0 = found)
    use_sim_time          ''                   true: the /clock of `ros2 bag play --clock`
    base_frame            ''                   the robot's frame (e.g. base_footprint)
    publish_camera_tf     ''                   false: the camera's mounting from /tf_static
    camera_height         ''                   a ground robot's camera height (m): metres
    device, checkpoint    ''                   learned backend: inference device, model file
    processing_width      ''                   processing width in pixels
    image_qos             ''                   sensor_data | reliable
    camera_frame, odom_frame, map_frame  ''    frame names
    publish_tf, publish_map_to_odom_tf, invert_odom_to_base_tf  ''   TF ownership (REP-105)
    namespace             ''                   namespace of the node (one per camera)
    managed               false                true: fourd_lifecycle_node (starts unconfigured)
    autostart             false                managed: configure and activate at start
    rviz                  false                true: also RViz with config/fourd.rviz (its
                                               topics moved into the namespace)
    use_synthetic_camera  false                also start fourd_synthetic_camera
    fastdds_profile       <share>/config/fastdds.xml  Fast DDS transport profile ('' = none)

A node parameter argument left at '' is not passed: the parameter file's value stands (a value
given on the command line wins over the file's).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _share_dir() -> Path:
    """The package's share directory (installed) or the source tree (run from a checkout)."""
    if (HERE.parent / 'config' / 'fourd.yaml').exists():
        return HERE.parent
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory('fourd_ros'))
    except Exception:  # noqa: BLE001 - no ament index: fall back to the source layout
        return HERE.parent


SHARE = _share_dir()
ARGUMENTS = {
    'image': ('/camera/image_raw', 'input sensor_msgs/Image topic'),
    'camera_info': ('/camera/camera_info', "input CameraInfo topic ('' = none: "
                    'use_camera_info:=false)'),
    'depth': ('', "registered depth topic ('' = a monocular camera; with backend auto a "
              'given depth topic selects rgbd)'),
    'config': (str(SHARE / 'config' / 'fourd.yaml'), 'parameter file'),
    'backend': ('', "auto | learned | rgbd ('' = the parameter file's)"),
    'image_transport': ('', "raw | compressed (reads <image>/compressed; '' = the parameter "
                        "file's)"),
    'depth_image_transport': ('', 'raw | compressedDepth (reads <depth>/compressedDepth; '
                              "'' = the parameter file's)"),
    'image_rectified': ('', "true: the image is already rectified (image_proc's "
                        "image_rect; intrinsics from P; '' = the parameter file's)"),
    'image_bits': ('', 'significant bits of 16-bit images: 8-16, or 0 = found from the data '
                   "('' = the parameter file's)"),
    'use_sim_time': ('', 'true: time from /clock (a bag played with ros2 bag play '
                     "--clock; '' = the parameter file's, else false)"),
    'namespace': ('', 'namespace of the node (one per camera)'),
    'managed': ('false', 'true: the managed fourd_lifecycle_node, which starts unconfigured '
                'for a lifecycle manager (nav2)'),
    'autostart': ('false', 'with managed: the node configures and activates itself at start '
                  '(no lifecycle manager)'),
    'use_synthetic_camera': ('false', 'also start fourd_synthetic_camera'),
    'rviz': ('false', "also start rviz2 with config/fourd.rviz (the node's topics in the "
             'namespace); without rviz2 installed, `fourd view` shows them in a browser'),
    'fastdds_profile': (str(SHARE / 'config' / 'fastdds.xml'),
                        "Fast DDS transport profile ('' = none)"),
    'base_frame': ('', "the robot's frame (e.g. base_footprint; '' = the parameter file's)"),
    'publish_camera_tf': ('', "false: the camera's mounting from /tf_static (a URDF's); '' = "
                          "the parameter file's"),
    'camera_height': ('', "a ground robot's camera height above the floor, metres: metric "
                      "monocular output ('' = the parameter file's)"),
    'device': ('', "learned backend: auto | cpu | cuda | cuda:N ('' = the parameter file's)"),
    'checkpoint': ('', "learned backend: a model checkpoint ('' = the parameter file's)"),
    'processing_width': ('', "processing width in pixels ('' = the parameter file's)"),
    'image_qos': ('', "sensor_data | reliable ('' = the parameter file's)"),
    'camera_frame': ('', "the camera optical frame ('' = the parameter file's: the image's "
                     'frame_id)'),
    'odom_frame': ('', "odometry frame ('' = the parameter file's)"),
    'map_frame': ('', "fixed frame ('' = the parameter file's)"),
    'publish_tf': ('', "false: no odom -> base_frame on /tf ('' = the parameter file's)"),
    'publish_map_to_odom_tf': ('', "false: a SLAM owns map -> odom ('' = the parameter "
                               "file's)"),
    'invert_odom_to_base_tf': ('', 'true: base_frame -> odom (another odometry owns odom '
                               "-> base_frame; '' = the parameter file's)"),
}

# launch arguments passed to fourd_node as parameters of the same name, only when given: else
# the parameter file's value stands (a default here would silently override a user's file)
NODE_PARAMETERS = ('backend', 'image_transport', 'depth_image_transport', 'image_rectified',
                   'image_bits', 'use_sim_time', 'base_frame', 'publish_camera_tf',
                   'camera_height', 'device', 'checkpoint', 'processing_width', 'image_qos',
                   'camera_frame', 'odom_frame', 'map_frame', 'publish_tf',
                   'publish_map_to_odom_tf', 'invert_odom_to_base_tf')


def _true(value: str) -> bool:
    return value.lower() in ('1', 'true', 'yes')


def rviz_config(namespace: str) -> Path:
    """config/fourd.rviz with the node's topics in `namespace` (the shipped file names
    /fourd/...), written to a temporary file; the file itself when there is no namespace."""
    path = SHARE / 'config' / 'fourd.rviz'
    ns = namespace.strip('/')
    if not ns:
        return path
    text = path.read_text().replace('Value: /fourd/', f'Value: /{ns}/fourd/')
    out = Path(tempfile.gettempdir()) / f"fourd_{ns.replace('/', '_')}.rviz"
    out.write_text(text)
    return out


def remappings(args: dict[str, str]) -> list[tuple[str, str]]:
    """The node's inputs remapped to the cameras' topics (an empty depth = monocular)."""
    return [(name, args[name]) for name in ('image', 'camera_info', 'depth') if args[name]]


def node_ros_args(args: dict[str, str], with_remaps: bool = True) -> list[str]:
    """--ros-args for fourd_node from launch arguments (shared by both launch paths)."""
    out = ['--ros-args', '--params-file', args['config']]
    for name in NODE_PARAMETERS:
        if args.get(name):
            out += ['-p', f'{name}:={args[name]}']
    if not args['camera_info']:  # none: not subscribed, no wait for one
        out += ['-p', 'use_camera_info:=false']
    if _true(args['managed']) and _true(args['autostart']):
        out += ['-p', 'autostart:=true']
    if with_remaps:
        for name, topic in remappings(args):
            out += ['-r', f'{name}:={topic}']
    if args['namespace']:
        out += ['-r', f"__ns:=/{args['namespace'].strip('/')}"]
    return out


def generate_launch_description():
    """launch_ros description (used by `ros2 launch`)."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode, Node

    def node_action(context):
        values = {k: LaunchConfiguration(k).perform(context) for k in ARGUMENTS}
        rviz = [Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                     arguments=['-d', str(rviz_config(values['namespace']))])
                ] if _true(values['rviz']) else []
        common = dict(package='fourd_ros', name='fourd', output='screen',
                      remappings=remappings(values),
                      arguments=node_ros_args(values, with_remaps=False))
        if _true(values['managed']):
            return rviz + [LifecycleNode(executable='fourd_lifecycle_node',
                                         namespace=values['namespace'], **common)]
        return rviz + [Node(executable='fourd_node', namespace=values['namespace'] or None,
                            **common)]

    actions = [DeclareLaunchArgument(k, default_value=v, description=d)
               for k, (v, d) in ARGUMENTS.items()]
    actions.append(SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE',
                                          LaunchConfiguration('fastdds_profile')))
    actions.append(Node(package='fourd_ros', executable='fourd_synthetic_camera',
                        name='synthetic_camera', output='screen',
                        condition=IfCondition(LaunchConfiguration('use_synthetic_camera'))))
    actions.append(OpaqueFunction(function=node_action))
    return LaunchDescription(actions)


def _default_sigint() -> None:
    """In a child before exec: SIGINT back to its default, so Python turns it into
    KeyboardInterrupt (an ignored SIGINT would be inherited through exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def main(argv: list[str]) -> int:
    """Start the same processes without launch_ros: `python fourd.launch.py key:=value ...`."""
    args = {k: v for k, (v, _) in ARGUMENTS.items()}
    for item in argv:
        key, sep, value = item.partition(':=')
        if not sep or key not in args:
            print(f'fourd.launch.py: unknown argument {item!r}; known: {", ".join(args)}',
                  file=sys.stderr)
            return 2
        args[key] = value
    # a shell's background job starts with SIGINT ignored, and children inherit that: take it
    # back so that Ctrl-C / kill -INT stops everything, and treat SIGTERM (docker, systemd) alike
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    env = dict(os.environ)
    if args['fastdds_profile']:
        env.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', args['fastdds_profile'])
    procs = []
    if _true(args['use_synthetic_camera']):
        procs.append(subprocess.Popen([sys.executable, '-m', 'fourd_ros.ros.synthetic_camera'],
                                      env=env, preexec_fn=_default_sigint))
    if _true(args['rviz']):
        if shutil.which('rviz2'):
            procs.append(subprocess.Popen(['rviz2', '-d', str(rviz_config(args['namespace']))],
                                          env=env, preexec_fn=_default_sigint))
        else:
            print('fourd.launch.py: rviz2 is not installed (it comes with a ROS 2 desktop '
                  'install); the node runs without it, and `fourd view` shows its outputs in a '
                  'browser', file=sys.stderr, flush=True)
    module = 'fourd_ros.ros.lifecycle_node' if _true(args['managed']) else 'fourd_ros.ros.node'
    procs.append(subprocess.Popen([sys.executable, '-m', module, *node_ros_args(args)],
                                  env=env, preexec_fn=_default_sigint))
    try:
        while all(p.poll() is None for p in procs):
            try:
                procs[-1].wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    return max((p.returncode or 0) for p in procs)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
