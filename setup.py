"""ament_python package fourd_ros (also installable with pip: `pip install -e .`)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'fourd_ros'

setup(
    name=PACKAGE,
    version='0.3.0',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    package_data={PACKAGE: ['checkpoints/*.pt']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*')),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='fourd_ros developers',
    maintainer_email='fourd@example.com',
    description='Streaming 4D perception for ROS 2',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'fourd = fourd_ros.cli.main:main',
            'fourd_node = fourd_ros.ros.node:main',
            'fourd_lifecycle_node = fourd_ros.ros.lifecycle_node:main',
            'fourd_synthetic_camera = fourd_ros.ros.synthetic_camera:main',
        ],
    },
)
