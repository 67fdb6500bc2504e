"""Supply-chain trace (贯通): follow a product's component references across identifier nodes.

A product batch's record lists what went into it as ``TG.COMPONENT`` values: the data is the
component's identifier (``88.100.2/LOT-MOTOR-0001``), usually held by another enterprise's
node, and the value's ``references`` point at ``(component, 1)``. ``trace`` resolves the root
identifier through a resolver, then every identifier its values name (``TG.COMPONENT`` data
and any value reference), and so on down, and returns the tree.

Strategy: depth first, with the children of one record resolved concurrently (they usually
live on different nodes, so their round trips overlap). A trace is a report, so nothing in the
data stops it: a reference back onto the current path is marked a cycle and not followed; an
identifier already shown elsewhere in the tree is marked repeated (a bearing lot in two motor
lots is resolved and expanded once); a missing identifier is marked not found with the node's
response code; an unreachable node or any other failure marks that branch an error and the
walk goes on. ``max_depth`` and ``max_nodes`` bound the work on any data.

``render_trace`` draws the tree with rich; ``trace_command`` is ``tiangong id trace``.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import typer
from rich.text import Text
from rich.tree import Tree

from tiangong.identity.errors import IdentityError, ResolutionError
from tiangong.identity.handle.protocol import ResponseCode
from tiangong.identity.handle.values import HandleRecord, HandleValue, handle_key, is_prefix_handle

__all__ = [
    "COMPONENT",
    "RecordSource",
    "TraceNode",
    "TraceStatus",
    "references",
    "render_trace",
    "trace",
    "trace_command",
]

#: The value type naming a component of a product: data is the component's identifier.
COMPONENT = "TG.COMPONENT"

#: Response codes that mean "there is no such identifier" rather than "could not find out".
_NOT_FOUND_CODES = frozenset({ResponseCode.HANDLE_NOT_FOUND, ResponseCode.VALUES_NOT_FOUND})


class RecordSource(Protocol):
    """Anything that resolves an identifier to its public record (``Resolver`` does)."""

    async def resolve(
        self, handle: str, *, indexes: Sequence[int] = (), types: Sequence[str] = ()
    ) -> HandleRecord:
        """The record of ``handle``; raises ``ResolutionError`` with a response code."""
        ...


class TraceStatus(enum.StrEnum):
    """What became of one identifier in the trace."""

    FOUND = "found"  # resolved; its references were followed
    NOT_FOUND = "not_found"  # the responsible node says it does not exist
    ERROR = "error"  # could not be resolved: node unreachable, refused, malformed
    CYCLE = "cycle"  # already on the path from the root: not followed again
    REPEATED = "repeated"  # already shown elsewhere in the tree: not expanded again
    TRUNCATED = "truncated"  # not resolved: the depth or node limit was reached


@dataclass
class TraceNode:
    """One identifier in a trace tree.

    Attributes:
        identifier: the identifier as the referring record gave it.
        status: what became of it.
        via: the type of the value that referenced it (``TG.COMPONENT``...); ``None`` at the root.
        record: its record, when it was resolved (also on a repeated node, from the first).
        response_code: the Handle response code of a failed resolution.
        detail: why it is not found, an error, a cycle or truncated.
        children: the identifiers its record references, in value-index order.
    """

    identifier: str
    status: TraceStatus
    via: str | None = None
    record: HandleRecord | None = None
    response_code: int | None = None
    detail: str = ""
    children: list[TraceNode] = field(default_factory=list)

    def walk(self) -> Iterator[TraceNode]:
        """This node and every node below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, identifier: str) -> TraceNode | None:
        """The first node (depth first) for ``identifier`` (case-insensitive), if any."""
        key = handle_key(identifier)
        return next((n for n in self.walk() if handle_key(n.identifier) == key), None)

    def to_json(self) -> dict[str, Any]:
        """The tree as JSON-ready data (``tiangong id trace --json``)."""
        out: dict[str, Any] = {"identifier": self.identifier, "status": self.status.value}
        if self.via is not None:
            out["via"] = self.via
        if self.response_code is not None:
            out["responseCode"] = self.response_code
        if self.detail:
            out["detail"] = self.detail
        if self.record is not None:
            out["values"] = [
                {"index": v.index, "type": v.type, "data": _text(v.data)}
                for v in _shown_values(self.record)
            ]
        out["children"] = [child.to_json() for child in self.children]
        return out


def references(record: HandleRecord) -> list[tuple[str, str]]:
    """``(identifier, via type)`` of everything ``record`` points at, in value-index order.

    ``TG.COMPONENT`` data names a component; any value's ``references`` name others. Prefix
    handles (``0.NA/...``, the admin machinery) and references of ``HS_`` values are not
    supply-chain links and are skipped. Each identifier appears once.
    """
    found: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(identifier: str, via: str) -> None:
        identifier = identifier.strip()
        key = handle_key(identifier)
        if not identifier or key in seen or is_prefix_handle(identifier):
            return
        seen.add(key)
        found.append((identifier, via))

    for value in sorted(record.values, key=lambda v: v.index):
        if value.type.upper().startswith("HS_"):
            continue
        if value.type_matches(COMPONENT):
            add(_text(value.data), value.type)
        for reference in value.references:
            add(reference.handle, value.type)
    return found


async def trace(
    resolver: RecordSource, identifier: str, *, max_depth: int = 8, max_nodes: int = 500
) -> TraceNode:
    """Resolve ``identifier`` and, recursively, everything its record references.

    Args:
        resolver: resolves one identifier (a ``Resolver`` starting at the root).
        identifier: where the trace starts, e.g. ``88.100.1/BATCH-LINE-001-20250101-080000``.
        max_depth: references deeper than this below the root are listed, not resolved.
        max_nodes: at most this many identifiers are resolved (the root included).

    Returns:
        The tree; it never raises for what it finds (see ``TraceStatus``).
    """
    walk = _Walk(resolver, max_depth=max_depth, max_nodes=max(1, max_nodes))
    root = TraceNode(identifier, TraceStatus.FOUND)
    walk.resolved = 1
    await walk.resolve(root)
    if root.status is TraceStatus.FOUND:
        await walk.expand(root, path=frozenset({handle_key(identifier)}), depth=0)
    return root


class _Walk:
    """The state of one trace: what was claimed, how many were resolved."""

    def __init__(self, resolver: RecordSource, *, max_depth: int, max_nodes: int) -> None:
        self.resolver = resolver
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.resolved = 0
        self.claimed: dict[str, TraceNode] = {}

    async def resolve(self, node: TraceNode) -> None:
        """Resolve ``node`` in place: FOUND with its record, or NOT_FOUND / ERROR."""
        try:
            node.record = await self.resolver.resolve(node.identifier)
        except ResolutionError as exc:
            node.response_code = int(exc.response_code)
            node.detail = str(exc)
            node.status = (
                TraceStatus.NOT_FOUND
                if exc.response_code in _NOT_FOUND_CODES
                else TraceStatus.ERROR
            )
        except (IdentityError, OSError, TimeoutError, ValueError) as exc:
            node.status = TraceStatus.ERROR
            node.detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - a trace reports a broken branch, never dies of it
            node.status = TraceStatus.ERROR
            node.detail = f"unexpected {type(exc).__name__}: {exc}"
        else:
            node.status = TraceStatus.FOUND
        self.claimed[handle_key(node.identifier)] = node

    async def expand(self, node: TraceNode, *, path: frozenset[str], depth: int) -> None:
        """Give ``node`` its children, resolving new ones concurrently, then recurse."""
        assert node.record is not None
        fresh: list[TraceNode] = []
        for identifier, via in references(node.record):
            key = handle_key(identifier)
            if key in path:
                node.children.append(
                    TraceNode(identifier, TraceStatus.CYCLE, via, detail="already on this path")
                )
            elif key in self.claimed:
                first = self.claimed[key]
                node.children.append(
                    TraceNode(
                        identifier,
                        TraceStatus.REPEATED,
                        via,
                        record=first.record,
                        detail="shown above",
                    )
                )
            elif depth >= self.max_depth:
                node.children.append(
                    TraceNode(
                        identifier,
                        TraceStatus.TRUNCATED,
                        via,
                        detail=f"deeper than --max-depth {self.max_depth}",
                    )
                )
            elif self.resolved >= self.max_nodes:
                node.children.append(
                    TraceNode(
                        identifier,
                        TraceStatus.TRUNCATED,
                        via,
                        detail=f"more than {self.max_nodes} identifiers",
                    )
                )
            else:
                child = TraceNode(identifier, TraceStatus.FOUND, via)
                self.resolved += 1
                self.claimed[key] = child
                node.children.append(child)
                fresh.append(child)
        await asyncio.gather(*(self.resolve(child) for child in fresh))
        for child in fresh:
            if child.status is TraceStatus.FOUND:
                key = handle_key(child.identifier)
                await self.expand(child, path=path | {key}, depth=depth + 1)


# ---------------------------------------------------------------- rendering


def _text(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data.hex()
    return text if text.isprintable() else data.hex()


def _shown_values(record: HandleRecord) -> list[HandleValue]:
    """The values worth showing: not the HS_ machinery, not the references (they are children)."""
    return [
        v
        for v in sorted(record.values, key=lambda v: v.index)
        if not v.type.upper().startswith("HS_") and not v.type_matches(COMPONENT)
    ]


#: Values the tree leaves out of a line (links are long; ``--json`` and ``id resolve`` show them).
_NOT_SUMMARIZED = frozenset({"URL", "TG.RECORD", "TG.KIND"})


def _summary(record: HandleRecord) -> tuple[str, str]:
    """``(kind, "name … · site … · …")`` of a record, for one line of the tree."""
    kind = next((_text(v.data) for v in record.values if v.type.upper() == "TG.KIND"), "")
    parts: list[str] = []
    for value in _shown_values(record):
        if value.type.upper() in _NOT_SUMMARIZED or value.references:
            continue  # a reference is drawn as a child
        name = value.type[3:].lower() if value.type.upper().startswith("TG.") else value.type
        parts.append(f"{name} {_text(value.data)}")
    return kind, " · ".join(parts)


_MARKS: dict[TraceStatus, tuple[str, str]] = {
    TraceStatus.NOT_FOUND: ("✗ not found", "bold red"),
    TraceStatus.ERROR: ("⚠ error", "bold yellow"),
    TraceStatus.CYCLE: ("↺ cycle", "bold magenta"),
    TraceStatus.REPEATED: ("= repeated", "dim"),
    TraceStatus.TRUNCATED: ("… not followed", "dim"),
}


#: Whose ``detail`` the tree shows (a not-found's detail only repeats its code).
_DETAILED = frozenset({TraceStatus.ERROR, TraceStatus.TRUNCATED, TraceStatus.CYCLE})


def _label(node: TraceNode) -> Text:
    label = Text()
    if node.via is not None:
        label.append(f"{node.via} ", style="dim")
    label.append(node.identifier, style="bold" if node.status is TraceStatus.FOUND else "")
    if node.status is TraceStatus.FOUND and node.record is not None:
        kind, summary = _summary(node.record)
        if kind:
            label.append(f" [{kind}]", style="green")
        if summary:
            label.append(f"  {summary}", style="cyan")
        return label
    mark, style = _MARKS.get(node.status, (node.status.value, ""))
    label.append(f"  {mark}", style=style)
    if node.response_code is not None:
        try:
            code_name = ResponseCode(node.response_code).name
        except ValueError:
            code_name = "UNKNOWN"
        label.append(f" ({node.response_code} {code_name})", style=style)
    if node.detail and node.status in _DETAILED:
        label.append(f": {node.detail}", style="dim")
    return label


def render_trace(node: TraceNode) -> Tree:
    """The trace as a rich tree: one line per identifier, marks on what could not be followed."""
    tree = Tree(_label(node), guide_style="dim")
    _add_children(tree, node)
    return tree


def _add_children(tree: Tree, node: TraceNode) -> None:
    for child in node.children:
        _add_children(tree.add(_label(child)), child)


# ---------------------------------------------------------------- CLI


def trace_command(
    identifier: Annotated[
        str, typer.Argument(help="The product or batch identifier, e.g. 88.100.1/BATCH-....")
    ],
    server: Annotated[
        str,
        typer.Option(
            help="host:port of the root node (or a resolver) to resolve from; every referenced"
            " node is then asked directly."
        ),
    ] = "127.0.0.1:2641",
    max_depth: Annotated[
        int, typer.Option(min=0, max=64, help="Follow references at most this deep.")
    ] = 8,
    max_nodes: Annotated[
        int, typer.Option(min=1, max=100_000, help="Resolve at most this many identifiers.")
    ] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="Print the tree as JSON.")] = False,
) -> None:
    """Trace a product across enterprises: resolve it and every component it references.

    Cycles, missing identifiers and unreachable nodes are marked in the tree; the command exits
    with 1 only when the identifier itself cannot be resolved.
    """
    import orjson  # noqa: PLC0415 - keep --help fast
    from rich.console import Console  # noqa: PLC0415

    from tiangong.cli import run  # noqa: PLC0415 - the CLI imports this module
    from tiangong.identity.client import HandleClient, ServerAddress  # noqa: PLC0415
    from tiangong.identity.resolver import Resolver  # noqa: PLC0415

    try:
        address = ServerAddress.parse(server)
    except ValueError as exc:
        raise typer.BadParameter(f"{server!r}: expected host:port, e.g. 127.0.0.1:2641") from exc
    console = Console()
    outcome: list[TraceNode] = []

    async def go() -> None:
        resolver = Resolver([address], client=HandleClient(timeout=2.0))
        outcome.append(await trace(resolver, identifier, max_depth=max_depth, max_nodes=max_nodes))

    run(go())
    root = outcome[0]
    if as_json:
        console.print_json(orjson.dumps(root.to_json()).decode())
    else:
        console.print(render_trace(root))
    if root.status is not TraceStatus.FOUND:
        raise typer.Exit(1)
