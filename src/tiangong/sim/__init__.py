"""The simulated factory: machines with plausible physics, publishing over MQTT.

- ``machines``: the machine kinds and their signals (no I/O)
- ``thing_models``: their thing models and the demo's alarm rules
- ``factory``: provisioning and the MQTT devices
"""
