"""Unauthorized and blocked clients: TBMQ's `/api/unauthorized/client` and
`/api/blockedClient` endpoints.

Unauthorized clients are the refused CONNECTs pytbmq.security records (TBMQ's
`{clientId, ipAddress, ts, username, passwordProvided, tlsUsed, reason}`), listed newest
first; they can be read and removed one client id at a time (`?clientId=` or TBMQ's
older `/{clientId}` path) or all at once.

Blocked clients are TBMQ's documents (`type` CLIENT_ID, USERNAME, IP_ADDRESS or REGEX,
the value under `clientId` / `username` / `ipAddress` / `pattern`, `regexMatchTarget` for
REGEX, `expirationTime` in ms (0: never), `description`). Lists show TBMQ's
BlockedClientDto: `{type, value, regexMatchTarget, expirationTime, description,
status}` with status ACTIVE, EXPIRED or DELETING_SOON (expired for at least half of
BLOCKED_CLIENT_CLEANUP_TTL_MINUTES). A change goes through `Security.run_db`, which
reloads the broker's ban list, so it applies to the next CONNECT.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query

from pytbmq.api.auth import Admin, Ctx, Viewer
from pytbmq.api.errors import bad_request, not_found
from pytbmq.api.paging import MAX_PAGE_SIZE, PageParams, SortOrder, enum_list, page_params, paginate
from pytbmq.auth.blocked import BlockedClient, BlockedType, RegexMatchTarget, parse_blocked
from pytbmq.auth.unauthorized import UnauthorizedClient

router = APIRouter(tags=["Unauthorized and blocked clients"])

UNAUTHORIZED = "/api/unauthorized/client"
BLOCKED = "/api/blockedClient"
Page = Annotated[PageParams, Depends(page_params)]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# ------------------------------------------------------------------ unauthorized clients
_UNAUTHORIZED_SORT = {
    "clientId": lambda u: u.client_id,
    "ipAddress": lambda u: u.ip_address,
    "ts": lambda u: u.ts,
    "username": lambda u: u.username,
    "passwordProvided": lambda u: u.password_provided,
    "tlsUsed": lambda u: u.tls_used,
    "reason": lambda u: u.reason,
}


def _unauthorized_page(records: list[UnauthorizedClient], params: PageParams) -> dict[str, Any]:
    return paginate(
        records,
        params,
        search=lambda u: u.client_id,
        sort_keys=_UNAUTHORIZED_SORT,
        render=UnauthorizedClient.to_document,
    )


async def _one_unauthorized(ctx: Ctx, client_id: str) -> dict[str, Any]:
    records = await ctx.security.read_db(lambda db: db.list_unauthorized())
    for record in records:  # newest first
        if record.client_id == client_id:
            return record.to_document()
    raise not_found(f"unauthorized client {client_id!r} not found")


async def _delete_unauthorized(ctx: Ctx, client_id: str) -> None:
    if not await ctx.security.run_db(lambda db: db.clear_unauthorized(client_id)):
        raise not_found(f"unauthorized client {client_id!r} not found")


def _bool_list(values: list[str] | None, field: str) -> set[bool]:
    out: set[bool] = set()
    for value in values or ():
        for item in value.split(","):
            item = item.strip().lower()
            if not item:
                continue
            if item not in ("true", "false"):
                raise bad_request(f"{field}: {item!r} is not true or false")
            out.add(item == "true")
    return out


@router.get(UNAUTHORIZED, summary="A page of unauthorized clients, or one (?clientId=)")
async def list_unauthorized(
    _claims: Viewer,
    ctx: Ctx,
    clientId: Annotated[str | None, Query(description="Return this client's record")] = None,
    pageSize: Annotated[int | None, Query(ge=1, le=MAX_PAGE_SIZE)] = None,
    page: Annotated[int | None, Query(ge=0)] = None,
    textSearch: str | None = None,
    sortProperty: str | None = None,
    sortOrder: SortOrder = SortOrder.ASC,
) -> dict[str, Any]:
    if clientId is not None:
        return await _one_unauthorized(ctx, clientId)
    if pageSize is None or page is None:
        raise bad_request(f"{'pageSize' if pageSize is None else 'page'}: Field required")
    params = PageParams(pageSize, page, textSearch or None, sortProperty or None, sortOrder)
    records = await ctx.security.read_db(lambda db: db.list_unauthorized())
    return _unauthorized_page(records, params)


@router.get(f"{UNAUTHORIZED}/v2", summary="A page of unauthorized clients, filtered")
async def list_unauthorized_v2(
    _claims: Viewer,
    ctx: Ctx,
    params: Page,
    startTime: Annotated[int | None, Query(description="Oldest ts (ms)")] = None,
    endTime: Annotated[int | None, Query(description="Newest ts (ms)")] = None,
    clientId: Annotated[str | None, Query(description="Substring of the client id")] = None,
    ipAddress: Annotated[str | None, Query(description="Substring of the address")] = None,
    username: Annotated[str | None, Query(description="Substring of the username")] = None,
    reason: Annotated[str | None, Query(description="Substring of the reason")] = None,
    passwordProvidedList: Annotated[list[str] | None, Query()] = None,
    tlsUsedList: Annotated[list[str] | None, Query()] = None,
) -> dict[str, Any]:
    password_provided = _bool_list(passwordProvidedList, "passwordProvidedList")
    tls_used = _bool_list(tlsUsedList, "tlsUsedList")
    records = await ctx.security.read_db(lambda db: db.list_unauthorized())

    def contains(needle: str | None, value: str | None) -> bool:
        return not needle or (value is not None and needle.casefold() in value.casefold())

    selected = [
        u
        for u in records
        if (startTime is None or u.ts >= startTime)
        and (endTime is None or u.ts <= endTime)
        and contains(clientId, u.client_id)
        and contains(ipAddress, u.ip_address)
        and contains(username, u.username)
        and contains(reason, u.reason)
        and (not password_provided or u.password_provided in password_provided)
        and (not tls_used or u.tls_used in tls_used)
    ]
    return _unauthorized_page(selected, params)


@router.delete(UNAUTHORIZED, summary="Remove one client's records (?clientId=), or all")
async def delete_unauthorized(
    _claims: Admin,
    ctx: Ctx,
    clientId: Annotated[str | None, Query(description="Only this client's records")] = None,
) -> None:
    if clientId is not None:
        await _delete_unauthorized(ctx, clientId)
    else:
        await ctx.security.run_db(lambda db: db.clear_unauthorized())


@router.get(f"{UNAUTHORIZED}/{{client_id}}", summary="One unauthorized client (TBMQ's path)")
async def get_unauthorized(client_id: str, _claims: Viewer, ctx: Ctx) -> dict[str, Any]:
    return await _one_unauthorized(ctx, client_id)


@router.delete(f"{UNAUTHORIZED}/{{client_id}}", summary="Remove a client's records (path)")
async def delete_unauthorized_path(client_id: str, _claims: Admin, ctx: Ctx) -> None:
    await _delete_unauthorized(ctx, client_id)


# ------------------------------------------------------------------ blocked clients
def _status(entry: BlockedClient, now_ms: int, ttl_minutes: int) -> str:
    if not entry.is_expired(now_ms):
        return "ACTIVE"
    if now_ms - entry.expiration_time >= ttl_minutes * 60_000 / 2:
        return "DELETING_SOON"
    return "EXPIRED"


def _blocked_dto(entry: BlockedClient, now_ms: int, ttl_minutes: int) -> dict[str, Any]:
    return {
        "type": str(entry.type),
        "expirationTime": entry.expiration_time,
        "status": _status(entry, now_ms, ttl_minutes),
        "description": entry.description,
        "value": entry.value,
        "regexMatchTarget": None
        if entry.regex_match_target is None
        else str(entry.regex_match_target),
    }


def _blocked_page(ctx: Ctx, entries: list[BlockedClient], params: PageParams) -> dict[str, Any]:
    now, ttl = _now_ms(), ctx.settings.blocked_client_cleanup_ttl_minutes
    dtos = [_blocked_dto(e, now, ttl) for e in entries]
    sort_keys = {
        key: (lambda d, key=key: d[key])
        for key in ("type", "expirationTime", "status", "description", "value", "regexMatchTarget")
    }
    return paginate(
        dtos, params, search=lambda d: str(d["value"]), sort_keys=sort_keys, render=dict
    )


@router.post(BLOCKED, summary="Block a client (TBMQ's BlockedClient document)")
async def save_blocked(
    body: Annotated[dict[str, Any], Body()], _claims: Admin, ctx: Ctx
) -> dict[str, Any]:
    try:
        entry = parse_blocked(body)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    await ctx.security.run_db(lambda db: db.add_blocked(entry))
    return entry.to_document()


@router.delete(BLOCKED, summary="Unblock a client (?type=&value=[&regexMatchTarget=])")
async def delete_blocked(
    _claims: Admin,
    ctx: Ctx,
    type: Annotated[BlockedType, Query(description="CLIENT_ID, USERNAME, IP_ADDRESS or REGEX")],
    value: Annotated[str, Query(min_length=1)],
    regexMatchTarget: Annotated[RegexMatchTarget | None, Query()] = None,
) -> None:
    if type is not BlockedType.REGEX:
        regexMatchTarget = None  # TBMQ ignores it for the exact types
    try:
        key = BlockedClient(type, value, regexMatchTarget).key
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    if not await ctx.security.run_db(lambda db: db.remove_blocked(key)):
        raise not_found(f"blocked client {key!r} not found")


@router.get(BLOCKED, summary="A page of blocked clients")
async def list_blocked(_claims: Viewer, ctx: Ctx, params: Page) -> dict[str, Any]:
    entries = await ctx.security.read_db(lambda db: db.list_blocked())
    return _blocked_page(ctx, entries, params)


@router.get(f"{BLOCKED}/v2", summary="A page of blocked clients, filtered")
async def list_blocked_v2(
    _claims: Viewer,
    ctx: Ctx,
    params: Page,
    type: Annotated[list[str] | None, Query(description="Types (repeat or comma-separate)")] = None,
    value: Annotated[str | None, Query(description="Substring of the value")] = None,
    regexMatchTarget: Annotated[list[str] | None, Query()] = None,
    startTime: Annotated[int | None, Query(description="Earliest expirationTime (ms)")] = None,
    endTime: Annotated[int | None, Query(description="Latest expirationTime (ms)")] = None,
) -> dict[str, Any]:
    types = enum_list(type, "type", BlockedType)
    targets = enum_list(regexMatchTarget, "regexMatchTarget", RegexMatchTarget)
    entries = await ctx.security.read_db(lambda db: db.list_blocked())
    selected = [
        e
        for e in entries
        if (not types or str(e.type) in types)
        and (not value or value.casefold() in e.value.casefold())
        and (not targets or str(e.regex_match_target) in targets)
        and (startTime is None or e.expiration_time >= startTime)
        and (endTime is None or e.expiration_time <= endTime)
    ]
    return _blocked_page(ctx, selected, params)


@router.get(f"{BLOCKED}/ttl", summary="BLOCKED_CLIENT_CLEANUP_TTL_MINUTES")
async def blocked_ttl(_claims: Viewer, ctx: Ctx) -> int:
    return ctx.settings.blocked_client_cleanup_ttl_minutes
