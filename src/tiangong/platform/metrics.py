"""Prometheus metrics of a platform instance.

Each ``Platform`` owns its own ``CollectorRegistry`` (several may run in one test process);
``GET /metrics`` renders it. Names follow Prometheus conventions: ``tiangong_<area>_<what>``,
counters end in ``_total``, durations are in seconds.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["PlatformMetrics"]


class PlatformMetrics:
    """All metrics of one platform instance."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            "tiangong_ingest_messages",
            "MQTT messages handled by ingest, by channel and outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.points = Counter(
            "tiangong_ingest_points",
            "Data points handled by ingest, by outcome (accepted, rejected)",
            ["outcome"],
            registry=r,
        )
        self.rejections = Counter(
            "tiangong_ingest_rejected_values",
            "Values refused by validation, by reason",
            ["reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "tiangong_ingest_dead_letters",
            "Dead letters written, by reason",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "tiangong_ingest_duplicate_messages",
            "Redelivered messages recognised by their digest and not stored twice",
            registry=r,
        )
        self.store_write_seconds = Histogram(
            "tiangong_store_write_seconds",
            "Time to write one group of points durably",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.store_failures = Counter(
            "tiangong_store_write_failures",
            "Group writes refused by the store (retried until they succeed)",
            registry=r,
        )
        self.group_points = Histogram(
            "tiangong_ingest_group_points",
            "Points per group commit",
            buckets=(10, 100, 1_000, 10_000, 100_000, 500_000, 1_000_000),
            registry=r,
        )
        self.pending_messages = Gauge(
            "tiangong_ingest_pending_messages",
            "Messages received and not yet acknowledged (held in memory)",
            registry=r,
        )
        self.mqtt_connects = Counter(
            "tiangong_mqtt_connects", "Successful connections to the broker", registry=r
        )
        self.mqtt_read_pauses = Counter(
            "tiangong_mqtt_read_pauses",
            "Times ingest stopped reading from the broker because it was full (backpressure)",
            registry=r,
        )
        self.devices = Gauge(
            "tiangong_devices", "Registered devices by lifecycle state", ["state"], registry=r
        )
        self.alarms_active = Gauge(
            "tiangong_alarms_open", "Alarms not yet cleared, by severity", ["severity"], registry=r
        )
        self.alarms_raised = Counter(
            "tiangong_alarms_raised", "Alarms raised, by severity", ["severity"], registry=r
        )
        self.broker_auth_failures = Counter(
            "tiangong_broker_auth_failures",
            "Connections refused by the embedded broker (bad or revoked credentials)",
            registry=r,
        )
        self.api_refused = Counter(
            "tiangong_api_refused",
            "API requests refused by a limit, by reason (rate_address, rate_credential,"
            " body_too_large, url_too_long, headers_too_large)",
            ["reason"],
            registry=r,
        )
        self.ingest_rate_limited = Counter(
            "tiangong_ingest_rate_limited_messages",
            "Device messages dead-lettered because the device exceeded its rate",
            registry=r,
        )
        self.broker_refusals = Counter(
            "tiangong_broker_refusals",
            "Connections, publishes and subscriptions refused by the embedded broker, by kind"
            " (credentials, decommissioned, certificate_*, topic_publish, topic_subscribe)",
            ["kind"],
            registry=r,
        )
        self.mosquitto_files = Counter(
            "tiangong_mosquitto_files",
            "An external Mosquitto's files kept by the platform: written, reloaded,"
            " reload_failed (TIANGONG_MOSQUITTO_FILES)",
            ["event"],
            registry=r,
        )
        self.broker_acl_denials = Counter(
            "tiangong_broker_acl_denials",
            "Publishes and subscriptions refused by the embedded broker's topic authorization",
            ["action"],
            registry=r,
        )
