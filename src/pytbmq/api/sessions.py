"""Client sessions and their subscriptions: TBMQ's `/api/client-session*` and
`/api/subscription*` endpoints.

Handlers read the live router (`ctx.router`) and change it only through router methods
that log their changes for the durable store (`disconnect_client`, `remove_session`,
`set_subscriptions`); a change is answered once the store has committed it (`durable`),
like an MQTT acknowledgement.

Shapes follow TBMQ's DTOs: ShortClientSessionInfoDto (pages), DetailedClientSessionInfoDto
(`?clientId=`), ClientSessionAdvancedDto (`/details`), ClientSessionStatsInfoDto (`/info`),
SubscriptionInfoDto (`qos` as TBMQ's MqttQoS name, `options`), ClientSubscriptionInfoDto
(pages of subscriptions), ClientIdSubscriptionInfoDto (the edit body). pytbmq adds a few
fields (sessionExpiryInterval, protocolVersion, queue sizes, listener...).

`sessionId` is a UUID per connection (a restored session that has not connected since
the broker started gets one too). It is optional on the DELETE endpoints; when given it
must be the current one (400 otherwise), so an admin never cuts a newer connection.
Times are epoch milliseconds, 0 when unknown (TBMQ's `long` fields).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, BeforeValidator, Field

from pytbmq.api.auth import Admin, Ctx, Viewer
from pytbmq.api.errors import ApiError, bad_request, not_found
from pytbmq.api.paging import MAX_PAGE_SIZE, PageParams, SortOrder, paginate
from pytbmq.protocol.packets import ReasonCode, Subscription
from pytbmq.session import Session, SubOptions

if TYPE_CHECKING:
    from pytbmq.api.context import ApiContext
    from pytbmq.router import Router

log = logging.getLogger(__name__)

router = APIRouter()

CONNECTED = "CONNECTED"
DISCONNECTED = "DISCONNECTED"
CLIENT_TYPES = ("DEVICE", "APPLICATION")
PROTOCOL_NAMES = {3: "MQTT_3_1", 4: "MQTT_3_1_1", 5: "MQTT_5"}
QOS_NAMES = ("AT_MOST_ONCE", "AT_LEAST_ONCE", "EXACTLY_ONCE")
MAX_SUBSCRIPTION_ID = 268_435_455
DURABLE_TIMEOUT = 10.0  # seconds a change may wait for the store before a 503
NODE_ID = socket.gethostname()
_SESSION_ID_PREFIX = secrets.randbits(64)  # session ids of this broker run


# ------------------------------------------------------------------ helpers
def ms(seconds: float | None) -> int:
    """Wall-clock seconds → epoch milliseconds, 0 when unknown (TBMQ's long fields)."""
    return int(seconds * 1000) if seconds else 0


def session_id(number: int) -> str:
    """The UUID of connection `number` of this broker run."""
    return str(uuid.UUID(int=(_SESSION_ID_PREFIX << 64) | number, version=4))


async def durable(ctx: ApiContext) -> None:
    """Wait until every change the router logged so far is committed (at once with the
    memory store); 503 if the store has not managed within DURABLE_TIMEOUT."""
    committer = ctx.broker.committer
    if committer is None or committer.idle():
        return
    target = committer.target()
    if target <= committer.committed:
        return
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    class Waiter:
        def release(self, committed: int) -> None:
            if not done.done():
                done.set_result(None)

    committer.wait(Waiter(), target)
    try:
        await asyncio.wait_for(done, DURABLE_TIMEOUT)
    except TimeoutError:
        raise ApiError(
            503,
            "the change is applied but the store has not committed it yet (see the broker log)",
        ) from None


def optional_page(
    pageSize: int | None,
    page: int | None,
    textSearch: str | None,
    sortProperty: str | None,
    sortOrder: SortOrder,
    alternative: str,
) -> PageParams:
    """A page link from optional query parameters (the endpoint also answers `alternative`)."""
    if pageSize is None:
        raise bad_request(f"pageSize: required (or {alternative})")
    if page is None:
        raise bad_request("page: required with pageSize")
    return PageParams(pageSize, page, textSearch or None, sortProperty or None, sortOrder)


def list_param(name: str, values: list[str] | None, allowed: Iterable[str]) -> set[str] | None:
    """A TBMQ list parameter (repeated, or comma-separated), upper-cased and checked."""
    if not values:
        return None
    allowed = tuple(allowed)
    found: set[str] = set()
    for value in values:
        for item in value.split(","):
            item = item.strip().upper()
            if not item:
                continue
            if item not in allowed:
                raise bad_request(f"{name}: {item!r} is not one of {', '.join(allowed)}")
            found.add(item)
    return found or None


def qos_value(value: Any) -> Any:
    """QoS as 0/1/2 or TBMQ's MqttQoS names."""
    if isinstance(value, str) and value.strip().upper() in QOS_NAMES:
        return QOS_NAMES.index(value.strip().upper())
    return value


def subscription_info(full: str, opts: SubOptions) -> dict[str, Any]:
    """TBMQ's SubscriptionInfoDto."""
    return {
        "topicFilter": full,
        "qos": QOS_NAMES[opts.qos],
        "options": {
            "noLocal": opts.no_local,
            "retainAsPublish": opts.retain_as_published,
            "retainHandling": opts.retain_handling,
        },
        "subscriptionId": opts.sub_id,
    }


def _session(ctx: ApiContext, client_id: str) -> Session:
    session = ctx.router.sessions.get(client_id)
    if session is None:
        raise not_found(f"clientId: no session for client {client_id!r}")
    return session


def _check_session_id(router: Router, session: Session, given: str | None) -> None:
    if given is None or not given.strip():
        return
    try:
        wanted = uuid.UUID(given.strip())
    except ValueError:
        raise bad_request(f"sessionId: {given!r} is not a UUID") from None
    current = session_id(router.connection_info(session).number)
    if str(wanted) != current:
        raise bad_request(
            f"sessionId: {given} is not the current session of client {session.client_id!r} "
            f"(it is {current})"
        )


# ------------------------------------------------------------------ sessions: rendering
class SessionView:
    """One session as the pages show it, computed once per request."""

    __slots__ = (
        "address",
        "clean_start",
        "client_id",
        "client_type",
        "connected",
        "connected_at",
        "disconnected_at",
        "expiry",
        "keep_alive",
        "session",
        "session_id",
        "subscriptions",
        "version",
    )

    def __init__(self, router: Router, session: Session) -> None:
        info = router.connection_info(session)
        link = session.link
        self.session = session
        self.client_id = session.client_id
        self.session_id = session_id(info.number)
        self.connected = link is not None
        self.client_type = session.client_type
        self.subscriptions = len(session.subscriptions)
        self.connected_at = ms(info.connected_at)
        self.disconnected_at = ms(session.disconnected_at)
        self.address = info.address
        self.clean_start = info.clean_start
        self.expiry = session.expiry_interval
        self.keep_alive = info.keep_alive
        self.version = PROTOCOL_NAMES.get(session.protocol_version, str(session.protocol_version))

    @property
    def state(self) -> str:
        return CONNECTED if self.connected else DISCONNECTED

    def short(self) -> dict[str, Any]:
        """TBMQ's ShortClientSessionInfoDto (+ sessionExpiryInterval, protocolVersion)."""
        return {
            "id": self.client_id,
            "clientId": self.client_id,
            "sessionId": self.session_id,
            "connectionState": self.state,
            "clientType": self.client_type,
            "nodeId": NODE_ID,
            "subscriptionsCount": self.subscriptions,
            "connectedAt": self.connected_at,
            "disconnectedAt": self.disconnected_at,
            "clientIpAdr": self.address,
            "cleanStart": self.clean_start,
            "sessionExpiryInterval": self.expiry,
            "protocolVersion": self.version,
        }

    def detailed(self) -> dict[str, Any]:
        """TBMQ's DetailedClientSessionInfoDto (+ pytbmq's fields)."""
        session = self.session
        data = self.short()
        data.update(
            {
                "persistent": self.expiry > 0,
                "keepAliveSeconds": self.keep_alive,
                "subscriptions": [
                    subscription_info(full, opts) for full, opts in session.subscriptions.items()
                ],
                "queuedMessages": len(session.queue),
                "inflightMessages": len(session.inflight_out),
            }
        )
        return data


SESSION_SORT_KEYS = {
    "id": lambda v: v.client_id,
    "clientId": lambda v: v.client_id,
    "sessionId": lambda v: v.session_id,
    "connectionState": lambda v: v.state,
    "clientType": lambda v: v.client_type,
    "nodeId": lambda _v: NODE_ID,
    "subscriptionsCount": lambda v: v.subscriptions,
    "connectedAt": lambda v: v.connected_at,
    "disconnectedAt": lambda v: v.disconnected_at,
    "clientIpAdr": lambda v: v.address,
    "cleanStart": lambda v: v.clean_start,
    "sessionExpiryInterval": lambda v: v.expiry,
    "protocolVersion": lambda v: v.version,
}


def _views(router: Router) -> list[SessionView]:
    views = [SessionView(router, s) for s in router.sessions.values()]
    views.sort(key=lambda v: v.client_id)  # a stable order for paging without a sort
    return views


def _session_page(views: list[SessionView], params: PageParams) -> dict[str, Any]:
    return paginate(
        views,
        params,
        search=lambda v: v.client_id,
        sort_keys=SESSION_SORT_KEYS,
        render=SessionView.short,
    )


PageSize = Annotated[int | None, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page")]
PageNo = Annotated[int | None, Query(ge=0, description="Page number, from 0")]
TextSearch = Annotated[str | None, Query(description="Case-insensitive substring")]
SortProp = Annotated[str | None, Query(description="Property to sort by")]
Order = Annotated[SortOrder, Query(description="ASC or DESC")]


# ------------------------------------------------------------------ sessions: endpoints
@router.get(
    "/api/client-session",
    tags=["client sessions"],
    summary="One session (clientId) or a page of sessions (pageSize, page)",
)
async def client_sessions(
    _claims: Viewer,
    ctx: Ctx,
    clientId: Annotated[str | None, Query(description="One client's session details")] = None,
    pageSize: PageSize = None,
    page: PageNo = None,
    textSearch: TextSearch = None,
    sortProperty: SortProp = None,
    sortOrder: Order = SortOrder.ASC,
) -> dict[str, Any]:
    if clientId is not None:
        return SessionView(ctx.router, _session(ctx, clientId)).detailed()
    params = optional_page(pageSize, page, textSearch, sortProperty, sortOrder, "clientId")
    return _session_page(_views(ctx.router), params)


@router.get(
    "/api/v2/client-session",
    tags=["client sessions"],
    summary="A page of sessions, with filters",
)
async def client_sessions_v2(
    _claims: Viewer,
    ctx: Ctx,
    pageSize: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)],
    page: Annotated[int, Query(ge=0)],
    textSearch: TextSearch = None,
    sortProperty: SortProp = None,
    sortOrder: Order = SortOrder.ASC,
    startTime: Annotated[int | None, Query(description="connectedAt >= (ms)")] = None,
    endTime: Annotated[int | None, Query(description="connectedAt <= (ms)")] = None,
    connectedStatusList: Annotated[list[str] | None, Query()] = None,
    clientTypeList: Annotated[list[str] | None, Query()] = None,
    cleanStartList: Annotated[list[str] | None, Query()] = None,
    nodeIdList: Annotated[list[str] | None, Query()] = None,
    subscriptions: Annotated[
        int | None, Query(ge=0, description="Sessions with exactly this many subscriptions")
    ] = None,
) -> dict[str, Any]:
    params = PageParams(pageSize, page, textSearch or None, sortProperty or None, sortOrder)
    states = list_param("connectedStatusList", connectedStatusList, (CONNECTED, DISCONNECTED))
    types = list_param("clientTypeList", clientTypeList, CLIENT_TYPES)
    cleans = list_param("cleanStartList", cleanStartList, ("TRUE", "FALSE"))
    nodes = {n for value in nodeIdList or () for n in value.split(",") if n.strip()}
    views = [
        v
        for v in _views(ctx.router)
        if (states is None or v.state in states)
        and (types is None or v.client_type in types)
        and (cleans is None or ("TRUE" if v.clean_start else "FALSE") in cleans)
        and (not nodes or NODE_ID in nodes)
        and (subscriptions is None or v.subscriptions == subscriptions)
        and (startTime is None or v.connected_at >= startTime)
        and (endTime is None or v.connected_at <= endTime)
    ]
    return _session_page(views, params)


@router.get("/api/client-session/info", tags=["client sessions"], summary="Session counts")
async def client_sessions_info(_claims: Viewer, ctx: Ctx) -> dict[str, Any]:
    """TBMQ's ClientSessionStatsInfoDto, plus the same counts per client type."""
    by_type: dict[str, dict[str, int]] = {
        t: {"connectedCount": 0, "disconnectedCount": 0, "totalCount": 0} for t in CLIENT_TYPES
    }
    connected = total = 0
    for session in ctx.router.sessions.values():
        counts = by_type.setdefault(
            session.client_type, {"connectedCount": 0, "disconnectedCount": 0, "totalCount": 0}
        )
        total += 1
        counts["totalCount"] += 1
        if session.link is not None:
            connected += 1
            counts["connectedCount"] += 1
        else:
            counts["disconnectedCount"] += 1
    return {
        "connectedCount": connected,
        "disconnectedCount": total - connected,
        "totalCount": total,
        "clientTypes": by_type,
    }


@router.get(
    "/api/client-session/details",
    tags=["client sessions"],
    summary="Connection details of one client",
)
async def client_session_details(
    _claims: Viewer, ctx: Ctx, clientId: Annotated[str, Query(min_length=1)]
) -> dict[str, Any]:
    """TBMQ's ClientSessionAdvancedDto (`name`: the credentials that authenticated the
    connection, "Unknown" as TBMQ says when there are none), plus what pytbmq knows."""
    session = _session(ctx, clientId)
    view = SessionView(ctx.router, session)
    link = session.link
    subject: str | None = None
    listener: str | None = None
    credentials: str | None = None
    if link is not None:
        credentials = getattr(link, "credentials_name", None)
        listener = getattr(link, "listener", None)
        certificates = getattr(link, "peer_certificates", None)
        if certificates is not None:
            subject = certificates.leaf_subject() or None
    return {
        "name": credentials or "Unknown",
        "mqttVersion": view.version,
        "clientId": clientId,
        "sessionId": view.session_id,
        "connectionState": view.state,
        "clientType": view.client_type,
        "clientIpAdr": view.address,
        "listener": listener,
        "certificateSubject": subject,
    }


@router.delete(
    "/api/client-session/disconnect",
    tags=["client sessions"],
    summary="Disconnect a client now (MQTT 5: DISCONNECT 0x98 Administrative action)",
)
async def disconnect_client_session(
    claims: Admin,
    ctx: Ctx,
    clientId: Annotated[str, Query(min_length=1)],
    sessionId: Annotated[str | None, Query(description="Must be the current one if given")] = None,
) -> None:
    session = _session(ctx, clientId)
    _check_session_id(ctx.router, session, sessionId)
    if not ctx.router.disconnect_client(clientId, ReasonCode.ADMINISTRATIVE_ACTION):
        raise bad_request(f"clientId: client {clientId!r} is not connected")
    log.info("client %s disconnected by admin %s (REST API)", clientId, claims.email)
    await durable(ctx)


@router.delete(
    "/api/client-session/remove",
    tags=["client sessions"],
    summary="Remove a disconnected session with its subscriptions and queued messages",
)
async def remove_client_session(
    claims: Admin,
    ctx: Ctx,
    clientId: Annotated[str, Query(min_length=1)],
    sessionId: Annotated[str | None, Query(description="Must be the current one if given")] = None,
) -> None:
    session = _session(ctx, clientId)
    _check_session_id(ctx.router, session, sessionId)
    if session.link is not None:
        raise bad_request(
            f"clientId: client {clientId!r} is connected; disconnect it first "
            "(DELETE /api/client-session/disconnect)"
        )
    ctx.router.remove_session(clientId, time.time())
    log.info("session %s removed by admin %s (REST API)", clientId, claims.email)
    await durable(ctx)


# ------------------------------------------------------------------ subscriptions
Qos = Annotated[int, BeforeValidator(qos_value), Field(ge=0, le=2)]


class SubscriptionOptionsIn(BaseModel):
    noLocal: bool = False
    retainAsPublish: bool = False
    retainHandling: int = Field(default=0, ge=0, le=2)


class SubscriptionIn(BaseModel):
    topicFilter: str = Field(min_length=1)
    qos: Qos = 0
    options: SubscriptionOptionsIn | None = None
    subscriptionId: int | None = Field(default=None, ge=1, le=MAX_SUBSCRIPTION_ID)


class ClientSubscriptionsIn(BaseModel):
    """TBMQ's ClientIdSubscriptionInfoDto."""

    clientId: str = Field(min_length=1)
    subscriptions: list[SubscriptionIn]


def _client_subscriptions(session: Session) -> list[dict[str, Any]]:
    return [subscription_info(full, opts) for full, opts in session.subscriptions.items()]


Row = tuple[str, str, SubOptions]  # client id, full filter, options

SUBSCRIPTION_SORT_KEYS = {
    "clientId": lambda r: r[0],
    "topicFilter": lambda r: r[1],
    "qos": lambda r: r[2].qos,
    "noLocal": lambda r: r[2].no_local,
    "retainAsPublish": lambda r: r[2].retain_as_published,
    "retainHandling": lambda r: r[2].retain_handling,
    "subscriptionId": lambda r: r[2].sub_id,
}


def _rows(router: Router) -> list[Row]:
    rows = [
        (cid, full, opts)
        for cid, session in router.sessions.items()
        for full, opts in session.subscriptions.items()
    ]
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


def _subscription_page(rows: list[Row], params: PageParams) -> dict[str, Any]:
    """A page of TBMQ's ClientSubscriptionInfoDto."""
    return paginate(
        rows,
        params,
        search=lambda r: f"{r[0]}\n{r[1]}",
        sort_keys=SUBSCRIPTION_SORT_KEYS,
        render=lambda r: {"clientId": r[0], "subscription": subscription_info(r[1], r[2])},
    )


@router.get(
    "/api/subscription",
    tags=["subscriptions"],
    summary="One client's subscriptions (clientId) or a page of all (pageSize, page)",
)
async def subscriptions(
    _claims: Viewer,
    ctx: Ctx,
    clientId: Annotated[str | None, Query(description="One client's subscriptions")] = None,
    pageSize: PageSize = None,
    page: PageNo = None,
    textSearch: TextSearch = None,
    sortProperty: SortProp = None,
    sortOrder: Order = SortOrder.ASC,
) -> Any:
    if clientId is not None:
        return _client_subscriptions(_session(ctx, clientId))
    params = optional_page(pageSize, page, textSearch, sortProperty, sortOrder, "clientId")
    return _subscription_page(_rows(ctx.router), params)


@router.get(
    "/api/subscription/all",
    tags=["subscriptions"],
    summary="Every subscribed topic filter, or (pageSize, page) a page of subscriptions",
)
async def all_subscriptions(
    _claims: Viewer,
    ctx: Ctx,
    pageSize: PageSize = None,
    page: PageNo = None,
    textSearch: TextSearch = None,
    sortProperty: SortProp = None,
    sortOrder: Order = SortOrder.ASC,
    clientId: Annotated[str | None, Query(description="Client id contains")] = None,
    topicFilter: Annotated[str | None, Query(description="Topic filter contains")] = None,
    qosList: Annotated[list[str] | None, Query()] = None,
    noLocalList: Annotated[list[str] | None, Query()] = None,
    retainAsPublishList: Annotated[list[str] | None, Query()] = None,
    retainHandlingList: Annotated[list[str] | None, Query()] = None,
    subscriptionId: Annotated[int | None, Query()] = None,
) -> Any:
    rows = _rows(ctx.router)
    if pageSize is None and page is None:
        return sorted({full for _cid, full, _opts in rows})
    params = optional_page(pageSize, page, textSearch, sortProperty, sortOrder, "no paging")
    qos = list_param("qosList", qosList, ("0", "1", "2"))
    no_local = list_param("noLocalList", noLocalList, ("TRUE", "FALSE"))
    rap = list_param("retainAsPublishList", retainAsPublishList, ("TRUE", "FALSE"))
    handling = list_param("retainHandlingList", retainHandlingList, ("0", "1", "2"))
    cid_part = clientId.casefold() if clientId else None
    filter_part = topicFilter.casefold() if topicFilter else None
    rows = [
        (cid, full, o)
        for cid, full, o in rows
        if (cid_part is None or cid_part in cid.casefold())
        and (filter_part is None or filter_part in full.casefold())
        and (qos is None or str(o.qos) in qos)
        and (no_local is None or ("TRUE" if o.no_local else "FALSE") in no_local)
        and (rap is None or ("TRUE" if o.retain_as_published else "FALSE") in rap)
        and (handling is None or str(o.retain_handling) in handling)
        and (subscriptionId is None or o.sub_id == subscriptionId)
    ]
    return _subscription_page(rows, params)


@router.post(
    "/api/subscription",
    tags=["subscriptions"],
    summary="Replace a client's subscriptions (applied at once, stored)",
)
async def update_subscriptions(
    body: ClientSubscriptionsIn, claims: Admin, ctx: Ctx
) -> dict[str, Any]:
    session = _session(ctx, body.clientId)
    router_ = ctx.router
    wanted: list[tuple[Subscription, int | None]] = []
    seen: set[str] = set()
    for index, sub in enumerate(body.subscriptions):
        opts = sub.options or SubscriptionOptionsIn()
        field = f"subscriptions.{index}.topicFilter"
        if sub.topicFilter in seen:
            raise bad_request(f"{field}: {sub.topicFilter!r} appears twice")
        seen.add(sub.topicFilter)
        problem = router_.filter_problem(sub.topicFilter, opts.noLocal)
        if problem is not None:
            raise bad_request(f"{field}: {problem}")
        wanted.append(
            (
                Subscription(
                    sub.topicFilter,
                    sub.qos,
                    opts.noLocal,
                    opts.retainAsPublish,
                    opts.retainHandling,
                ),
                sub.subscriptionId,
            )
        )
    router_.set_subscriptions(session, wanted, time.time())
    log.info(
        "subscriptions of %s set by admin %s (REST API): %s",
        body.clientId,
        claims.email,
        ", ".join(sorted(seen)) or "none",
    )
    await durable(ctx)
    return {"clientId": body.clientId, "subscriptions": _client_subscriptions(session)}
