"""ros2 launch flow_rag_vla_ros sim.launch.py [task:=push] [episodes:=20] [params:=/path/stack.yaml]

Starts the four stack nodes and the PyBullet sim with config/stack.yaml: the same nodes and YAML as the
pip-side `flow-rag-vla launch` / `flow-rag-vla sim`.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = 'flow_rag_vla_ros'


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), 'config', 'stack.yaml')
    params = LaunchConfiguration('params')
    args = [
        DeclareLaunchArgument('params', default_value=default_params, description='stack params YAML'),
        DeclareLaunchArgument('task', default_value='reach', description='reach | push | pick_and_place'),
        DeclareLaunchArgument('episodes', default_value='10', description='episodes (0 = forever)'),
        DeclareLaunchArgument('clock_mode', default_value='lockstep', description='lockstep | realtime'),
        DeclareLaunchArgument('with_sim', default_value='true', description='start the sim (false on a robot)'),
    ]
    from launch.conditions import IfCondition
    sim = Node(package=PACKAGE, executable='sim_node', name='sim', output='screen',
               parameters=[params, {'task': LaunchConfiguration('task'),
                                    'episodes': LaunchConfiguration('episodes'),
                                    'clock_mode': LaunchConfiguration('clock_mode')}],
               condition=IfCondition(LaunchConfiguration('with_sim')))
    stack = [Node(package=PACKAGE, executable=f'{name}_node', name=name, output='screen', parameters=[params])
             for name in ('vision_encoder', 'flow_policy', 'rag_monitor', 'action_merger')]
    return LaunchDescription(args + stack + [sim])
