"""Kata agent API messages (agent, oci, types, csi, health), compiled from our own .proto files.

Generated modules: ``agent_pb2``, ``oci_pb2``, ``types_pb2``, ``csi_pb2``, ``health_pb2``.
"""

from guest.protocols import agent_pb2, csi_pb2, health_pb2, oci_pb2, types_pb2

__all__ = ["agent_pb2", "csi_pb2", "health_pb2", "oci_pb2", "types_pb2"]
