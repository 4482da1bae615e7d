"""Unauthorized clients: the record TBMQ keeps of each refused connection attempt.

Owns the `UnauthorizedClient` model and its JSON document (TBMQ's field names `clientId`,
`ipAddress`, `ts`, `username`, `passwordProvided`, `tlsUsed`, `reason`). pytbmq.security
creates records when authentication fails, pytbmq.storage.security stores them (one per
client id and IP address, the newest attempt wins) and `pytbmq unauthorized` lists and
clears them. Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class UnauthorizedClient:
    """One refused connection attempt; `client_id` is "" when not known (failed TLS)."""

    client_id: str
    ip_address: str
    ts: int  # ms since the epoch
    username: str | None
    password_provided: bool
    tls_used: bool
    reason: str

    def to_document(self) -> dict[str, Any]:
        return {
            "clientId": self.client_id,
            "ipAddress": self.ip_address,
            "ts": self.ts,
            "username": self.username,
            "passwordProvided": self.password_provided,
            "tlsUsed": self.tls_used,
            "reason": self.reason,
        }

    @classmethod
    def from_document(cls, data: Mapping[str, Any] | str) -> UnauthorizedClient:
        """Parse `to_document`'s shape (dict or JSON text); ValueError names the field."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise ValueError(f"unauthorized client: not valid JSON: {exc}") from None
        if not isinstance(data, Mapping):
            raise ValueError("unauthorized client: must be a JSON object")
        client_id = data.get("clientId")
        if client_id is None:
            client_id = ""
        if not isinstance(client_id, str):
            raise ValueError("clientId: must be a string")
        ip_address = data.get("ipAddress")
        if not isinstance(ip_address, str) or not ip_address:
            raise ValueError("ipAddress: required non-empty string")
        ts = data.get("ts")
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
            raise ValueError("ts: required non-negative integer (ms since epoch)")
        username = data.get("username")
        if username is not None and not isinstance(username, str):
            raise ValueError("username: must be a string")
        flags: list[bool] = []
        for field in ("passwordProvided", "tlsUsed"):
            value = data.get(field, False)
            if not isinstance(value, bool):
                raise ValueError(f"{field}: must be a boolean")
            flags.append(value)
        reason = data.get("reason")
        if reason is None:
            reason = ""
        if not isinstance(reason, str):
            raise ValueError("reason: must be a string")
        return cls(client_id, ip_address, ts, username, flags[0], flags[1], reason)
