"""MQTT for Tiangong: a sans-I/O codec and session, and an asyncio client built on them."""

from tiangong.network.mqtt.client import ClientStats, InboundMessage, MqttClient
from tiangong.network.mqtt.codec import ProtocolVersion, Subscription, Will

__all__ = ["ClientStats", "InboundMessage", "MqttClient", "ProtocolVersion", "Subscription", "Will"]
