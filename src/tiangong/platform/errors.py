"""Exceptions of the platform system.

Tree::

    PlatformError
    ├── NotFoundError            a tenant, site, device, model, rule or alarm that does not exist
    ├── ConflictError            a name already taken, or a change the current state forbids
    │   └── LifecycleError       a device lifecycle transition that is not allowed
    ├── ValidationError          input that breaks a thing model or a rule definition
    ├── StoreError               the time-series store failed
    │   └── StoreUnavailableError  it refused writes or went away (retry later)
    └── ConfigurationError       settings that cannot work (e.g. a default secret outside the demo)
"""

from __future__ import annotations


class PlatformError(Exception):
    """Root of all platform errors."""


class NotFoundError(PlatformError):
    """The named object does not exist (or is not visible to the caller's tenant).

    Attributes:
        kind: what was looked for (``device``, ``site``...).
        key: the name looked for.
    """

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class ConflictError(PlatformError):
    """The request conflicts with what exists (a taken name, a forbidden state change)."""


class LifecycleError(ConflictError):
    """A device lifecycle transition that the state machine does not allow.

    Attributes:
        device_id: the device.
        state: its current state.
        trigger: what was attempted.
    """

    def __init__(self, device_id: str, state: str, trigger: str) -> None:
        super().__init__(f"device {device_id!r} cannot {trigger} while {state}")
        self.device_id = device_id
        self.state = state
        self.trigger = trigger


class ValidationError(PlatformError):
    """Input that breaks a thing model, a rule definition or another platform invariant."""


class StoreError(PlatformError):
    """The time-series store failed."""


class StoreUnavailableError(StoreError):
    """The store refused writes or is unreachable; the caller should retry later."""


class ConfigurationError(PlatformError):
    """Settings that cannot work."""
