"""Coordinator benchmark: NewMeshCert throughput/latency, initializer start-to-files, Go aTLS baseline."""
