"""Topic scheme of the device access protocol.

Every device-facing topic names the tenant (enterprise), the site (factory) and the device::

    tg/v1/{tenant}/{site}/{device}/telemetry    device -> platform   measurements (JSON)
    tg/v1/{tenant}/{site}/{device}/events       device -> platform   events (JSON)
    tg/v1/{tenant}/{site}/{device}/status       device -> platform   "online" / "offline" (retained;
                                                                     the last will is "offline")
    tg/v1/{tenant}/{site}/{device}/cmd/req      platform -> device   command requests
    tg/v1/{tenant}/{site}/{device}/cmd/res      device -> platform   command results

A gateway publishes its children's telemetry on its own telemetry topic (see ``payload``).
Names are 1 to 64 characters from ``[A-Za-z0-9_.-]``, starting with a letter or digit, so they
never contain MQTT's separators or wildcards and read the same in a URL.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from tiangong.network.errors import TopicError

__all__ = ["NAME_PATTERN", "ROOT", "Channel", "DeviceTopic", "is_valid_name", "parse_topic"]

#: The syntax of tenant, site, device, metric and thing-model names.
NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_NAME_RE: Final = re.compile(NAME_PATTERN)

#: First two levels of every topic of the scheme (``tg`` = Tiangong, then the scheme version).
ROOT: Final = "tg/v1"


def is_valid_name(name: str) -> bool:
    """Whether ``name`` may be used as a tenant, site, device or metric name."""
    return bool(_NAME_RE.match(name))


class Channel(enum.Enum):
    """The last level(s) of a device topic."""

    TELEMETRY = "telemetry"
    EVENTS = "events"
    STATUS = "status"
    COMMAND_REQUEST = "cmd/req"
    COMMAND_RESULT = "cmd/res"


_CHANNELS: Final = {c.value: c for c in Channel}


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    """A parsed device topic."""

    tenant: str
    site: str
    device: str
    channel: Channel

    def __str__(self) -> str:
        return f"{ROOT}/{self.tenant}/{self.site}/{self.device}/{self.channel.value}"

    @staticmethod
    def build(tenant: str, site: str, device: str, channel: Channel) -> str:
        """Build a topic, checking every name.

        Raises:
            TopicError: a name does not follow the name syntax.
        """
        for kind, name in (("tenant", tenant), ("site", site), ("device", device)):
            if not is_valid_name(name):
                raise TopicError(f"invalid {kind} name {name!r} (allowed: {NAME_PATTERN})")
        return f"{ROOT}/{tenant}/{site}/{device}/{channel.value}"

    @staticmethod
    def filter(channel: Channel, tenant: str = "+", site: str = "+", device: str = "+") -> str:
        """An MQTT topic filter for one channel, ``+`` where a level is left open."""
        return f"{ROOT}/{tenant}/{site}/{device}/{channel.value}"


def parse_topic(topic: str) -> DeviceTopic:
    """Parse a topic of the scheme.

    Raises:
        TopicError: the topic is not part of the device access scheme.
    """
    parts = topic.split("/")
    if len(parts) < 6 or parts[0] != "tg" or parts[1] != "v1":
        raise TopicError(
            f"topic {topic!r} is outside the scheme tg/v1/<tenant>/<site>/<device>/<channel>"
        )
    tenant, site, device = parts[2], parts[3], parts[4]
    channel = _CHANNELS.get("/".join(parts[5:]))
    if channel is None:
        raise TopicError(f"topic {topic!r} has an unknown channel {'/'.join(parts[5:])!r}")
    for kind, name in (("tenant", tenant), ("site", site), ("device", device)):
        if not _NAME_RE.match(name):
            raise TopicError(f"topic {topic!r} has an invalid {kind} name {name!r}")
    return DeviceTopic(tenant=tenant, site=site, device=device, channel=channel)
