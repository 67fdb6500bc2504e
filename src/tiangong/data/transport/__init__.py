"""How reports travel between levels: NATS JetStream, or a local outbox with the same contract.

``ReportTransport`` is the interface the centers and the enterprise exporter use;
``JetStreamTransport`` is the scaled deployment (a nats-server per sub-center, a cluster at the
national center), ``OutboxTransport`` the embedded path with no server (``tiangong up``).
"""

from tiangong.data.transport.base import (
    Delivery,
    ReportTransport,
    destination_for,
    parse_destination,
)
from tiangong.data.transport.jetstream import JetStreamTransport, stream_name, subject_for
from tiangong.data.transport.outbox import OutboxTransport

__all__ = [
    "Delivery",
    "JetStreamTransport",
    "OutboxTransport",
    "ReportTransport",
    "destination_for",
    "parse_destination",
    "stream_name",
    "subject_for",
]
