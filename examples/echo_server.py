"""A trio TCP echo server with one supervised actor per connection.

Every connection gets its own actor from a ``DynamicSupervisor``: the
connection's task reads lines and asks the actor for each reply. A client
that sends the poison line crashes only its own actor (TEMPORARY: not
restarted), and its connection is closed; every other client keeps being
served. Run it: ``python examples/echo_server.py [clients]`` (default 200
concurrent clients on 127.0.0.1, an ephemeral port).
"""

from __future__ import annotations

import functools
import sys

import trio

from flujo_actors import Actor, ActorCrashed, ChildSpec, ChildStopped, DynamicSupervisor, Restart

POISON = b"poison"
LINES_PER_CLIENT = 5


class Connection(Actor):
    """One client's state: echoes lines in upper case, numbered; crashes on the poison line."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.count = 0

    async def handle(self, line: bytes) -> bytes:
        if line == POISON:
            raise ValueError(f"poison line from {self.peer}")
        self.count += 1
        return b"%d %s" % (self.count, line.upper())


async def serve_connection(dyn: DynamicSupervisor, stream: trio.SocketStream) -> None:
    """The connection's task: one actor per connection, one ask per line."""
    host, port = stream.socket.getpeername()[:2]
    peer = f"{host}:{port}"
    ref = await dyn.start_child(peer)
    buffer = b""
    async with stream:
        try:
            async for data in stream:
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    reply = await ref.ask(line)
                    await stream.send_all(reply + b"\n")
        except ActorCrashed:
            await stream.send_all(b"crashed\n")  # only this client's actor is gone
        finally:
            if ref.statistics().state != "stopped":
                await dyn.stop_child(ref.name)


async def client(port: int, index: int, poison: bool) -> list[bytes]:
    """Send a few lines (or the poison line) and collect the replies."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    replies: list[bytes] = []
    async with stream:
        lines = [POISON] if poison else [b"hello %d" % index] * LINES_PER_CLIENT
        for line in lines:
            await stream.send_all(line + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = await stream.receive_some()
                if not chunk:
                    return replies
                reply += chunk
            replies.append(reply.rstrip(b"\n"))
    return replies


async def main(clients: int = 200, poisoned: int = 3) -> dict[str, int]:
    """Start the server, run ``clients`` concurrent clients (``poisoned`` of them send poison)."""
    dyn = DynamicSupervisor(
        ChildSpec("conn", Connection, restart=Restart.TEMPORARY),
        max_children=clients + 10,
        max_restarts=0,  # temporary children are never restarted: a crash costs nothing
    )
    results: dict[int, list[bytes]] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(dyn.run)
        handler = functools.partial(serve_connection, dyn)
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]

        async def run_client(index: int) -> None:
            results[index] = await client(port, index, poison=index < poisoned)

        async with trio.open_nursery() as clients_nursery:
            for index in range(clients):
                clients_nursery.start_soon(run_client, index)
        # The server survived the poison: one more client is served as usual.
        after = await client(port, clients, poison=False)
        assert after == [b"%d HELLO %d" % (n, clients) for n in range(1, LINES_PER_CLIENT + 1)]
        crashed_downs = [
            e for e in dyn.events() if isinstance(e, ChildStopped) and e.reason == "crashed"
        ]
        nursery.cancel_scope.cancel()
    served = sum(
        1
        for index, replies in results.items()
        if replies == [b"%d HELLO %d" % (n, index) for n in range(1, LINES_PER_CLIENT + 1)]
    )
    crashed = sum(1 for replies in results.values() if replies == [b"crashed"])
    summary = {
        "clients": clients,
        "served": served,
        "crashed": crashed,
        "downs": len(crashed_downs),
    }
    assert served == clients - poisoned, summary
    assert crashed == poisoned == len(crashed_downs), summary
    return summary


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    summary = trio.run(main, count)
    print(
        f"{summary['served']} of {summary['clients']} clients served; "
        f"{summary['crashed']} poisoned connections crashed only their own actor; "
        "the server kept serving."
    )
