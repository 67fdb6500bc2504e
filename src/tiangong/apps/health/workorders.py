"""The maintenance work order lifecycle.

Theory of operation
-------------------
A work order is opened by the health service when an estimate stays beyond its policy's
threshold (cause ``health_low`` or ``rul_low``), or by a person (any other cause, ``manual`` by
default). Its life::

    open ──acknowledge──> acknowledged ──schedule──> scheduled ──start──> in_progress
     │                         │                                              │
     │                         └──────────── start ──────────────────────────>│
     └──────────── schedule ──────────────────────> scheduled             complete
                                                                              v
    any state but done and cancelled ──cancel──> cancelled                   done

Each step records who and when. ``done`` and ``cancelled`` are final. Only a person closes an
order: a ``repaired`` event from the device is recorded on its open orders as a suggestion to
close them (the repair the device saw may not be the one the order asked for), and resets the
device's health baseline.

At most one order per device and cause is active (not done, not cancelled): the store keeps an
``active_key`` that is unique and is cleared when the order is closed.
"""

from __future__ import annotations

import enum
from typing import Final

from tiangong.apps.health.errors import WorkOrderConflictError

__all__ = [
    "AUTOMATIC_CAUSES",
    "FINAL_STATES",
    "TRANSITIONS",
    "WorkOrderAction",
    "WorkOrderState",
    "next_state",
]


class WorkOrderState(enum.StrEnum):
    """Where a work order is in its life."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANCELLED = "cancelled"


class WorkOrderAction(enum.StrEnum):
    """What a person does to a work order."""

    ACKNOWLEDGE = "acknowledge"
    SCHEDULE = "schedule"
    START = "start"
    COMPLETE = "complete"
    CANCEL = "cancel"


S, A = WorkOrderState, WorkOrderAction

#: (state, action) -> next state: the whole lifecycle.
TRANSITIONS: Final[dict[tuple[WorkOrderState, WorkOrderAction], WorkOrderState]] = {
    (S.OPEN, A.ACKNOWLEDGE): S.ACKNOWLEDGED,
    (S.OPEN, A.SCHEDULE): S.SCHEDULED,
    (S.ACKNOWLEDGED, A.SCHEDULE): S.SCHEDULED,
    (S.ACKNOWLEDGED, A.START): S.IN_PROGRESS,
    (S.SCHEDULED, A.START): S.IN_PROGRESS,
    (S.IN_PROGRESS, A.COMPLETE): S.DONE,
    (S.OPEN, A.CANCEL): S.CANCELLED,
    (S.ACKNOWLEDGED, A.CANCEL): S.CANCELLED,
    (S.SCHEDULED, A.CANCEL): S.CANCELLED,
    (S.IN_PROGRESS, A.CANCEL): S.CANCELLED,
}

FINAL_STATES: Final = frozenset({S.DONE, S.CANCELLED})

#: Causes the health service opens orders for (a person may use any other).
AUTOMATIC_CAUSES: Final = frozenset({"health_low", "rul_low"})


def next_state(
    state: WorkOrderState, action: WorkOrderAction, *, order_id: int | None = None
) -> WorkOrderState:
    """The state after ``action``.

    Raises:
        WorkOrderConflictError: the lifecycle does not allow the action in this state.
    """
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        raise WorkOrderConflictError(
            f"a work order that is {state.value} cannot {action.value}", order_id=order_id
        ) from None
