"""Network profiles: what may be declared, and when a link counts as degraded."""

from __future__ import annotations

import pydantic
import pytest

from tiangong.network.profile import NetworkProfile


def test_five_g_profile_carries_slice_and_qos() -> None:
    profile = NetworkProfile(access="5g", slice="1-000001", five_qi=82, dnn="factory.ims")
    assert profile.model_dump() == {
        "access": "5g",
        "slice": "1-000001",
        "five_qi": 82,
        "dnn": "factory.ims",
    }


def test_slice_on_a_wired_device_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="5G access only"):
        NetworkProfile(access="wired", slice="1-000001")
    with pytest.raises(pydantic.ValidationError):
        NetworkProfile(access="5g", five_qi=0)
    with pytest.raises(pydantic.ValidationError):
        NetworkProfile(access="lora")  # type: ignore[arg-type]


def test_degraded_reasons_follow_access_type() -> None:
    five_g = NetworkProfile(access="5g")
    fieldbus = NetworkProfile(access="fieldbus")
    assert five_g.degraded(None, None) == []
    assert five_g.degraded(12.0, 0.0) == []
    assert five_g.degraded(80.0, 0.0) == ["round trip 80 ms > 50 ms"]
    assert fieldbus.degraded(80.0, 0.0) == []
    assert five_g.degraded(10.0, 5.0) == ["loss 5.0 % > 1 %"]
