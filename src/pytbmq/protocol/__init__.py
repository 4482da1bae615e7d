"""MQTT wire protocol: packet values, codec and per-connection protocol state (sans-I/O)."""
