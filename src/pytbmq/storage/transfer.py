"""`pytbmq data export` / `pytbmq data import`: the stored state as JSON lines.

For backups and for moving a broker. One JSON object per line:

* first a header: ``{"kind": "pytbmq-export", "format": 1, "schema": N, ...}``;
* ``{"kind": "message", "id": ..., ...}`` for each stored message, before the first
  session that refers to it;
* ``{"kind": "session", "client_id": ..., "subscriptions": [...], "outgoing": [...],
  "inflight_in": [...], "will": {...} | null, ...}`` for each persistent session;
* ``{"kind": "retained", "topic": ..., ...}`` for each retained message.

Payloads, correlation data and MQTT 5 property blocks are base64; times are wall-clock
seconds. Import writes into an empty store only (``--replace`` empties it first). Both
commands take the data directory's lock, so they refuse to run next to a live broker.
Called by pytbmq.cli only; uses the synchronous SqliteDb.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from pytbmq import __version__
from pytbmq.changes import (
    StoredOutgoing,
    StoredSession,
    StoredState,
    StoredSubscription,
)
from pytbmq.config import Settings
from pytbmq.errors import MalformedPacket, ProtocolViolation, StorageError
from pytbmq.message import Message
from pytbmq.protocol.codec import decode_properties, encode_properties
from pytbmq.protocol.packets import EMPTY_PROPERTIES, PacketType, Properties, Will
from pytbmq.storage import DATABASE_FILE
from pytbmq.storage.sqlite import SCHEMA_VERSION, SqliteDb

FORMAT = 1


def run_data_command(settings: Settings, args: argparse.Namespace) -> int:
    """Entry point of `pytbmq data ACTION`; StorageError propagates to the CLI."""
    if settings.pytbmq_storage != "sqlite":
        raise StorageError("PYTBMQ_STORAGE=memory keeps nothing to export or import")
    path = settings.pytbmq_data_dir / DATABASE_FILE
    if args.data_command == "export":
        db = SqliteDb(path, settings.pytbmq_storage_sync)
        db.open(create=False)
        try:
            state = db.load()
        finally:
            db.close()
        with _output(args.output) as out:
            counts = export_state(state, out)
        print(
            f"pytbmq: exported {counts[0]} session(s), {counts[1]} message(s) and "
            f"{counts[2]} retained message(s) from {path}",
            file=sys.stderr,
        )
        return 0
    with _input(args.input) as inp:
        state = import_state(inp, args.input)
    try:
        settings.pytbmq_data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {settings.pytbmq_data_dir}: {exc}") from exc
    db = SqliteDb(path, settings.pytbmq_storage_sync)
    db.open(create=True)
    try:
        if not db.is_empty():
            if not args.replace:
                raise StorageError(
                    f"the database {path} is not empty; import into an empty data directory "
                    "or pass --replace to discard what it holds"
                )
            db.clear()
        db.write_state(state)
    finally:
        db.close()
    sessions, messages, retained = state.counts()
    print(
        f"pytbmq: imported {sessions} session(s), {messages} queued or in-flight message(s) "
        f"and {retained} retained message(s) into {path}",
        file=sys.stderr,
    )
    return 0


@contextlib.contextmanager
def _output(name: str) -> Iterator[TextIO]:
    if name == "-":
        yield sys.stdout
        return
    try:
        with open(name, "w", encoding="utf-8") as handle:
            yield handle
    except OSError as exc:
        raise StorageError(f"cannot write {name}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _input(name: str) -> Iterator[TextIO]:
    if name == "-":
        yield sys.stdin
        return
    try:
        with open(name, encoding="utf-8") as handle:
            yield handle
    except OSError as exc:
        raise StorageError(f"cannot read {name}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------- export


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _props_b64(props: Properties) -> str | None:
    return None if props is EMPTY_PROPERTIES else _b64(encode_properties(props))


def _message_fields(msg: Message) -> dict[str, Any]:
    return {
        "topic": msg.topic,
        "payload": _b64(msg.payload),
        "qos": msg.qos,
        "retain": msg.retain,
        "properties": _props_b64(msg.properties),
        "expires_at": msg.expires_at,
        "sender": msg.sender,
    }


def export_state(state: StoredState, out: TextIO) -> tuple[int, int, int]:
    """Write `state` as JSON lines; returns (sessions, messages, retained) written."""

    def line(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj, ensure_ascii=False) + "\n")

    line(
        {
            "kind": "pytbmq-export",
            "format": FORMAT,
            "schema": SCHEMA_VERSION,
            "pytbmq": __version__,
            "exported_at": time.time(),
        }
    )
    written: set[int] = set()
    for session in state.sessions:
        for out_msg in session.outgoing:
            msg = out_msg.message
            if msg.store_id not in written:
                written.add(msg.store_id)
                line({"kind": "message", "id": msg.store_id, **_message_fields(msg)})
        will = session.will
        line(
            {
                "kind": "session",
                "client_id": session.client_id,
                "sid": session.sid,
                "protocol_version": session.protocol_version,
                "expiry_interval": session.expiry_interval,
                "client_type": session.client_type,
                "disconnected_at": session.disconnected_at,
                "will": None
                if will is None
                else {
                    "topic": will.topic,
                    "payload": _b64(will.payload),
                    "qos": will.qos,
                    "retain": will.retain,
                    "properties": _props_b64(will.properties),
                },
                "will_delay": session.will_delay,
                "will_due": session.will_due,
                "subscriptions": [
                    {
                        "topic_filter": s.topic_filter,
                        "qos": s.qos,
                        "no_local": s.no_local,
                        "retain_as_published": s.retain_as_published,
                        "retain_handling": s.retain_handling,
                        "sub_id": s.sub_id,
                    }
                    for s in session.subscriptions
                ],
                "outgoing": [
                    {
                        "row": o.row,
                        "message": o.message.store_id,
                        "qos": o.qos,
                        "retain": o.retain,
                        "sub_ids": list(o.sub_ids),
                        "shared": list(o.shared) if o.shared is not None else None,
                        "packet_id": o.packet_id,
                        "state": o.state,
                        "queued_at": o.queued_at,
                    }
                    for o in session.outgoing
                ],
                "inflight_in": sorted(session.inflight_in),
            }
        )
    for msg in state.retained:
        line({"kind": "retained", **_message_fields(msg)})
    return len(state.sessions), len(written), len(state.retained)


# --------------------------------------------------------------------------- import


class _Bad(Exception):
    pass


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise _Bad("expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise _Bad(f"invalid base64: {exc}") from exc


def _props_from(value: Any, will: bool = False) -> Properties:
    if value is None:
        return EMPTY_PROPERTIES
    data = _unb64(value)
    ptype = PacketType.CONNECT if will else PacketType.PUBLISH
    try:
        props, end = decode_properties(data, 0, len(data), ptype, will=will)
    except (MalformedPacket, ProtocolViolation) as exc:
        raise _Bad(f"invalid properties: {exc}") from exc
    if end != len(data):
        raise _Bad("invalid properties")
    return props


def _message_from(obj: dict[str, Any], retain: bool | None = None) -> Message:
    return Message(
        str(obj["topic"]),
        _unb64(obj["payload"]),
        int(obj["qos"]),
        bool(obj["retain"]) if retain is None else retain,
        _props_from(obj.get("properties")),
        None if obj.get("expires_at") is None else float(obj["expires_at"]),
        None if obj.get("sender") is None else str(obj["sender"]),
    )


def import_state(inp: TextIO, name: str) -> StoredState:
    """Parse an export; StorageError names the line of the first problem."""
    state = StoredState()
    messages: dict[int, Message] = {}
    header = False
    for number, text in enumerate(inp, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict):
                raise _Bad("not a JSON object")
            kind = obj.get("kind")
            if not header:
                if kind != "pytbmq-export":
                    raise _Bad("not a pytbmq export (the first line is not its header)")
                if obj.get("format") != FORMAT:
                    raise _Bad(f"export format {obj.get('format')!r}; this pytbmq reads {FORMAT}")
                header = True
            elif kind == "message":
                msg = _message_from(obj)
                msg.store_id = int(obj["id"])
                messages[msg.store_id] = msg
            elif kind == "session":
                state.sessions.append(_session_from(obj, messages))
            elif kind == "retained":
                state.retained.append(_message_from(obj, retain=True))
            else:
                raise _Bad(f"unknown kind {kind!r}")
        except (_Bad, ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"{name}, line {number}: {exc}") from exc
    if not header:
        raise StorageError(f"{name} is empty: not a pytbmq export")
    return state


def _session_from(obj: dict[str, Any], messages: dict[int, Message]) -> StoredSession:
    will_obj = obj.get("will")
    will = None
    if will_obj is not None:
        will = Will(
            str(will_obj["topic"]),
            _unb64(will_obj["payload"]),
            int(will_obj["qos"]),
            bool(will_obj["retain"]),
            _props_from(will_obj.get("properties"), will=True),
        )
    session = StoredSession(
        str(obj["client_id"]),
        int(obj["sid"]),
        int(obj["protocol_version"]),
        int(obj["expiry_interval"]),
        str(obj["client_type"]),
        None if obj.get("disconnected_at") is None else float(obj["disconnected_at"]),
        will,
        int(obj.get("will_delay", 0)),
        None if obj.get("will_due") is None else float(obj["will_due"]),
    )
    for s in obj.get("subscriptions", []):
        session.subscriptions.append(
            StoredSubscription(
                str(s["topic_filter"]),
                int(s["qos"]),
                bool(s["no_local"]),
                bool(s["retain_as_published"]),
                int(s["retain_handling"]),
                None if s.get("sub_id") is None else int(s["sub_id"]),
            )
        )
    for o in obj.get("outgoing", []):
        mid = int(o["message"])
        if mid not in messages:
            raise _Bad(f"message {mid} is used before it is defined")
        shared = o.get("shared")
        session.outgoing.append(
            StoredOutgoing(
                int(o["row"]),
                messages[mid],
                int(o["qos"]),
                bool(o["retain"]),
                tuple(int(i) for i in o.get("sub_ids", [])),
                (str(shared[0]), str(shared[1])) if shared is not None else None,
                None if o.get("packet_id") is None else int(o["packet_id"]),
                int(o["state"]),
                float(o["queued_at"]),
            )
        )
    session.inflight_in = [int(pid) for pid in obj.get("inflight_in", [])]
    return session


__all__ = ["export_state", "import_state", "run_data_command"]
