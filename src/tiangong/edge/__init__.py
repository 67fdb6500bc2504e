"""Edge system: the gateway between plant-floor machines and the platform.

- ``config``: the TOML configuration (devices, data points, uplink, buffer, local rules)
"""
