"""The simulated factory: machines with plausible physics, publishing over MQTT.

- ``machines``: the machine kinds and their signals (no I/O)
- ``thing_models``: their thing models and the demo's alarm rules
- ``factory``: provisioning and the MQTT devices
"""

# The machine kinds first: the turbofan test cell (turbofan.py) builds on machines.Machine.
from tiangong.sim import machines as machines
