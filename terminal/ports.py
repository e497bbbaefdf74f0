"""Free TCP ports for vpcd readers, which listen on PORT and PORT+1 (two slots) on all
interfaces: both must be free there, not only on loopback."""

from __future__ import annotations

import socket


def free_vpcd_port(attempts: int = 200) -> int:
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65534:
            continue
        with socket.socket() as s1, socket.socket() as s2:
            try:
                s1.bind(("0.0.0.0", port))
                s2.bind(("0.0.0.0", port + 1))
            except OSError:
                continue
        return port
    raise OSError("no free port pair for vpcd")
