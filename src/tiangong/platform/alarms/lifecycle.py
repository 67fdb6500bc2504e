r"""Alarm lifecycle state machine.

Theory of operation
-------------------
A rule that starts holding raises an alarm, ``active``. An operator acknowledges it
(``acknowledged``: someone is on it). It is ``cleared`` when the rule stops holding, or by hand;
cleared is final, and the next time the rule holds a new alarm is raised. While an alarm is
open (active or acknowledged) a repeated raise for the same device and rule does not open a
second alarm: it increments ``count`` (de-duplication).

::

    active --acknowledge--> acknowledged
      |  \                    |
      |   +--raise (count+1)   +--raise (count+1)
      +------clear-------------+--clear--> cleared (final)
"""

from __future__ import annotations

import enum
from typing import Final

from tiangong.platform.errors import ConflictError

__all__ = ["AlarmState", "AlarmTrigger", "alarm_transition"]


class AlarmState(enum.StrEnum):
    """Where an alarm is in its lifecycle."""

    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"

    @property
    def is_open(self) -> bool:
        """Active or acknowledged."""
        return self is not AlarmState.CLEARED


class AlarmTrigger(enum.StrEnum):
    """What can happen to an alarm."""

    RAISE = "raise"
    ACKNOWLEDGE = "acknowledge"
    CLEAR = "clear"


_A = AlarmState
_T = AlarmTrigger

_TRANSITIONS: Final[dict[tuple[AlarmState, AlarmTrigger], AlarmState]] = {
    (_A.ACTIVE, _T.RAISE): _A.ACTIVE,
    (_A.ACTIVE, _T.ACKNOWLEDGE): _A.ACKNOWLEDGED,
    (_A.ACTIVE, _T.CLEAR): _A.CLEARED,
    (_A.ACKNOWLEDGED, _T.RAISE): _A.ACKNOWLEDGED,
    (_A.ACKNOWLEDGED, _T.ACKNOWLEDGE): _A.ACKNOWLEDGED,
    (_A.ACKNOWLEDGED, _T.CLEAR): _A.CLEARED,
}


def alarm_transition(alarm_id: int, state: AlarmState, trigger: AlarmTrigger) -> AlarmState:
    """The state after ``trigger``.

    Raises:
        ConflictError: the alarm is cleared (final).
    """
    try:
        return _TRANSITIONS[(state, trigger)]
    except KeyError:
        raise ConflictError(
            f"alarm {alarm_id} is {state.value}; it cannot {trigger.value}"
        ) from None
