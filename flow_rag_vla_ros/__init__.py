"""flow_rag_vla_ros: a flow-matching VLA policy, a RAG failure monitor and a deadline-aware merger as ROS 2 nodes.

`flow_rag_vla_ros.core` and `flow_rag_vla_ros.sim` never import rclpy; `flow_rag_vla_ros.nodes` wraps them.
"""
__version__ = '0.1.0'
