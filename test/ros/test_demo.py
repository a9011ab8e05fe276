"""`fourd demo` end to end: camera + node as processes, a recorded MCAP bag and a snapshot."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('rclpy')
highlevel = pytest.importorskip('rosbags.highlevel')

from fourd_ros.ros.bag_recorder import make_typestore  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OUTPUT_TOPICS = ('/fourd/points', '/fourd/map_points', '/tf', '/fourd/tracks', '/fourd/objects',
                 '/fourd/motion_mask')

pytestmark = pytest.mark.ros


@pytest.mark.timeout(150)
def test_demo_records_bag_and_snapshot(tmp_path: Path) -> None:
    out = tmp_path / 'demo'
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    env.pop('ROS_DOMAIN_ID', None)
    cmd = [sys.executable, '-m', 'fourd_ros.ros.demo', '--duration', '15', '--out', str(out),
           '--domain-id', str(random.randint(1, 100))]
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)
    print(proc.stdout[-6000:])
    for log in sorted((out / 'logs').glob('*.log')):
        print(f'--- {log.name} ---\n{log.read_text()[-2000:]}')
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert 'query_motion' in proc.stdout

    bag, png = out / 'demo.mcap', out / 'snapshot.png'
    assert bag.is_file() and (out / 'metadata.yaml').is_file()
    assert png.is_file() and png.stat().st_size > 20_000
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    summary = json.loads((out / 'summary.json').read_text())
    assert summary['frames_processed'] > 0
    assert summary['topics']['/fourd/tracks']['recorded'] > 0
    # the scene's moving objects are followed, and the snapshot draws the latest ones
    assert summary['objects_seen'] > 0 and summary['objects_in_snapshot'] > 0

    with highlevel.AnyReader([bag], default_typestore=make_typestore()) as reader:
        counts = {topic: info.msgcount for topic, info in reader.topics.items()}
        for topic in OUTPUT_TOPICS:
            assert counts.get(topic, 0) > 0, f'{topic} not recorded: {counts}'
        assert counts['/fourd/points'] < counts['/fourd/tracks']  # points thinned 1 in 5
        connections = [c for c in reader.connections if c.topic == '/fourd/tracks']
        _, _, raw = next(reader.messages(connections=connections))
        msg = reader.deserialize(raw, 'fourd_ros_msgs/msg/TrackedPoints')
        assert msg.header.frame_id == 'map'
        assert len(msg.ids) == len(msg.positions) == len(msg.status) > 0
        assert len(msg.object_ids) == len(msg.ids)
        connections = [c for c in reader.connections if c.topic == '/fourd/objects']
        objects = [reader.deserialize(raw, 'fourd_ros_msgs/msg/MovingObjects')
                   for _, _, raw in reader.messages(connections=connections)]
        assert any(m.objects for m in objects) and objects[-1].header.frame_id == 'map'

    # the folder is also a rosbag2 directory (metadata.yaml points at demo.mcap)
    with highlevel.AnyReader([out], default_typestore=make_typestore()) as reader:
        assert reader.message_count == sum(counts.values())


@pytest.mark.timeout(150)
def test_demo_learned_on_a_monocular_camera(tmp_path: Path) -> None:
    """`fourd demo --backend learned`: the camera publishes no depth, the node runs the learned
    backend, the demo's query is answered and the outputs are recorded."""
    out = tmp_path / 'demo'
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    env.pop('ROS_DOMAIN_ID', None)
    cmd = [sys.executable, '-m', 'fourd_ros.ros.demo', '--backend', 'learned', '--duration', '10',
           '--out', str(out), '--domain-id', str(random.randint(1, 100))]
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert 'query_motion' in proc.stdout
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['frames_processed'] > 0 and summary['backend'] == 'learned'
    assert (out / 'snapshot.png').stat().st_size > 20_000
    # the path is up to scale: compared with the ground truth after a Sim(3) alignment
    traj = summary['final_path_vs_ground_truth']
    print('learned demo path:', traj)
    assert traj['alignment'] == 'Sim(3)' and traj['position_rmse_m'] < 0.3
    with highlevel.AnyReader([out / 'demo.mcap'], default_typestore=make_typestore()) as reader:
        counts = {topic: info.msgcount for topic, info in reader.topics.items()}
    for topic in ('/fourd/points', '/fourd/tracks', '/tf', '/diagnostics'):
        assert counts.get(topic, 0) > 0, f'{topic} not recorded: {counts}'
    assert '/camera/depth' not in counts or counts['/camera/depth'] == 0
