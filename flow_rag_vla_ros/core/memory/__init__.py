"""Failure memory for the RAG monitor (rclpy-free, torch-free): FAISS case memory with a durable journal,
failure detection, corrective transforms, state embeddings and a retrieval benchmark."""
from flow_rag_vla_ros.core.memory.cases import FailureCase
from flow_rag_vla_ros.core.memory.config import MemoryConfig
from flow_rag_vla_ros.core.memory.corrections import Correction, CorrectionConfig, correct_chunk, propose_correction
from flow_rag_vla_ros.core.memory.detector import (DetectorConfig, FailureDetector, FailureHead, FailureSignals,
                                                   classify_failure)
from flow_rag_vla_ros.core.memory.embedding import EmbeddingConfig, state_embedding
from flow_rag_vla_ros.core.memory.faiss_memory import FailureMemory

__all__ = ['Correction', 'CorrectionConfig', 'DetectorConfig', 'EmbeddingConfig', 'FailureCase', 'FailureDetector',
           'FailureHead', 'FailureMemory', 'FailureSignals', 'MemoryConfig', 'classify_failure', 'correct_chunk',
           'propose_correction', 'state_embedding']
