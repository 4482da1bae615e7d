"""The `pytbmq` command line: `run` (the default), `settings`, `data export|import`
(pytbmq.storage.transfer), `certs`, `keystore`, `tls check` (pytbmq.tls.tooling), and
`credentials`, `blocked`, `unauthorized` (pytbmq.auth.tooling, the security database).

Errors the user can fix (ConfigError) are printed as one clear message and exit 2; a
store that cannot be used (StorageError) exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from pytbmq import __version__
from pytbmq.config import describe_settings, load_settings
from pytbmq.errors import ConfigError, StorageError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytbmq",
        description="pytbmq: an MQTT 3.1/3.1.1/5.0 broker configured like ThingsBoard TBMQ. "
        "Settings come from environment variables with TBMQ's names "
        "(see `pytbmq settings`), optionally from a TBMQ-style YAML file.",
    )
    parser.add_argument("--version", action="version", version=f"pytbmq {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file shaped like TBMQ's thingsboard-mqtt-broker.yml; "
        "environment variables override it",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="start the broker in the foreground (the default)")
    run.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub.add_parser("settings", help="list every setting with its default and meaning")
    data = sub.add_parser("data", help="export or import the stored state (JSON lines)")
    data.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export", help="write every persistent session, queued and retained message"
    )
    export.add_argument("-o", "--output", metavar="FILE", default="-", help="default: stdout")
    load = actions.add_parser("import", help="load an export into an empty data directory")
    load.add_argument("input", metavar="FILE", help="an export; - reads standard input")
    load.add_argument("--replace", action="store_true", help="discard the stored state first")
    from pytbmq.tls.tooling import add_parsers as add_tls_tooling  # certs, keystore, tls

    add_tls_tooling(sub)
    from pytbmq.auth.tooling import add_parsers as add_auth_tooling  # credentials, blocked...

    add_auth_tooling(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `pytbmq credentials list | head`: the reader went away
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        return 0


def _main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "run"
    if command == "settings":
        for env, default, help_text in describe_settings():
            print(f"{env}={default}\n    {help_text}")
        return 0
    if command in ("certs", "keystore", "tls"):
        from pytbmq.tls.tooling import run as run_tls_tooling

        return run_tls_tooling(args)
    try:
        settings = load_settings(config_file=args.config)
    except ConfigError as exc:
        print(f"pytbmq: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.pytbmq_log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if command in ("credentials", "blocked", "unauthorized"):
        from pytbmq.auth.tooling import run as run_auth_tooling

        return run_auth_tooling(args, settings.pytbmq_data_dir)
    if command == "data":
        from pytbmq.storage.transfer import run_data_command

        try:
            return run_data_command(settings, args)
        except StorageError as exc:
            print(f"pytbmq: {exc}", file=sys.stderr)
            return 1
    from pytbmq.broker import run

    try:
        return run(settings)
    except ConfigError as exc:
        logging.getLogger("pytbmq").error("cannot start: %s", exc)
        return 2
    except StorageError as exc:
        logging.getLogger("pytbmq").error("cannot start: %s", exc)
        return 1
    except KeyboardInterrupt:
        return 0
