"""``torchrun`` for one node with its rendezvous store listening on the loopback interface only.

torchrun's agent hosts the run's ``TCPStore``, and a ``TCPStore`` server listens on every interface whatever host it
is given, so any machine that can reach the port could join or poison a single-node run. This entry point
(``python -m onevision.train.rendezvous <torchrun arguments>``) pre-binds the store's socket to the given loopback
``--master_addr`` and hands it to the store (``master_listen_fd``); everything else is torchrun unchanged. The workers
connect to the agent's store (``TORCHELASTIC_USE_AGENT_STORE``), so no other process listens for the rendezvous.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

_sockets: list[socket.socket] = []  # kept open for the life of the agent: the store serves from them


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_store(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
    """A ``TCPStore`` like torch's; as the server on a loopback ``host``, it listens on ``host`` only."""
    import torch.distributed as dist

    is_master = args[1] if len(args) > 1 else kwargs.get("is_master", False)
    if is_master and _is_loopback(host) and "master_listen_fd" not in kwargs:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        _sockets.append(sock)
        kwargs = {**kwargs, "master_listen_fd": sock.fileno(), "use_libuv": True}
    return dist.TCPStore(host, port, *args, **kwargs)


def main(argv: list[str] | None = None) -> None:
    from torch.distributed import run
    from torch.distributed.elastic.rendezvous import static_tcp_rendezvous

    static_tcp_rendezvous.TCPStore = loopback_store  # the store the static (single-node) rendezvous creates
    run.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
