"""pytbmq: an MQTT 3.1/3.1.1/5.0 broker configured like ThingsBoard TBMQ."""

__version__ = "0.1.0"
