"""ament_python package: `colcon build` with a sourced ROS 2, or `pip install -e .` in a venv (see Makefile)."""
from glob import glob

from setuptools import find_packages, setup

package_name = 'flow_rag_vla_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
        *[('share/' + package_name + '/' + d, [f for f in glob(d + '/*.*') if '/training_state.' not in f])
          for d in sorted({p.rsplit('/', 1)[0] for p in glob('models/**/*.*', recursive=True)})],
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='flow_rag_vla_ros maintainers',
    maintainer_email='maintainers@flow-rag-vla.invalid',
    description='Flow-matching VLA policy with an asynchronous RAG failure monitor, as ROS 2 nodes.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'sim_node = flow_rag_vla_ros.nodes.sim_node:main',
            'vision_encoder_node = flow_rag_vla_ros.nodes.vision_encoder_node:main',
            'flow_policy_node = flow_rag_vla_ros.nodes.flow_policy_node:main',
            'rag_monitor_node = flow_rag_vla_ros.nodes.rag_monitor_node:main',
            'action_merger_node = flow_rag_vla_ros.nodes.action_merger_node:main',
            'flow-rag-vla = flow_rag_vla_ros.cli:main',
        ],
    },
)
