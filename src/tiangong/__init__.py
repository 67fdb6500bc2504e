"""Tiangong: an industrial internet platform.

The package is laid out by functional system (see MISSION.md):

- ``network``: device access (MQTT codec and client, topic scheme, payloads, embedded broker)
- ``platform``: device registry and thing models, ingest, time-series store, rules and alarms,
  connectivity KPIs, REST API and dashboard
- ``security``: secrets, credentials and tokens
- ``sim``: the simulated factory
"""

__version__ = "0.1.0"
