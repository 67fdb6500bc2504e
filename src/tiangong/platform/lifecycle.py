"""Device lifecycle state machine.

Theory of operation
-------------------
A device is registered ``provisioned``: it has credentials but has never connected. Its first
connection (a status ``online``, a connect seen by the embedded broker, or simply data) makes
it ``online``; a disconnect, its last will, or silence beyond the inactivity timeout makes it
``offline``; it moves between the two for the rest of its working life. Decommissioning is
final: credentials are revoked, data it sends is dead-lettered, its history stays queryable.

::

    provisioned --connect--> online <--connect/disconnect--> offline
         |                     |                               |
         +---------------------+---decommission----------------+--> decommissioned (final)

The table below is the whole machine; ``transition`` is the only way a state changes.
"""

from __future__ import annotations

import enum
from typing import Final

from tiangong.platform.errors import LifecycleError
from tiangong.platform.model import DeviceState

__all__ = ["LifecycleTrigger", "transition"]


class LifecycleTrigger(enum.StrEnum):
    """What can happen to a device."""

    CONNECT = "connect"
    DISCONNECT = "disconnect"
    DECOMMISSION = "decommission"


_S = DeviceState
_T = LifecycleTrigger

_TRANSITIONS: Final[dict[tuple[DeviceState, LifecycleTrigger], DeviceState]] = {
    (_S.PROVISIONED, _T.CONNECT): _S.ONLINE,
    (_S.PROVISIONED, _T.DISCONNECT): _S.PROVISIONED,
    (_S.PROVISIONED, _T.DECOMMISSION): _S.DECOMMISSIONED,
    (_S.ONLINE, _T.CONNECT): _S.ONLINE,
    (_S.ONLINE, _T.DISCONNECT): _S.OFFLINE,
    (_S.ONLINE, _T.DECOMMISSION): _S.DECOMMISSIONED,
    (_S.OFFLINE, _T.CONNECT): _S.ONLINE,
    (_S.OFFLINE, _T.DISCONNECT): _S.OFFLINE,
    (_S.OFFLINE, _T.DECOMMISSION): _S.DECOMMISSIONED,
}


def transition(device_id: str, state: DeviceState, trigger: LifecycleTrigger) -> DeviceState:
    """The state after ``trigger`` (possibly unchanged).

    Raises:
        LifecycleError: the trigger is not allowed in ``state`` (anything after decommission).
    """
    try:
        return _TRANSITIONS[(state, trigger)]
    except KeyError:
        raise LifecycleError(device_id, state.value, trigger.value) from None
