"""The sidecar's UDP address, resolved once where vLLM starts the plugin or the hook.

``sendto((host, port))`` with a host name asks the resolver on every datagram: inside vLLM's
loop, a resolver that does not answer held each step for its timeout (5 s twice, glibc's
default), and even ``localhost`` cost several times a numeric address's send. So the name is
looked up once, at start, and every datagram goes to the numeric address.
"""

from __future__ import annotations

import socket

__all__ = ["numeric"]


def numeric(host: str, port: int) -> tuple[str, int]:
    """``(host, port)`` with ``host`` as an IPv4 address (the first the resolver gives); raises
    ``OSError`` where it cannot be resolved and ``ValueError`` for a port out of range."""
    if not 0 < port < 65536:
        raise ValueError(f"UDP port {port} is out of range 1-65535")
    info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    return str(info[0][4][0]), port
