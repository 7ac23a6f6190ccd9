"""Go ttrpc interop peers (server and client) built offline from Debian's Go packages."""

from .build import GoPeers, GoUnavailableError, build

__all__ = ["GoPeers", "GoUnavailableError", "build"]
