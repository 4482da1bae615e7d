"""Authentication and authorization: TBMQ's providers, credentials and topic rules.

No I/O and no asyncio (only `service` reads the clock): the client-credentials model
(`credentials`), topic authorization rules (`rules`), X.509 client-certificate matching
(`x509`), the SCRAM server state machine (`scram`), blocked and unauthorized client
records (`blocked`, `unauthorized`) and the providers chain for one CONNECT (`service`).
The exception is `tooling`, the `pytbmq credentials|blocked|unauthorized` command line,
which reads files and the security database. The link and pytbmq.security call the rest.
"""
