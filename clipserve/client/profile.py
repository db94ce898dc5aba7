"""``Client.profile()``: where the time of one request went, as a rich tree and a dict.

The reply's ``routes[0]`` is the server's gateway (whole server time) and the following
routes are the model executor(s); the client measures the roundtrip itself."""

from __future__ import annotations

from rich.console import Console
from rich.tree import Tree

from clipserve.wire.clipserve_wire_pb2 import DataRequestProto, RouteProto

KEYS = ("Roundtrip", "Client-server network", "Server", "Gateway-CLIP network", "CLIP model")


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
        "Gateway-CLIP network": max(0.0, server - model),
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
    server_node.add(label(":satellite:", "Gateway-CLIP network", server))
    server_node.add(label(":brain:", "CLIP model", server))
    (console or Console()).print(tree)
    return tree
