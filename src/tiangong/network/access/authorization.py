"""Topic authorization of the device access scheme: who may publish and subscribe where.

A **device** may publish only on its own topics (telemetry, events, status, command results)
and subscribe only to its own command requests; a gateway speaks for its children inside its own
telemetry payloads, never on their topics. A **service** (the platform itself) may subscribe to
the whole scheme and publish command requests. Everything else is refused.

Sparkplug B (``spBv1.0``): every device may act as an edge node under its own id, in the group
named after its site, and nowhere else. It may publish its node messages
``spBv1.0/<site>/{NBIRTH,NDEATH,NDATA}/<id>`` and the device messages of its children
``spBv1.0/<site>/{DBIRTH,DDEATH,DDATA}/<id>/<child>``, and subscribe to its commands
``spBv1.0/<site>/NCMD/<id>`` and ``spBv1.0/<site>/DCMD/<id>/+`` (or ``.../<id>/#``, as
Eclipse Tahu's clients do: such a filter only ever matches its own commands) and to host
states ``spBv1.0/STATE/+``. The service may read ``spBv1.0/#`` (never as a shared
subscription: Sparkplug's sequence numbers need one host to see all of a node's messages) and
publish NCMD, DCMD and its STATE.

This is the one statement of the rules: the embedded broker applies it on every CONNECT,
SUBSCRIBE and PUBLISH, and ``tiangong broker mosquitto-files`` renders the same rules as a
Mosquitto ACL file.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from tiangong.network.access.topics import ROOT, Channel, parse_topic
from tiangong.network.errors import TopicError

__all__ = [
    "DEVICE_PUBLISH_CHANNELS",
    "SPARKPLUG_DEVICE_MESSAGES",
    "SPARKPLUG_NAMESPACE",
    "SPARKPLUG_NODE_MESSAGES",
    "Principal",
    "Role",
    "may_publish",
    "may_subscribe",
]

#: Channels a device may publish on (its own topics only).
DEVICE_PUBLISH_CHANNELS: Final = frozenset(
    {Channel.TELEMETRY, Channel.EVENTS, Channel.STATUS, Channel.COMMAND_RESULT}
)
#: First level of every Sparkplug B topic.
SPARKPLUG_NAMESPACE: Final = "spBv1.0"
#: Sparkplug message types an edge node publishes about itself (``.../<type>/<node>``).
SPARKPLUG_NODE_MESSAGES: Final = ("NBIRTH", "NDEATH", "NDATA")
#: Sparkplug message types an edge node publishes for its devices (``.../<node>/<device>``).
SPARKPLUG_DEVICE_MESSAGES: Final = ("DBIRTH", "DDEATH", "DDATA")
_WILDCARDS: Final = frozenset("+#")


class Role(enum.Enum):
    """What kind of client is connected."""

    DEVICE = "device"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated MQTT client."""

    username: str
    role: Role
    tenant: str | None = None
    site: str | None = None
    device: str | None = None


def _own(principal: Principal, topic: str) -> Channel | None:
    try:
        parsed = parse_topic(topic)
    except TopicError:
        return None
    if (parsed.tenant, parsed.site, parsed.device) != (
        principal.tenant,
        principal.site,
        principal.device,
    ):
        return None
    return parsed.channel


def _plain_id(level: str) -> bool:
    """A topic level that names one id (no wildcard, not empty)."""
    return bool(level) and _WILDCARDS.isdisjoint(level)


def _sparkplug_levels(topic: str) -> list[str] | None:
    levels = topic.split("/")
    return levels if levels[0] == SPARKPLUG_NAMESPACE and len(levels) >= 3 else None


def _service_may_publish_sparkplug(levels: list[str]) -> bool:
    if len(levels) == 3 and levels[1] == "STATE":
        return _plain_id(levels[2])
    if not all(_plain_id(level) for level in levels[1:]):
        return False
    return (len(levels) == 4 and levels[2] == "NCMD") or (len(levels) == 5 and levels[2] == "DCMD")


def _edge_node_may_publish(principal: Principal, levels: list[str]) -> bool:
    if len(levels) < 4 or (levels[1], levels[3]) != (principal.site, principal.device):
        return False
    if len(levels) == 4:
        return levels[2] in SPARKPLUG_NODE_MESSAGES
    return len(levels) == 5 and levels[2] in SPARKPLUG_DEVICE_MESSAGES and _plain_id(levels[4])


def _edge_node_may_subscribe(principal: Principal, levels: list[str]) -> bool:
    if len(levels) == 3 and levels[1] == "STATE":
        return levels[2] == "+" or _plain_id(levels[2])
    if len(levels) < 4 or (levels[1], levels[3]) != (principal.site, principal.device):
        return False
    rest = levels[4:]
    if levels[2] == "NCMD":
        return rest in ([], ["#"])
    if levels[2] == "DCMD":
        return len(rest) == 1 and (rest[0] in ("+", "#") or _plain_id(rest[0]))
    return False


def may_publish(principal: Principal, topic: str) -> bool:
    """Whether ``principal`` may publish on ``topic``."""
    sparkplug = _sparkplug_levels(topic)
    if principal.role is Role.SERVICE:
        if sparkplug is not None:
            return _service_may_publish_sparkplug(sparkplug)
        try:
            return parse_topic(topic).channel is Channel.COMMAND_REQUEST
        except TopicError:
            return False
    if sparkplug is not None:
        return _edge_node_may_publish(principal, sparkplug)
    return _own(principal, topic) in DEVICE_PUBLISH_CHANNELS


def may_subscribe(principal: Principal, topic_filter: str) -> bool:
    """Whether ``principal`` may subscribe to ``topic_filter`` (or receive on that topic)."""
    if principal.role is Role.SERVICE:
        if topic_filter.startswith(SPARKPLUG_NAMESPACE + "/"):
            return True
        plain = topic_filter
        if plain.startswith("$share/"):
            parts = plain.split("/", 2)
            plain = parts[2] if len(parts) == 3 else ""
        return plain == ROOT + "/#" or plain.startswith(ROOT + "/")
    sparkplug = _sparkplug_levels(topic_filter)
    if sparkplug is not None:
        return _edge_node_may_subscribe(principal, sparkplug)
    return _own(principal, topic_filter) is Channel.COMMAND_REQUEST
