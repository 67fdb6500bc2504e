"""Network system: how devices reach the platform.

- ``mqtt``: a sans-I/O MQTT 3.1.1/5.0 codec and session, and the asyncio client built on them
- ``access``: the device access scheme (topics and JSON telemetry payloads)
- ``sparkplug``: Sparkplug B 3.0 as a sans-I/O core (payload codec, edge node and host sessions)
- ``broker``: the embedded MQTT broker used by the local demo
"""
