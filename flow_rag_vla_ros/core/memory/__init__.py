"""Failure memory for the RAG monitor (rclpy-free): FAISS case memory with a durable journal, failure
detection, corrective transforms, state embeddings and a retrieval benchmark."""
from flow_rag_vla_ros.core.memory.cases import FailureCase
from flow_rag_vla_ros.core.memory.config import MemoryConfig
from flow_rag_vla_ros.core.memory.faiss_memory import FailureMemory

__all__ = ['FailureCase', 'FailureMemory', 'MemoryConfig']
