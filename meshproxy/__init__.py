"""Service-mesh sidecar: transparent mTLS between pods with the Coordinator-issued mesh certificates.

Layout (pure modules first, then I/O):

* ``config``   Contrast's CONTRAST_* proxy configuration parsed into frozen values.
* ``rules``    the configuration as iptables/ip6tables rules (mangle TPROXY chains, default deny).
* ``session``  a sans-IO TLS session over memory BIOs.
* ``relay``    the asyncio data path between a TLS socket and a plaintext socket.
* ``proxy``    TPROXY ingress listeners (15006/15007) and loopback egress listeners.
* ``certs``    TLS contexts from the mesh files, reloaded on change.
* ``netfilter``, ``routing``  applying rules and fwmark routes.
* ``admin``, ``metrics``      Prometheus metrics and probes.
* ``app``      the lifecycle; ``__main__`` the command line.
"""

from meshproxy.config import EgressEntry, IngressEntry, ProxyConfig, from_environ
from meshproxy.errors import CertificateError, ConfigError, HandshakeError, MeshProxyError, NetfilterError
from meshproxy.netfilter import Netfilter
from meshproxy.rules import DEFAULT_DENY, DEFAULT_DENY_IPV6, Family, ingress_rules
from meshproxy.session import TLSSession

__all__ = [
    "DEFAULT_DENY",
    "DEFAULT_DENY_IPV6",
    "CertificateError",
    "ConfigError",
    "EgressEntry",
    "Family",
    "HandshakeError",
    "IngressEntry",
    "MeshProxyError",
    "Netfilter",
    "NetfilterError",
    "ProxyConfig",
    "TLSSession",
    "from_environ",
    "ingress_rules",
]
