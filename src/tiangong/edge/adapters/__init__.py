"""Southbound adapters, one contract for all (``base``): Modbus TCP, OPC UA, MQTT, HTTP push."""
