"""Platform system: the hub that devices report to and people and programs read from.

- ``model``: tenants, sites, devices and their thing models (the one definition of each)
- ``lifecycle``: the device lifecycle state machine
- ``database``: the metadata database (SQLite embedded, PostgreSQL deployed)
- ``registry``: devices, thing models, credentials and the in-memory device directory
- ``ingest``: from an MQTT message to stored, validated points (and dead letters)
- ``tsdb``: the time-series store interface and its DuckDB and PostgreSQL backends
- ``alarms``: threshold and rate-of-change rules, alarms and their lifecycle
- ``kpi``: connectivity KPIs (networking rate, data collection coverage)
- ``api``: the REST API; ``dashboard``: the web dashboard it serves
- ``service``: the ``Platform`` that wires all of the above
"""
