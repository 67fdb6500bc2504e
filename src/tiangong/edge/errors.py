"""Exceptions of the edge system.

Tree::

    EdgeError
    ├── EdgeConfigError        a configuration problem (``source``, ``line``)
    ├── DeviceError            a southbound device failed (``device``)
    │   ├── DeviceUnreachableError   cannot connect or timed out (retried)
    │   └── DeviceRefusedError       answered with an error (a Modbus exception code...)
    ├── CommandError           a command could not be executed (``command``, ``reason``)
    └── BufferError            the store-and-forward buffer failed
"""

from __future__ import annotations

__all__ = [
    "BufferError",
    "CommandError",
    "DeviceError",
    "DeviceRefusedError",
    "DeviceSilentError",
    "DeviceUnreachableError",
    "EdgeConfigError",
    "EdgeError",
]


class EdgeError(Exception):
    """Root of all edge errors."""


class EdgeConfigError(EdgeError):
    """A configuration problem.

    Attributes:
        source: the file.
        line: the 1-based line, when known.
        problem: what is wrong.
    """

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.line = line
        self.problem = problem


class DeviceError(EdgeError):
    """A southbound device failed.

    Attributes:
        device: the device id.
    """

    def __init__(self, device: str, message: str) -> None:
        super().__init__(f"{device}: {message}")
        self.device = device


class DeviceUnreachableError(DeviceError):
    """The device cannot be reached (connection refused, timeout); the coordinator retries."""


class DeviceSilentError(DeviceUnreachableError):
    """A pushing device sent nothing for longer than its stale time; the connection is fine."""


class DeviceRefusedError(DeviceError):
    """The device answered with an error (e.g. a Modbus exception code)."""


class CommandError(EdgeError):
    """A command from the platform could not be executed.

    Attributes:
        command: the command id.
        reason: a stable reason code (``unknown_command``, ``not_writable``, ``device_error``...).
        detail: what went wrong, without the command and the reason (the answer carries those).
    """

    def __init__(self, command: str, reason: str, message: str) -> None:
        super().__init__(f"{command}: {reason}: {message}")
        self.command = command
        self.reason = reason
        self.detail = message


class BufferError(EdgeError):  # noqa: A001 - the edge package's own buffer error
    """The store-and-forward buffer failed (disk full, corrupt file)."""
