"""OEE and production monitoring (ISO 22400-2) from machine states and part counters.

- :mod:`.calendar` is the shift calendar of a site: shifts and production days, split exactly
  at their boundaries in the site's time zone.
- :mod:`.core` is the sans-I/O computation: state and counter samples in, ISO 22400-2 times,
  quantities, availability, effectiveness, quality, OEE and the downtime Pareto out.
- :mod:`.config` says which states count as what, and each device's planned run time per unit.
- :mod:`.service` reads the time-series store and the device events for the platform.

See the ``## OEE`` section of ``docs/apps.md``.
"""
