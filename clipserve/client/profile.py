"""``Client.profile()``: where the time of one request went, as a rich tree and a dict.

Only what is measured is shown: the roundtrip (timed by the client), the server's time
(the reply's first route, ``gateway``, spans the whole request on the server) and the
model's (the longest of the other routes, ``clip_t``: the engine call, batching included).
The network row is the roundtrip minus the server's time: transfer, (de)serialization and
the client's own work. clip-client also prints a "Gateway-CLIP network" row, the time
between a Jina gateway and its executor; a clipserve server is one process with no such
hop, so that row is not shown."""

from __future__ import annotations

from rich.console import Console
from rich.tree import Tree

from clipserve.wire.clipserve_wire_pb2 import DataRequestProto, RouteProto

KEYS = ("Roundtrip", "Client-server network", "Server", "CLIP model")


def route_ms(route: RouteProto) -> float:
    return (route.end_time.ToNanoseconds() - route.start_time.ToNanoseconds()) / 1e6


def summarize(reply: DataRequestProto, roundtrip_ms: float) -> dict[str, float]:
    """Milliseconds per stage, keyed as in the printed tree."""
    routes = list(reply.routes)
    server = route_ms(routes[0]) if routes else 0.0
    model = max((route_ms(r) for r in routes[1:]), default=0.0)
    server = min(server, roundtrip_ms) if server > 0 else 0.0
    model = min(model, server)
    return {
        "Roundtrip": roundtrip_ms,
        "Client-server network": max(0.0, roundtrip_ms - server),
        "Server": server,
        "CLIP model": model,
    }


def render(summary: dict[str, float], console: Console | None = None) -> Tree:
    """Print (and return) the tree: each stage with ms and its share of its parent."""

    def label(icon: str, name: str, parent: float) -> str:
        ms = summary[name]
        share = 100.0 * ms / parent if parent > 0 else 0.0
        return f"{icon} [b]{name}[/b]  [blue]{ms:.0f}ms[/blue]  [green]{share:.0f}%[/green]"

    total, server = summary["Roundtrip"], summary["Server"]
    tree = Tree(label(":hourglass_flowing_sand:", "Roundtrip", total))
    tree.add(label(":satellite:", "Client-server network", total))
    server_node = tree.add(label(":desktop_computer:", "Server", total))
    server_node.add(label(":brain:", "CLIP model", server))
    (console or Console()).print(tree)
    return tree
