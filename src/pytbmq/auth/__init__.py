"""Authentication and authorization core (pure, sans-I/O).

Owns TBMQ's client-credentials model (`credentials`), topic authorization rules
(`rules`), X.509 client-certificate matching (`x509`) and the SCRAM server state machine
(`scram`). The broker's CONNECT handling, the credentials store and the CLI will call
these modules; nothing here performs I/O, reads a clock or uses asyncio.
"""
