"""Energy management: consumption per device, line and site, cost by time-of-use band, anomalies.

- :mod:`.tariff` is the time-of-use tariff (峰谷平电价): bands of the local day and prices.
- :mod:`.core` is the pure (sans-I/O) computation: meter readings in, robust consumption
  profiles out (resets, rollovers, gaps, duplicates, out-of-order and invalid readings handled
  and counted), split exactly at bucket and tariff band boundaries.
- :mod:`.anomalies` finds consumption far above a device's own baseline for the same hour type,
  and consumption while a machine is idle or stopped (pure).
- :mod:`.service` reads the platform's time-series store and registry and answers the API.

See the ``Energy`` section of ``docs/apps.md``.
"""
