"""The hybrid-vsock bridge lives in the product (runtime.hvsock); re-exported for the VM harness."""

from runtime.hvsock import BridgeThread, HybridVsockBridge, connect, open_agent_connection

__all__ = ["BridgeThread", "HybridVsockBridge", "connect", "open_agent_connection"]
