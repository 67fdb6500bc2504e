"""Browse an OPC UA server's address space to find the variables a gateway should subscribe to.

``tiangong edge browse opc.tcp://...`` is what a plant engineer runs before writing the
``[[devices.points]]`` of an OPC UA machine: it walks the Objects folder, lists every variable
with its node id, data type, engineering unit and whether it may be written, and can print the
list as configuration to paste. Nodes of the OPC UA namespace itself (ns=0: the Server object's
diagnostics, Aliases) are left out: the machines are in the server's own namespaces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

__all__ = ["BrowsedVariable", "browse_variables", "points_toml", "property_name"]


def _is_standard(node: Node) -> bool:
    """Whether a node belongs to the OPC UA namespace itself (ns=0)."""
    return node.nodeid.NamespaceIndex == 0


@dataclass(frozen=True, slots=True)
class BrowsedVariable:
    """A variable found under the Objects folder.

    Attributes:
        path: browse names from the Objects folder down to the variable.
        node_id: its node id, as a configuration's ``node`` takes it.
        data_type: the variant type of its value (``Double``, ``Int32``...).
        unit: the display name of its ``EngineeringUnits`` property, if it has one.
        writable: whether its access level allows writing the current value.
        value: its value when browsed.
    """

    path: tuple[str, ...]
    node_id: str
    data_type: str
    unit: str | None
    writable: bool
    value: Any


async def browse_variables(
    client: Client, *, max_depth: int = 6, limit: int = 10_000
) -> list[BrowsedVariable]:
    """Every variable under the Objects folder, depth first, at most ``limit`` of them.

    Properties (``EngineeringUnits``, ``EURange``...) describe a variable and are not listed.
    """
    found: list[BrowsedVariable] = []

    async def walk(node: Node, path: tuple[str, ...], depth: int) -> None:
        if depth > max_depth or len(found) >= limit:
            return
        for child in await node.get_children(refs=ObjectIds.HierarchicalReferences):
            if _is_standard(child) or len(found) >= limit:
                continue
            name = (await child.read_browse_name()).Name
            node_class = await child.read_node_class()
            if node_class == ua.NodeClass.Variable:
                found.append(await _describe(child, (*path, name)))
            elif node_class == ua.NodeClass.Object:
                await walk(child, (*path, name), depth + 1)

    await walk(client.nodes.objects, (), 1)
    return found


async def _describe(node: Node, path: tuple[str, ...]) -> BrowsedVariable:
    try:
        value = await node.read_value()
    except UaError:  # a bad status: the variable exists, its value is not readable now
        value = None
    try:
        data_type = (await node.read_data_type_as_variant_type()).name
    except (UaError, ValueError):
        data_type = "?"
    access = (await node.read_attribute(AttributeIds.AccessLevel)).Value
    level = access.Value if access is not None else 0
    writable = bool((level or 0) & ua.AccessLevel.CurrentWrite.mask)
    unit = None
    try:
        units = await node.get_child("0:EngineeringUnits")
        information = await units.read_value()
        unit = information.DisplayName.Text if information is not None else None
    except UaError:
        pass  # no EngineeringUnits property
    return BrowsedVariable(
        path=path,
        node_id=node.nodeid.to_string(),
        data_type=data_type,
        unit=unit or None,
        writable=writable,
        value=value,
    )


def property_name(path: Sequence[str]) -> str:
    """A thing-model property id suggested by a variable's browse name."""
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", path[-1]).lower()
    name = re.sub(r"[^a-z0-9_]+", "_", snake).strip("_")
    return name or "value"


def points_toml(variables: Sequence[BrowsedVariable], sampling_ms: int = 1000) -> str:
    """``[[devices.points]]`` entries for ``variables``, to paste under an OPC UA device.

    The property ids are suggestions from the browse names: map them to the machine's thing
    model before use.
    """
    lines: list[str] = []
    for variable in variables:
        lines += [
            f"# {'/'.join(variable.path)} ({variable.data_type})",
            "[[devices.points]]",
            f"property = {json.dumps(property_name(variable.path))}",
            f"node = {json.dumps(variable.node_id)}",
            f"sampling_ms = {sampling_ms}",
        ]
        if variable.unit:
            lines.append(f"unit = {json.dumps(variable.unit, ensure_ascii=False)}")
        if variable.writable:
            lines.append("writable = true")
        lines.append("")
    return "\n".join(lines)
