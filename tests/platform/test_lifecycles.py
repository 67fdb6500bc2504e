"""The device and alarm lifecycle state machines."""

from __future__ import annotations

import pytest

from tiangong.platform.alarms.lifecycle import AlarmState, AlarmTrigger, alarm_transition
from tiangong.platform.errors import ConflictError, LifecycleError
from tiangong.platform.lifecycle import LifecycleTrigger, transition
from tiangong.platform.model import DeviceState

S, T = DeviceState, LifecycleTrigger


@pytest.mark.parametrize(
    ("state", "trigger", "after"),
    [
        (S.PROVISIONED, T.CONNECT, S.ONLINE),
        (S.PROVISIONED, T.DISCONNECT, S.PROVISIONED),
        (S.ONLINE, T.DISCONNECT, S.OFFLINE),
        (S.OFFLINE, T.CONNECT, S.ONLINE),
        (S.ONLINE, T.CONNECT, S.ONLINE),
        (S.OFFLINE, T.DECOMMISSION, S.DECOMMISSIONED),
        (S.PROVISIONED, T.DECOMMISSION, S.DECOMMISSIONED),
    ],
)
def test_device_transitions(
    state: DeviceState, trigger: LifecycleTrigger, after: DeviceState
) -> None:
    assert transition("d", state, trigger) is after


@pytest.mark.parametrize("trigger", list(LifecycleTrigger))
def test_decommissioned_is_final(trigger: LifecycleTrigger) -> None:
    with pytest.raises(LifecycleError) as info:
        transition("d", S.DECOMMISSIONED, trigger)
    assert info.value.device_id == "d"


def test_alarm_lifecycle() -> None:
    assert alarm_transition(1, AlarmState.ACTIVE, AlarmTrigger.RAISE) is AlarmState.ACTIVE
    assert (
        alarm_transition(1, AlarmState.ACTIVE, AlarmTrigger.ACKNOWLEDGE) is AlarmState.ACKNOWLEDGED
    )
    assert (
        alarm_transition(1, AlarmState.ACKNOWLEDGED, AlarmTrigger.RAISE) is AlarmState.ACKNOWLEDGED
    )
    assert alarm_transition(1, AlarmState.ACKNOWLEDGED, AlarmTrigger.CLEAR) is AlarmState.CLEARED
    assert alarm_transition(1, AlarmState.ACTIVE, AlarmTrigger.CLEAR) is AlarmState.CLEARED
    for trigger in AlarmTrigger:
        with pytest.raises(ConflictError):
            alarm_transition(1, AlarmState.CLEARED, trigger)
