"""How a device is connected: its network profile (5G, Wi-Fi, wired, fieldbus behind a gateway).

The seeds' 5G fully-connected factory asks which machines are on which network and how good
their links are. A profile says how a device is attached; for 5G, the network slice (S-NSSAI),
the QoS class (5QI) and the data network name (DNN). Link quality itself is measured, not
declared: the edge gateway reports ``link.*`` metrics per device (see ``platform.model``).
"""

from __future__ import annotations

from typing import Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DEGRADED_LOSS_PCT", "DEGRADED_RTT_MS", "NetworkProfile"]

#: A link losing more than this share of attempts counts as degraded.
DEGRADED_LOSS_PCT: Final = 1.0
#: Round trips above this (per access type) count as degraded. 5G URLLC slices promise a few
#: milliseconds; Wi-Fi and wired plant networks tens; fieldbus behind a gateway is slowest.
DEGRADED_RTT_MS: Final[dict[str, float]] = {
    "5g": 50.0,
    "wifi": 100.0,
    "wired": 50.0,
    "fieldbus": 250.0,
}


class NetworkProfile(BaseModel):
    """How a device is connected.

    Attributes:
        access: ``5g``, ``wifi``, ``wired`` or ``fieldbus`` (behind a gateway).
        slice: 5G network slice (S-NSSAI, e.g. ``1-000001``).
        five_qi: 5G QoS identifier (5QI).
        dnn: 5G data network name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    access: Literal["5g", "wifi", "wired", "fieldbus"] = "wired"
    slice: str | None = Field(default=None, max_length=64)
    five_qi: int | None = Field(default=None, ge=1, le=255)
    dnn: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _five_g_only(self) -> Self:
        if self.access != "5g" and (self.slice or self.five_qi or self.dnn):
            raise ValueError("slice, five_qi and dnn describe 5G access only (access = '5g')")
        return self

    def degraded(self, rtt_ms: float | None, loss_pct: float | None) -> list[str]:
        """Why a link with these figures is degraded (empty: it is fine)."""
        reasons = []
        limit = DEGRADED_RTT_MS[self.access]
        if rtt_ms is not None and rtt_ms > limit:
            reasons.append(f"round trip {rtt_ms:.0f} ms > {limit:.0f} ms")
        if loss_pct is not None and loss_pct > DEGRADED_LOSS_PCT:
            reasons.append(f"loss {loss_pct:.1f} % > {DEGRADED_LOSS_PCT:.0f} %")
        return reasons
