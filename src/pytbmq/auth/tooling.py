"""`pytbmq credentials`, `pytbmq blocked` and `pytbmq unauthorized`: edit the security
database (PYTBMQ_DATA_DIR/security.db) from the command line, also while the broker runs
(it picks the changes up within a second).

`add_parsers` registers the three commands on the `pytbmq` argument parser and `run`
executes one; pytbmq.cli calls both. This module owns turning options and TBMQ JSON
documents into credentials and blocked-client entries (validated by
pytbmq.auth.credentials and pytbmq.auth.blocked), the tables and JSON it prints, and the
exit codes: 0 done, 2 bad input (one line `pytbmq: <message>` naming the option or
field), 1 the database cannot be used. Storage is pytbmq.storage.security.

Passwords are hashed before they are stored and never printed (`***`). Unlike the
broker's internals this module performs I/O: it reads files and standard input and
writes to the terminal.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from pytbmq.auth.blocked import BlockedClient, BlockedType, RegexMatchTarget, parse_blocked
from pytbmq.auth.credentials import (
    BasicCredentials,
    MqttClientCredentials,
    PubSubPatterns,
    ScramCredentials,
    X509Credentials,
    credentials_to_document,
    credentials_value_document,
    parse_credentials,
)
from pytbmq.auth.rules import compile_pattern
from pytbmq.errors import StorageError
from pytbmq.storage.security import SECURITY_DB_FILE, SecurityDb

COMMANDS = ("credentials", "blocked", "unauthorized")

_TARGETS = {
    "client_id": RegexMatchTarget.BY_CLIENT_ID,
    "username": RegexMatchTarget.BY_USERNAME,
    "ip": RegexMatchTarget.BY_IP_ADDRESS,
}
_JSON_HELP = "a file holding one TBMQ document or a JSON list of them; - reads standard input"
_RULES_NOTE = (
    "--pub and --sub take Java-style regexes matched against the whole topic (publish) or "
    "topic filter (subscribe) and may repeat; without any, the client may neither publish "
    "nor subscribe."
)


# --------------------------------------------------------------------------- parsers


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `credentials`, `blocked` and `unauthorized` on the `pytbmq` commands."""
    _credentials_parsers(sub)
    _blocked_parsers(sub)
    _unauthorized_parsers(sub)


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _client_type(text: str) -> str:
    value = text.upper()
    if value not in ("DEVICE", "APPLICATION"):
        raise argparse.ArgumentTypeError("must be DEVICE or APPLICATION")
    return value


def _common_credentials_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pub",
        metavar="REGEX",
        action="append",
        help="topic the client may publish to, as a regex (repeatable)",
    )
    p.add_argument(
        "--sub",
        metavar="REGEX",
        action="append",
        help="topic filter the client may subscribe to, as a regex (repeatable)",
    )
    p.add_argument(
        "--type",
        metavar="DEVICE|APPLICATION",
        type=_client_type,
        default="DEVICE",
        help="client type (default: DEVICE)",
    )
    p.add_argument("--replace", action="store_true", help="replace existing credentials")


def _password_options(p: argparse.ArgumentParser, required: bool) -> None:
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("--password", metavar="P", help="the password (stored hashed)")
    group.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )


def _credentials_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    creds = sub.add_parser(
        "credentials",
        help="add, list, show and remove MQTT client credentials",
        description="Manage the client credentials of the MQTT Basic, X.509 and SCRAM "
        "providers, stored in PYTBMQ_DATA_DIR/security.db. The broker applies changes "
        "while it runs.",
    )
    _config_option(creds)
    actions = creds.add_subparsers(dest="credentials_command", metavar="ACTION", required=True)

    add = actions.add_parser(
        "add",
        help="add TBMQ credentials documents (JSON)",
        description="Add credentials in TBMQ's JSON shape {name, clientType, "
        "credentialsType, credentialsValue}; clear passwords are hashed.",
    )
    add.add_argument("--json", metavar="FILE", required=True, help=_JSON_HELP)
    add.add_argument("--replace", action="store_true", help="replace existing credentials")

    basic = actions.add_parser(
        "add-basic",
        help="add MQTT Basic credentials (client id and/or username, optional password)",
        description="Add MQTT Basic credentials. Without a password any password (or none) "
        "is accepted. " + _RULES_NOTE,
    )
    basic.add_argument("--name", help="credentials name (default: the username or client id)")
    basic.add_argument("--client-id", metavar="ID", help="MQTT client id")
    basic.add_argument("--username", metavar="U", help="MQTT username")
    _password_options(basic, required=False)
    _common_credentials_options(basic)

    x509 = actions.add_parser(
        "add-x509",
        help="add X.509 credentials (certificate CN, exact or regex)",
        description="Add X.509 certificate credentials matched by the certificate CN. "
        + _RULES_NOTE,
    )
    x509.add_argument("--cn", metavar="PATTERN", required=True, help="certificate common name")
    x509.add_argument(
        "--regex", action="store_true", help="--cn is a regex (searched in the CN, TBMQ's find)"
    )
    x509.add_argument(
        "--key",
        metavar="REGEX",
        default=".*",
        help="authRulesMapping key: regex searched in the leaf CN that selects the rules "
        "(default: .*)",
    )
    x509.add_argument("--name", help="credentials name (default: the CN pattern)")
    _common_credentials_options(x509)

    scram = actions.add_parser(
        "add-scram",
        help="add SCRAM credentials (MQTT 5 enhanced authentication)",
        description="Add SCRAM-SHA-256/512 credentials; only the derived keys are stored. "
        + _RULES_NOTE,
    )
    scram.add_argument("--username", metavar="U", required=True, help="SCRAM username")
    _password_options(scram, required=True)
    scram.add_argument(
        "--algorithm",
        choices=("SHA_256", "SHA_512"),
        default="SHA_256",
        help="default: SHA_256",
    )
    scram.add_argument("--name", help="credentials name (default: the username)")
    _common_credentials_options(scram)

    ls = actions.add_parser("list", help="list the stored credentials")
    ls.add_argument("--json", action="store_true", help="TBMQ documents, without secrets")
    show = actions.add_parser("show", help="show one credential (secrets masked)")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true", help="TBMQ document, without secrets")
    rm = actions.add_parser("remove", help="remove one credential")
    rm.add_argument("name", metavar="NAME")


def _blocked_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    blocked = sub.add_parser(
        "blocked",
        help="block clients by client id, username, IP address or regex",
        description="Manage blocked clients: a blocked client is refused before "
        "authentication (CONNACK Banned). The broker applies changes while it runs.",
    )
    _config_option(blocked)
    actions = blocked.add_subparsers(dest="blocked_command", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add",
        help="block a client",
        description="Block a client. A --regex must match the whole client id, username "
        "or IP address (--target).",
    )
    what = add.add_mutually_exclusive_group(required=True)
    what.add_argument("--client-id", metavar="ID", help="block this client id")
    what.add_argument("--username", metavar="U", help="block this username")
    what.add_argument("--ip", metavar="ADDRESS", help="block this IP address")
    what.add_argument("--regex", metavar="PATTERN", help="block what matches (needs --target)")
    what.add_argument("--json", metavar="FILE", help=_JSON_HELP)
    add.add_argument(
        "--target",
        choices=tuple(_TARGETS),
        help="what --regex is matched against",
    )
    when = add.add_mutually_exclusive_group()
    when.add_argument(
        "--expires",
        metavar="DATETIME",
        help="ISO-8601 date and time the block ends (local time unless it has an offset)",
    )
    when.add_argument("--for", dest="for_seconds", metavar="SECONDS", help="block for SECONDS")
    add.add_argument("--description", metavar="TEXT", help="a note shown in the list")
    ls = actions.add_parser("list", help="list the blocked clients")
    ls.add_argument("--json", action="store_true", help="TBMQ documents")
    rm = actions.add_parser("remove", help="unblock (remove one entry by the key `list` shows)")
    rm.add_argument("key", metavar="KEY", help="e.g. CLIENT_ID|dev1 or REGEX|BY_USERNAME|bad.*")


def _unauthorized_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    unauth = sub.add_parser(
        "unauthorized",
        help="list or clear the record of refused connection attempts",
        description="Refused connection attempts, newest first (one per client id and IP "
        "address); a later successful connection removes them.",
    )
    _config_option(unauth)
    actions = unauth.add_subparsers(dest="unauthorized_command", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="list the records")
    ls.add_argument("--json", action="store_true", help="TBMQ documents")
    clear = actions.add_parser("clear", help="delete every record, or one client id's")
    clear.add_argument("client_id", metavar="CLIENT_ID", nargs="?")


# --------------------------------------------------------------------------- dispatch


def run(args: argparse.Namespace, data_dir: Path) -> int:
    """Run the command in ``args`` on ``data_dir``'s security database.

    0 on success; 2 with one line on stderr for bad input (ValueError); 1 when the
    database cannot be used (StorageError).
    """
    handlers: dict[tuple[str, str], Callable[[argparse.Namespace, Path], int]] = {
        ("credentials", "add"): _credentials_add,
        ("credentials", "add-basic"): _credentials_add_basic,
        ("credentials", "add-x509"): _credentials_add_x509,
        ("credentials", "add-scram"): _credentials_add_scram,
        ("credentials", "list"): _credentials_list,
        ("credentials", "show"): _credentials_show,
        ("credentials", "remove"): _credentials_remove,
        ("blocked", "add"): _blocked_add,
        ("blocked", "list"): _blocked_list,
        ("blocked", "remove"): _blocked_remove,
        ("unauthorized", "list"): _unauthorized_list,
        ("unauthorized", "clear"): _unauthorized_clear,
    }
    action = str(getattr(args, f"{args.command}_command"))
    try:
        return handlers[(args.command, action)](args, data_dir)
    except ValueError as exc:
        print(f"pytbmq: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"pytbmq: {exc}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------- helpers


@contextmanager
def _db_for_writing(data_dir: Path) -> Iterator[SecurityDb]:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the data directory {data_dir}: {exc.strerror or exc}"
        ) from exc
    db = SecurityDb(data_dir / SECURITY_DB_FILE)
    db.open(create=True)
    try:
        yield db
    finally:
        db.close()


@contextmanager
def _db_existing(data_dir: Path) -> Iterator[SecurityDb | None]:
    """The database, or None when the data directory has none yet (nothing stored)."""
    path = data_dir / SECURITY_DB_FILE
    if not path.exists():
        yield None
        return
    db = SecurityDb(path)
    db.open(create=False)
    try:
        yield db
    finally:
        db.close()


def _warn(message: str) -> None:
    print(f"pytbmq: warning: {message}", file=sys.stderr)


def _read_json(source: str, option: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{option} {source}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{option} {source}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = "standard input" if source == "-" else source
        raise ValueError(f"{option} {where}: not valid JSON: {exc}") from None


def _documents(source: str, option: str) -> list[tuple[str, Any]]:
    """(label for error messages, document) pairs from one document or a list."""
    data = _read_json(source, option)
    if isinstance(data, list):
        if not data:
            raise ValueError(f"{option} {source}: the list is empty")
        return [(f"{option} {source}: document {i}", d) for i, d in enumerate(data, 1)]
    return [(f"{option} {source}", data)]


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise ValueError("--password-stdin: no password on standard input")
        password = line.rstrip("\r\n")
        if not password:
            raise ValueError("--password-stdin: the password is empty")
        return str(password)
    if args.password is None:
        return None
    if not args.password:
        raise ValueError("--password: must not be empty")
    return str(args.password)


def _check_patterns(patterns: Sequence[str] | None, option: str) -> list[str] | None:
    if patterns is None:
        return None
    for p in patterns:
        try:
            compile_pattern(p)
        except ValueError as exc:
            raise ValueError(f"{option}: {exc}") from None
    return list(patterns)


def _rules(args: argparse.Namespace) -> dict[str, list[str] | None]:
    return {
        "pubAuthRulePatterns": _check_patterns(args.pub, "--pub"),
        "subAuthRulePatterns": _check_patterns(args.sub, "--sub"),
    }


def _allows_nothing(cred: MqttClientCredentials) -> bool:
    v = cred.value
    if isinstance(v, X509Credentials):
        return not any(r.pub or r.sub for _, r in v.auth_rules_mapping)
    return not (v.auth_rules.pub or v.auth_rules.sub)


def _store(db: SecurityDb, cred: MqttClientCredentials, replace: bool) -> None:
    existed = replace and db.get_credentials_record(cred.name) is not None
    db.add_credentials(cred, replace=replace)
    verb = "replaced" if existed else "added"
    print(f"{verb} credentials '{cred.name}' ({cred.credentials_type}, id {cred.unique_key})")
    if _allows_nothing(cred):
        _warn(
            f"credentials '{cred.name}' allow neither publishing nor subscribing: "
            "no --pub or --sub rule was given (an absent rule list denies that direction)"
        )


def _add_from_options(args: argparse.Namespace, data_dir: Path, document: dict[str, Any]) -> int:
    cred = parse_credentials(document)  # hashes a clear password
    with _db_for_writing(data_dir) as db:
        _store(db, cred, args.replace)
    return 0


def _ms_to_text(ms: int) -> str:
    when = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in (headers, *rows):
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip(), file=out)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


# --------------------------------------------------------------------------- credentials


def _credentials_add(args: argparse.Namespace, data_dir: Path) -> int:
    creds: list[MqttClientCredentials] = []
    for label, document in _documents(args.json, "--json"):
        try:
            creds.append(parse_credentials(document))
        except ValueError as exc:
            raise ValueError(f"{label}: {exc}") from None
    names: dict[str, str] = {}
    keys: dict[str, str] = {}
    for cred in creds:
        if cred.name in names:
            raise ValueError(f"--json {args.json}: the name '{cred.name}' appears twice")
        if cred.unique_key in keys:
            raise ValueError(
                f"--json {args.json}: credentials '{keys[cred.unique_key]}' and "
                f"'{cred.name}' have the same credentials id {cred.unique_key}"
            )
        names[cred.name] = cred.unique_key
        keys[cred.unique_key] = cred.name
    with _db_for_writing(data_dir) as db:
        if not args.replace:  # refuse before adding any of a list
            for stored in db.list_credentials():
                if stored.name in names or stored.unique_key in keys:
                    raise ValueError(
                        f"credentials '{stored.name}' already exist (credentials id "
                        f"{stored.unique_key}); use --replace"
                    )
        for cred in creds:
            _store(db, cred, args.replace)
    return 0


def _credentials_add_basic(args: argparse.Namespace, data_dir: Path) -> int:
    if not args.client_id and not args.username:
        raise ValueError("credentials add-basic: give --username or --client-id (or both)")
    name = args.name or args.username or args.client_id
    value = {
        "clientId": args.client_id or None,
        "userName": args.username or None,
        "password": _read_password(args),
        "authRules": _rules(args),
    }
    document = {
        "name": name,
        "clientType": args.type,
        "credentialsType": "MQTT_BASIC",
        "credentialsValue": json.dumps(value),
    }
    return _add_from_options(args, data_dir, document)


def _credentials_add_x509(args: argparse.Namespace, data_dir: Path) -> int:
    if not args.cn:
        raise ValueError("--cn: must not be empty")
    if args.regex:
        _check_patterns([args.cn], "--cn")
    _check_patterns([args.key], "--key")
    value = {
        "certCnPattern": args.cn,
        "certCnIsRegex": bool(args.regex),
        "authRulesMapping": {args.key: _rules(args)},
    }
    document = {
        "name": args.name or args.cn,
        "clientType": args.type,
        "credentialsType": "X_509",
        "credentialsValue": json.dumps(value),
    }
    return _add_from_options(args, data_dir, document)


def _credentials_add_scram(args: argparse.Namespace, data_dir: Path) -> int:
    if not args.username:
        raise ValueError("--username: must not be empty")
    value = {
        "userName": args.username,
        "algorithm": args.algorithm,
        "password": _read_password(args),
        "authRules": _rules(args),
    }
    document = {
        "name": args.name or args.username,
        "clientType": args.type,
        "credentialsType": "SCRAM",
        "credentialsValue": json.dumps(value),
    }
    return _add_from_options(args, data_dir, document)


def _patterns_text(patterns: tuple[str, ...] | None) -> str:
    return ", ".join(patterns) if patterns else "(none)"


def _rules_summary(rules: PubSubPatterns) -> str:
    return f"pub: {_patterns_text(rules.pub)}; sub: {_patterns_text(rules.sub)}"


def rules_summary(cred: MqttClientCredentials) -> str:
    """One line describing what the credential allows."""
    v = cred.value
    if isinstance(v, X509Credentials):
        if not v.auth_rules_mapping:
            return "(no rules)"
        return " | ".join(f"{key} -> {_rules_summary(r)}" for key, r in v.auth_rules_mapping)
    return _rules_summary(v.auth_rules)


def _credentials_list(args: argparse.Namespace, data_dir: Path) -> int:
    with _db_existing(data_dir) as db:
        creds = [] if db is None else db.list_credentials()
    if args.json:
        _print_json([credentials_to_document(c, include_secrets=False) for c in creds])
        return 0
    if creds:
        rows = [
            (
                c.name,
                str(c.credentials_type),
                str(c.client_type),
                c.unique_key,
                rules_summary(c),
            )
            for c in creds
        ]
        _table(("NAME", "TYPE", "CLIENT TYPE", "CREDENTIALS ID", "RULES"), rows, sys.stdout)
    return 0


def _credentials_show(args: argparse.Namespace, data_dir: Path) -> int:
    with _db_existing(data_dir) as db:
        record = None if db is None else db.get_credentials_record(args.name)
    if record is None:
        raise ValueError(f"no credentials named '{args.name}'")
    cred = record.credentials
    if args.json:
        document = credentials_to_document(cred, include_secrets=False)
        _print_json({"id": record.id, "createdTime": record.created_time, **document})
        return 0
    lines = [
        ("name", cred.name),
        ("id", record.id),
        ("created", _ms_to_text(record.created_time)),
        ("credentials type", str(cred.credentials_type)),
        ("client type", str(cred.client_type)),
        ("credentials id", cred.unique_key),
    ]
    v = cred.value
    if isinstance(v, BasicCredentials):
        lines += [
            ("client id", v.client_id or "-"),
            ("username", v.user_name or "-"),
            ("password", "***" if v.password_hash else "(none: any password is accepted)"),
            ("publish rules", _patterns_text(v.auth_rules.pub)),
            ("subscribe rules", _patterns_text(v.auth_rules.sub)),
        ]
    elif isinstance(v, ScramCredentials):
        lines += [
            ("username", v.user_name),
            ("algorithm", f"{v.algorithm} ({v.algorithm.mechanism})"),
            ("iterations", str(v.iterations)),
            ("keys", "***"),
            ("publish rules", _patterns_text(v.auth_rules.pub)),
            ("subscribe rules", _patterns_text(v.auth_rules.sub)),
        ]
    else:
        lines += [
            ("certificate CN", v.cert_cn_pattern),
            ("CN is a regex", "yes" if v.cert_cn_is_regex else "no"),
        ]
        lines += [(f"rules for CN ~ {key}", _rules_summary(r)) for key, r in v.auth_rules_mapping]
    width = max(len(label) for label, _ in lines) + 1
    for label, text in lines:
        print(f"{(label + ':').ljust(width)} {text}")
    value = credentials_value_document(v, include_secrets=False)
    print(f"{'value:'.ljust(width)} {json.dumps(value)}")
    return 0


def _credentials_remove(args: argparse.Namespace, data_dir: Path) -> int:
    with _db_existing(data_dir) as db:
        removed = db is not None and db.remove_credentials(args.name)
    if not removed:
        raise ValueError(f"no credentials named '{args.name}'")
    print(f"removed credentials '{args.name}'")
    return 0


# --------------------------------------------------------------------------- blocked


_BLOCKED_OPTIONS = {
    "clientId": "--client-id",
    "username": "--username",
    "ipAddress": "--ip",
    "pattern": "--regex",
    "regexMatchTarget": "--target",
    "expirationTime": "--expires",
    "description": "--description",
}


def _expiration(args: argparse.Namespace, now_ms: int) -> int:
    if args.for_seconds is not None:
        try:
            seconds = int(args.for_seconds)
        except ValueError:
            raise ValueError(
                f"--for: {args.for_seconds!r} is not a whole number of seconds"
            ) from None
        if seconds <= 0:
            raise ValueError("--for: must be a positive number of seconds")
        return now_ms + 1000 * seconds
    if args.expires is not None:
        try:
            when = datetime.datetime.fromisoformat(args.expires)
        except ValueError:
            raise ValueError(
                f"--expires: {args.expires!r} is not an ISO-8601 date and time "
                "(e.g. 2030-01-31T18:00:00+00:00)"
            ) from None
        if when.tzinfo is None:
            when = when.astimezone()  # local time
        ms = int(when.timestamp() * 1000)
        if ms <= 0:
            raise ValueError(f"--expires: {args.expires!r} is before 1970")
        if ms <= now_ms:
            _warn(f"--expires {args.expires} is in the past: the entry has no effect")
        return ms
    return 0


def _blocked_from_options(args: argparse.Namespace) -> BlockedClient:
    if args.regex is None and args.target is not None:
        raise ValueError("--target: only used with --regex")
    if args.regex is not None and args.target is None:
        raise ValueError("--regex: needs --target client_id, username or ip")
    expiration = _expiration(args, _now_ms())
    if args.client_id is not None:
        btype, value, target = BlockedType.CLIENT_ID, args.client_id, None
    elif args.username is not None:
        btype, value, target = BlockedType.USERNAME, args.username, None
    elif args.ip is not None:
        btype, value, target = BlockedType.IP_ADDRESS, args.ip, None
    else:
        btype, value, target = BlockedType.REGEX, args.regex, _TARGETS[args.target]
    try:
        return BlockedClient(btype, value, target, expiration, args.description)
    except ValueError as exc:
        field, _, rest = str(exc).partition(": ")
        option = _BLOCKED_OPTIONS.get(field)
        raise ValueError(f"{option}: {rest}" if option and rest else str(exc)) from None


def _expires_text(b: BlockedClient, now_ms: int) -> str:
    if not b.expiration_time:
        return "never"
    text = _ms_to_text(b.expiration_time)
    return f"{text} (expired)" if b.is_expired(now_ms) else text


def _blocked_add(args: argparse.Namespace, data_dir: Path) -> int:
    if args.json is not None:
        for option in ("target", "expires", "for_seconds", "description"):
            if getattr(args, option) is not None:
                flag = "--for" if option == "for_seconds" else f"--{option}"
                raise ValueError(f"{flag}: not allowed with --json (put it in the document)")
        entries = []
        for label, document in _documents(args.json, "--json"):
            try:
                entries.append(parse_blocked(document))
            except ValueError as exc:
                raise ValueError(f"{label}: {exc}") from None
    else:
        entries = [_blocked_from_options(args)]
    now_ms = _now_ms()
    with _db_for_writing(data_dir) as db:
        for entry in entries:
            db.add_blocked(entry)
            print(f"blocked {entry.key} (expires: {_expires_text(entry, now_ms)})")
    return 0


def _blocked_list(args: argparse.Namespace, data_dir: Path) -> int:
    with _db_existing(data_dir) as db:
        entries = [] if db is None else db.list_blocked()
    if args.json:
        _print_json([b.to_document() for b in entries])
        return 0
    now_ms = _now_ms()
    if entries:
        rows = [(b.key, _expires_text(b, now_ms), b.description or "") for b in entries]
        _table(("KEY", "EXPIRES", "DESCRIPTION"), rows, sys.stdout)
    return 0


def _blocked_remove(args: argparse.Namespace, data_dir: Path) -> int:
    with _db_existing(data_dir) as db:
        removed = db is not None and db.remove_blocked(args.key)
    if not removed:
        raise ValueError(
            f"no blocked client with the key '{args.key}' (`pytbmq blocked list` shows the keys)"
        )
    print(f"removed blocked client {args.key}")
    return 0


# --------------------------------------------------------------------------- unauthorized


def _unauthorized_list(args: argparse.Namespace, data_dir: Path) -> int:
    with _db_existing(data_dir) as db:
        records = [] if db is None else db.list_unauthorized()
    if args.json:
        _print_json([u.to_document() for u in records])
        return 0
    if records:
        rows = [
            (
                _ms_to_text(u.ts),
                u.client_id or "-",
                u.ip_address,
                u.username if u.username is not None else "-",
                "yes" if u.password_provided else "no",
                "yes" if u.tls_used else "no",
                u.reason,
            )
            for u in records
        ]
        headers = ("TIME", "CLIENT ID", "IP ADDRESS", "USERNAME", "PASSWORD", "TLS", "REASON")
        _table(headers, rows, sys.stdout)
    return 0


def _unauthorized_clear(args: argparse.Namespace, data_dir: Path) -> int:
    with _db_existing(data_dir) as db:
        count = 0 if db is None else db.clear_unauthorized(args.client_id)
    which = f" of client '{args.client_id}'" if args.client_id is not None else ""
    print(f"cleared {count} unauthorized client record(s){which}")
    return 0
