"""Run-time detection of kernel TLS (kTLS), reported in the startup log and the metrics.

Offloading the record layer needs two things: the kernel's ``tls`` ULP (``CONFIG_TLS``; listed in
``/proc/sys/net/ipv4/tcp_available_ulp`` once loaded) and a TLS library that hands the traffic keys to it
(OpenSSL 3 with ``SSL_OP_ENABLE_KTLS``, exposed as ``ssl.OP_ENABLE_KTLS`` from Python 3.12). The offload
itself is not implemented yet: see docs/meshproxy.md for why and what it would take.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

_ULP_LIST = Path("/proc/sys/net/ipv4/tcp_available_ulp")


@dataclass(frozen=True, slots=True)
class KernelTLSSupport:
    kernel_ulp: bool
    python_ssl_option: bool

    @property
    def usable(self) -> bool:
        return self.kernel_ulp and self.python_ssl_option


def detect(ulp_list: Path = _ULP_LIST) -> KernelTLSSupport:
    try:
        kernel = "tls" in ulp_list.read_text().split()
    except OSError:
        kernel = False
    return KernelTLSSupport(kernel_ulp=kernel, python_ssl_option=hasattr(ssl, "OP_ENABLE_KTLS"))
