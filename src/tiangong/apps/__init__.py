"""Industrial apps built on the platform's stored telemetry.

- ``phm``: remaining useful life models (C-MAPSS), the versioned model registry.
- ``health``: health index, RUL, sensor anomalies and maintenance work orders per device.
- ``oee``: OEE per ISO 22400-2 per machine, line, shift and day; downtime Pareto.
- ``energy``: consumption, time-of-use cost, energy per unit and abnormal consumption.
"""
