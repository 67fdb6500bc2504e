"""Exceptions of the equipment health app.

Tree::

    HealthError
    ├── WorkOrderNotFoundError   no such work order visible to the caller (also a platform
    │                            ``NotFoundError``: the API answers 404)
    ├── WorkOrderConflictError   a transition the lifecycle does not allow, or a second active
    │                            order for the same device and cause (also a platform
    │                            ``ConflictError``: 409)
    └── HealthConfigError        a profile or policy that cannot work (also a platform
                                 ``ValidationError``: 422)

The app's errors are also the platform's, so the REST API maps them like any other platform
error without knowing this package.
"""

from __future__ import annotations

from tiangong.platform.errors import ConflictError, NotFoundError, ValidationError

__all__ = ["HealthConfigError", "HealthError", "WorkOrderConflictError", "WorkOrderNotFoundError"]


class HealthError(Exception):
    """Root of all errors of the equipment health app."""


class WorkOrderNotFoundError(HealthError, NotFoundError):
    """No such work order (or not one of the caller's tenant)."""

    def __init__(self, order_id: int) -> None:
        NotFoundError.__init__(self, "work order", str(order_id))
        self.order_id = order_id


class WorkOrderConflictError(HealthError, ConflictError):
    """A lifecycle step that is not allowed, or a duplicate open order.

    Attributes:
        order_id: the order concerned (the open one, for a duplicate), if any.
    """

    def __init__(self, message: str, *, order_id: int | None = None) -> None:
        super().__init__(message)
        self.order_id = order_id


class HealthConfigError(HealthError, ValidationError):
    """A health profile, indicator or maintenance policy that cannot work."""
