"""System endpoints: broker info, listener ports, TLS status, health and metrics.

* `GET /api/system/info` (any admin): TBMQ's `{version, artifact, name}` plus what a
  pytbmq operator wants at a glance: Python, pid, uptime, data dir, store, the process's
  CPU and memory, the host's, and counts of connections, sessions, subscriptions and
  retained messages.
* `GET /api/app/listener/port?listenerName=` (any admin): the port a listener is bound
  to, as a bare JSON number (TBMQ). Names are TBMQ's MQTT, MQTTS, WS, WSS, or pytbmq's
  TCP, SSL (any case); an unknown name is a 400, a disabled listener a 404.
* `GET /api/tls/status` (any admin, pytbmq): per TLS listener (ssl, wss, and the HTTPS
  server as "http") the certificate in use, its chain, where it came from, the client
  certificate mode, trust anchors, the last reload and the handshake counters.
* `GET /actuator/health` (no token, as TBMQ): UP (200) or DOWN (503) with components
  listeners, store and security.
* `GET /actuator/info` (no token): name and version.
* `GET /actuator/prometheus` and `GET /metrics`: the Prometheus text (pytbmq.api.metrics);
  they need an admin token unless METRICS_AUTH_ENABLED=false.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from datetime import datetime
from typing import Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from pytbmq import __version__
from pytbmq.api.auth import Ctx, Viewer, viewer
from pytbmq.api.context import ApiContext, get_ctx
from pytbmq.api.errors import bad_request, not_found
from pytbmq.api.metrics import (
    CONTENT_TYPE,
    collect,
    days_to_expiry,
    listener_states,
    process_stats,
    render,
    tls_holders,
)
from pytbmq.tls.context import TlsContextHolder
from pytbmq.tls.diagnose import HandshakeStats

router = APIRouter(tags=["system"])

NAME = "pytbmq"
SECURITY_CHECK_TIMEOUT = 2.0  # seconds the health check waits for the security database

# listenerName (upper-cased) -> pytbmq listener; TBMQ's names first
LISTENER_NAMES = {
    "MQTT": "tcp",
    "MQTTS": "ssl",
    "WS": "ws",
    "WSS": "wss",
    "TCP": "tcp",
    "SSL": "ssl",
}


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


# ------------------------------------------------------------------ system info
def _host_memory() -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    found[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found


@router.get("/api/system/info", summary="Version, process, store and counts of the broker")
async def system_info(_claims: Viewer, ctx: Ctx) -> dict[str, Any]:
    broker = ctx.broker
    router_ = broker.router
    now = time.time()
    uptime = now - ctx.started_at
    proc = process_stats()
    alive = now - (proc.start_time or ctx.started_at)  # the process's life, for the CPU %
    memory = _host_memory()
    try:
        load: list[float] | None = list(os.getloadavg())
    except OSError:
        load = None
    sessions = list(router_.sessions.values())
    return {
        "name": NAME,
        "artifact": NAME,
        "version": __version__,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "platform": platform.platform(),
        "pid": os.getpid(),
        "startedAt": _ms(ctx.started_at),
        "uptimeSeconds": round(uptime, 3),
        "dataDir": str(broker.settings.pytbmq_data_dir),
        "store": {
            "name": broker.store.name,
            "durable": broker.store.durable,
            "location": broker.store.location,
        },
        "process": {
            "cpuSeconds": round(proc.cpu_seconds, 3),
            "cpuPercentAverage": round(100 * proc.cpu_seconds / alive, 2) if alive > 0 else 0,
            "rssBytes": proc.rss_bytes,
            "maxRssBytes": proc.max_rss_bytes,
            "threads": proc.threads,
            "openFds": proc.open_fds,
        },
        "host": {
            "cpuCount": os.cpu_count(),
            "loadAverage": load,
            "memoryTotalBytes": memory.get("MemTotal"),
            "memoryAvailableBytes": memory.get("MemAvailable"),
        },
        "counts": {
            "connections": len(broker.links),
            "sessions": len(sessions),
            "connectedSessions": sum(1 for s in sessions if s.link is not None),
            "subscriptions": sum(len(s.subscriptions) for s in sessions),
            "retainedMessages": len(router_.retained),
        },
    }


@router.get(
    "/api/app/listener/port",
    summary="Port of an MQTT listener (MQTT, MQTTS, WS, WSS)",
    response_model=int,
)
async def listener_port(
    listenerName: Annotated[
        str, Query(description="MQTT, MQTTS, WS or WSS (TCP and SSL also work; any case)")
    ],
    _claims: Viewer,
    ctx: Ctx,
) -> int:
    name = LISTENER_NAMES.get(listenerName.strip().upper())
    if name is None:
        raise bad_request(
            f"listenerName: unknown listener {listenerName!r}; one of MQTT, MQTTS, WS, WSS"
        )
    state = listener_states(ctx.broker).get(name)
    if state is None:
        raise not_found(
            f"listenerName: listener {listenerName!r} is disabled "
            f"(LISTENER_{name.upper()}_ENABLED=false)"
        )
    return state.port


# ------------------------------------------------------------------ TLS status
def _certificate(cert: x509.Certificate, now: float) -> dict[str, Any]:
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(getattr(n, "value", n)) for n in san]
    except x509.ExtensionNotFound:
        names = []
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serialNumber": format(cert.serial_number, "X"),
        "notBefore": _ms(not_before.timestamp()),
        "notAfter": _ms(not_after.timestamp()),
        "notBeforeText": not_before.isoformat(),
        "notAfterText": not_after.isoformat(),
        "expired": not_after.timestamp() <= now,
        "subjectAltNames": names,
        "sha256Fingerprint": cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    }


def _handshakes(stats: HandshakeStats | None) -> dict[str, Any] | None:
    if stats is None:
        return None  # the HTTPS server: uvicorn does its handshakes
    return {
        "completed": stats.completed,
        "failed": sum(stats.failed.values()),
        "failedByReason": dict(sorted(stats.failed.items())),
    }


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds).astimezone().isoformat()


def tls_status(name: str, holder: TlsContextHolder, ctx: ApiContext, now: float) -> dict[str, Any]:
    cfg, material = holder.cfg, holder.material
    state = listener_states(ctx.broker).get(name)
    last_ok: bool | None = None
    if holder.last_reload_at is not None:
        last_ok = holder.last_reload_error is None
    return {
        "listener": name,
        "port": state.port if state is not None else None,
        "settingsPrefix": cfg.prefix,
        "protocol": cfg.protocol,
        "certificate": _certificate(material.leaf, now),
        "daysToExpiry": round(days_to_expiry(holder, now), 3),
        "chain": [c.subject.rfc4514_string() for c in material.chain],
        "source": material.source,
        "credentialsType": "KEYSTORE" if cfg.uses_keystore() else "PEM",
        "clientAuth": cfg.client_auth,
        "trustAnchors": len(material.trust),
        "trustAnchorSubjects": [c.subject.rfc4514_string() for c in material.trust],
        "crls": len(material.crls),
        "warnings": list(material.warnings),
        "reload": {
            "intervalSec": cfg.reload_interval,
            "loadedAt": _ms(holder.loaded_at),
            "reloads": holder.reloads,
            "failedReloads": holder.failed_reloads,
            "lastReloadAt": _ms(holder.last_reload_at),
            "lastReloadAtText": _iso(holder.last_reload_at),
            "lastReloadReason": holder.last_reload_reason or None,
            "lastReloadOk": last_ok,
            "lastReloadError": holder.last_reload_error,
        },
        "handshakes": _handshakes(ctx.broker.handshakes.get(name)),
    }


@router.get("/api/tls/status", summary="Certificates, reloads and handshakes of TLS listeners")
async def get_tls_status(_claims: Viewer, ctx: Ctx) -> dict[str, Any]:
    now = time.time()
    holders = tls_holders(ctx.broker)
    return {
        "listeners": {
            name: tls_status(name, holder, ctx, now) for name, holder in sorted(holders.items())
        }
    }


# ------------------------------------------------------------------ actuator
async def _security_health(ctx: ApiContext) -> dict[str, Any]:
    config = ctx.security.config
    providers = {"basic": config.basic, "x509": config.x509, "scram": config.scram}
    try:
        version = await asyncio.wait_for(
            ctx.security.read_db(lambda db: db.data_version()), SECURITY_CHECK_TIMEOUT
        )
    except Exception as exc:  # a broken database, or a stuck database thread
        return {
            "status": "DOWN",
            "providers": providers,
            "error": f"security database: {type(exc).__name__}: {exc}",
        }
    return {
        "status": "UP",
        "providers": providers,
        "credentials": ctx.security.authenticator.state.count,
        "dataVersion": version,
    }


def _store_health(ctx: ApiContext) -> dict[str, Any]:
    broker = ctx.broker
    store = broker.store
    healthy = bool(getattr(store, "healthy", True))
    error = getattr(store, "last_error", None)
    out: dict[str, Any] = {
        "status": "UP" if healthy else "DOWN",
        "name": store.name,
        "durable": store.durable,
        "location": store.location,
    }
    if error:
        out["error"] = str(error)
    elif not healthy:
        out["error"] = "the store's writer thread is not running"
    committer = broker.committer
    if committer is not None:
        out["pendingBatches"] = committer.submitted - committer.committed
    return out


@router.get(
    "/actuator/health",
    summary="Health of the listeners, the store and the security database (no token)",
    responses={503: {"description": "DOWN: a listener, the store or security is not working"}},
)
async def health(ctx: Annotated[ApiContext, Depends(get_ctx)]) -> JSONResponse:
    listeners: dict[str, Any] = {}
    for name, state in listener_states(ctx.broker).items():
        listeners[name] = {
            "status": "UP" if state.up else "DOWN",
            "address": state.address,
            "port": state.port,
        }
    listeners_up = all(v["status"] == "UP" for v in listeners.values())
    components: dict[str, Any] = {
        "listeners": {"status": "UP" if listeners_up else "DOWN", **listeners},
        "store": _store_health(ctx),
        "security": await _security_health(ctx),
    }
    up = all(c["status"] == "UP" for c in components.values())
    body = {"status": "UP" if up else "DOWN", "components": components}
    return JSONResponse(body, status_code=200 if up else 503)


@router.get("/actuator/info", summary="Name and version of the broker (no token)")
async def info() -> dict[str, Any]:
    return {"app": {"name": NAME, "version": __version__}, "name": NAME, "version": __version__}


async def metrics_access(
    ctx: Annotated[ApiContext, Depends(get_ctx)],
    x_authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """An admin token, unless METRICS_AUTH_ENABLED=false."""
    if ctx.settings.metrics_auth_enabled:
        await viewer(ctx, x_authorization, authorization)


_METRICS_SUMMARY = (
    "Prometheus metrics, text format 0.0.4 (admin token unless METRICS_AUTH_ENABLED=false)"
)
_METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {}}, "description": "The metrics"}
}


async def _metrics(ctx: ApiContext) -> PlainTextResponse:
    text = render(collect(ctx))
    return PlainTextResponse(text, media_type=CONTENT_TYPE)


@router.get(
    "/actuator/prometheus",
    summary=_METRICS_SUMMARY,
    response_class=PlainTextResponse,
    responses=_METRICS_RESPONSES,
)
async def prometheus(
    _access: Annotated[None, Depends(metrics_access)], ctx: Ctx
) -> PlainTextResponse:
    return await _metrics(ctx)


@router.get(
    "/metrics",
    summary=_METRICS_SUMMARY,
    response_class=PlainTextResponse,
    responses=_METRICS_RESPONSES,
)
async def metrics(_access: Annotated[None, Depends(metrics_access)], ctx: Ctx) -> PlainTextResponse:
    return await _metrics(ctx)
