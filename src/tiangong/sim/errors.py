"""Exceptions of the simulated factory.

Tree::

    SimError
    ├── MachineInputError      a write or command a machine does not take (``device``, ``name``)
    └── PortUnavailableError   a simulated server cannot listen (``protocol``, ``host``, ``port``)
"""

from __future__ import annotations

__all__ = ["MachineInputError", "PortUnavailableError", "SimError"]


class SimError(Exception):
    """Root of all simulator errors."""


class MachineInputError(SimError):
    """A write or command the machine does not take.

    Attributes:
        device: the machine's name.
        name: the property or command.
        problem: why it was refused.
    """

    def __init__(self, device: str, name: str, problem: str) -> None:
        super().__init__(f"{device}.{name}: {problem}")
        self.device = device
        self.name = name
        self.problem = problem


class PortUnavailableError(SimError):
    """A simulated server cannot listen on its address.

    Attributes:
        protocol: ``modbus`` or ``opcua``.
        host: the address asked for.
        port: the port asked for.
        reason: the operating system's explanation.
    """

    def __init__(self, protocol: str, host: str, port: int, reason: str) -> None:
        option = "--modbus-port" if protocol == "modbus" else "--opcua-port"
        super().__init__(
            f"cannot serve {protocol} on {host}:{port}: {reason}; choose another port ({option})"
        )
        self.protocol = protocol
        self.host = host
        self.port = port
        self.reason = reason
