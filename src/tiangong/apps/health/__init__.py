"""Equipment health in the platform: health index, RUL, sensor anomalies, work orders.

- :mod:`.profiles` maps thing models to a health method (a trained RUL model, or the machine's own
  baseline) and holds the maintenance policies.
- :mod:`.condition` computes a wearing machine's health index from its own baseline, and RUL by
  trend extrapolation (pure).
- :mod:`.anomaly` detects spikes, stuck sensors and drift in any numeric series (pure, streaming).
- :mod:`.workorders` is the work order lifecycle (state machine).
- :mod:`.service` is ``HealthService``: fed by the ingest pipeline, it keeps estimates, anomalies
  and work orders in the platform's database.

The RUL model itself is :mod:`tiangong.apps.phm` (``docs/phm.md``). See ``docs/apps.md``.
"""
