"""A relay between vLLM and the sidecar that keeps the order the sidecar relies on; the hook's kept.

``test_scheduler_hook_e2e`` puts this between vLLM and the sidecar to keep a copy of every hook
datagram. The sidecar relies on hearing of a request from the hook before it hears of it from
the plugin or from vLLM's span (``sidecar/taps/vllm.py``, ``OtlpReceiver.cut``): sent straight
to the sidecar, the hook's datagram is in its socket before the others are sent. A relay of the
hook alone breaks that on a loaded machine: it waits to be scheduled while the span goes
straight through. Measured with 3 busy loops on 2 cores: the hook's datagrams reached the relay's
socket within 0.3 ms of being sent, and the relay read them 0.47 s later (median; 1.2 s at most),
long after vLLM's span of a short request (sent 100 ms after it ends) reached the sidecar, which
then took that request's work from the span (CI once counted ``work_from_spans`` 4; the relay was
a thread of the test process then).

So all three go through here: the hook's and the plugin's datagrams (UDP) and vLLM's spans (its
OTLP/gRPC connections, relayed byte for byte). Each pass reads the span bytes and the plugin's
datagrams first, then the hook's, and forwards the hook's first, then the plugin's, then the span
bytes: whatever the hook sent before the others were sent is forwarded before them, however late
the relay runs. The hook's datagrams are appended to a file, each as a 4-byte big-endian length
and the bytes.

    python -m tests.servers.vllm.relay TO_HOOK_PORT TO_PLUGIN_PORT TO_OTLP_PORT COPY_PATH [LOSE]

``LOSE``: the first hook datagram with a ``new`` row whose request id contains it is not forwarded
(a datagram lost on the way; its copy is written all the same).

prints ``HOOK_PORT PLUGIN_PORT OTLP_PORT`` (its own, on 127.0.0.1) once listening; stops on SIGTERM.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import struct
import sys
from pathlib import Path

__all__ = ["read_copies"]

_LENGTH = struct.Struct(">I")
_LOCAL = "127.0.0.1"


def read_copies(path: Path) -> list[bytes]:
    """The hook datagrams the relay has written to ``path`` so far (a partial last one left out)."""
    data = path.read_bytes() if path.exists() else b""
    out: list[bytes] = []
    at = 0
    while at + _LENGTH.size <= len(data):
        (n,) = _LENGTH.unpack_from(data, at)
        if at + _LENGTH.size + n > len(data):
            break
        out.append(data[at + _LENGTH.size : at + _LENGTH.size + n])
        at += _LENGTH.size + n
    return out


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((_LOCAL, 0))
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket) -> list[bytes]:
    got: list[bytes] = []
    while True:
        try:
            got.append(sock.recv(65536))
        except BlockingIOError:
            return got


class _Streams:
    """TCP connections relayed byte for byte: each accepted one paired with one to ``to``."""

    def __init__(self, to: tuple[str, int]) -> None:
        self.to = to
        self.listener = socket.create_server((_LOCAL, 0))
        self.peer: dict[socket.socket, socket.socket] = {}

    def sockets(self) -> list[socket.socket]:
        return [self.listener, *self.peer]

    def read(self, ready: list[socket.socket]) -> list[tuple[socket.socket, bytes]]:
        """Accept new connections; read what the ready ones hold (to be sent on by :meth:`send`)."""
        if self.listener in ready:
            client, _ = self.listener.accept()
            try:
                upstream = socket.create_connection(self.to)
            except OSError:  # the sidecar is down (a test restarts it): the exporter connects again
                client.close()
            else:
                self.peer[client], self.peer[upstream] = upstream, client
        got = []
        for sock in ready:
            if sock in self.peer:
                try:
                    got.append((sock, sock.recv(1 << 20)))
                except OSError:  # reset: as closed
                    got.append((sock, b""))
        return got

    def send(self, got: list[tuple[socket.socket, bytes]]) -> None:
        for sock, data in got:
            other = self.peer.get(sock)
            if other is None:  # closed by its peer's end earlier in this pass
                continue
            if data:
                other.sendall(data)
                continue
            for end in (sock, other):  # one end closed: close both
                self.peer.pop(end, None)
                end.close()


def _loses(data: bytes, lose: str) -> bool:
    """Whether ``data`` is the hook datagram to lose: it has a new row whose request id holds ``lose``."""
    if not lose or lose.encode() not in data:
        return False
    rows = json.loads(data).get("new", [])
    return any(lose in str(row[1]) for row in rows if isinstance(row, list) and len(row) > 1)


def main(argv: list[str]) -> None:
    to_hook, to_plugin = (_LOCAL, int(argv[0])), (_LOCAL, int(argv[1]))
    hook_in, plugin_in, out = _udp(), _udp(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    streams = _Streams((_LOCAL, int(argv[2])))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ports = (hook_in, plugin_in, streams.listener)
    lose = argv[4] if len(argv) > 4 else ""
    print(*(sock.getsockname()[1] for sock in ports), flush=True)
    with open(argv[3], "ab", buffering=0) as copies:
        while True:
            ready, _, _ = select.select([hook_in, plugin_in, *streams.sockets()], [], [], 0.2)
            spans = streams.read(ready)  # first: see the module docstring
            plugin = _drain(plugin_in)
            hook = _drain(hook_in)
            for data in hook:
                if _loses(data, lose):
                    lose = ""  # once
                    continue
                out.sendto(data, to_hook)
            for data in plugin:
                out.sendto(data, to_plugin)
            streams.send(spans)
            if hook:
                copies.write(b"".join(_LENGTH.pack(len(d)) + d for d in hook))


if __name__ == "__main__":
    main(sys.argv[1:])
