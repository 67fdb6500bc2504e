"""The Handle protocol core, sans I/O: values, messages, the binary codec, REST JSON formats."""
