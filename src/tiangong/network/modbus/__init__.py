"""Modbus: register maps and read planning (sans-I/O); the wire protocol is pymodbus's."""

from tiangong.network.modbus.registers import (
    ReadRequest,
    RegisterPoint,
    decode_value,
    encode_value,
    plan_reads,
)

__all__ = ["ReadRequest", "RegisterPoint", "decode_value", "encode_value", "plan_reads"]
