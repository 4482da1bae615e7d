"""Authentication providers: TBMQ's `/api/mqtt/auth/provider*` endpoints and the
`mqttAuthorization` admin setting (the providers' execution order).

pytbmq has three providers, MQTT_BASIC, X_509 and SCRAM (TBMQ's JWT and HTTP are not
implemented). Each is one document in TBMQ's shape: `{id, createdTime, type, enabled,
configuration: {type, ...}, additionalInfo: {description}}`; its id is a fixed UUID
derived from the type (the type name is accepted wherever an id is). Changes go through
`Security.set_providers`: they apply to the next CONNECT and are stored in security.db,
where they override the SECURITY_MQTT_* settings at the next start.

The execution order of MQTT_BASIC and X_509 is `GET/POST /api/mqtt/auth/provider/priority`
(a pytbmq endpoint: a JSON list such as `["MQTT_BASIC", "X_509"]`) and TBMQ's admin
setting `GET/POST /api/admin/settings/mqttAuthorization` (`{"key": "mqttAuthorization",
"jsonValue": {"priorities": [...], "useListenerBasedProviderOnly": false}}`;
`useListenerBasedProviderOnly` is SECURITY_MQTT_AUTH_STRATEGY=SINGLE). SCRAM is outside
the order (MQTT 5 enhanced authentication); JWT and HTTP are accepted in a list and
ignored, so TBMQ's default list can be posted as is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from pytbmq.api.auth import Admin, Ctx, Viewer
from pytbmq.api.context import ApiContext
from pytbmq.api.errors import bad_request, not_found
from pytbmq.api.paging import MAX_PAGE_SIZE, PageParams, SortOrder, paginate
from pytbmq.auth.credentials import AuthStrategy
from pytbmq.auth.service import BASIC, X_509, AuthConfig

router = APIRouter(tags=["MQTT authentication providers"])

MQTT_BASIC = "MQTT_BASIC"
SCRAM = "SCRAM"
TYPES = (MQTT_BASIC, X_509, SCRAM)
NOT_IMPLEMENTED = ("JWT", "HTTP")  # TBMQ's other providers, accepted in a priority list
# TBMQ's names of the providers in the execution order -> pytbmq's (AuthConfig.priority)
CHAIN_NAMES = {MQTT_BASIC: BASIC, "BASIC": BASIC, X_509: X_509, "SSL": X_509}
SETTING_KEY = "mqttAuthorization"
_NAMESPACE = uuid.UUID("6f0a5c2e-93a4-4e39-9a53-2b3c2f1d7e10")
PROVIDER_IDS = {t: str(uuid.uuid5(_NAMESPACE, t)) for t in TYPES}
DESCRIPTIONS = {
    MQTT_BASIC: "Authenticates clients using a clientId, username, and password sent in "
    "the CONNECT packet",
    X_509: "Uses the client's X.509 certificate chain during TLS handshake for authentication",
    SCRAM: "Performs a secure challenge-response using hashed credentials to authenticate "
    "without sending the actual password (MQTT 5.0 only)",
}

_lock = asyncio.Lock()  # one change at a time: read the config, replace it, store it


# ------------------------------------------------------------------ documents
def _enabled(config: AuthConfig, ptype: str) -> bool:
    if ptype == MQTT_BASIC:
        return config.basic
    if ptype == X_509:
        return config.x509
    return config.scram


def _configuration(config: AuthConfig, ptype: str) -> dict[str, Any]:
    if ptype == MQTT_BASIC:
        return {"type": ptype, "authStrategy": str(config.basic_strategy)}
    if ptype == X_509:
        return {"type": ptype, "skipValidityCheckForClientCert": config.skip_validity}
    return {"type": ptype}


def provider_document(ctx: ApiContext, ptype: str) -> dict[str, Any]:
    config = ctx.security.config
    return {
        "id": PROVIDER_IDS[ptype],
        "createdTime": int(ctx.started_at * 1000),
        "type": ptype,
        "enabled": _enabled(config, ptype),
        "configuration": _configuration(config, ptype),
        "additionalInfo": {"description": DESCRIPTIONS[ptype]},
    }


def _type_of(ref: str, field: str = "id") -> str:
    """The provider type of an id or a type name; 404 when there is no such provider."""
    for ptype, pid in PROVIDER_IDS.items():
        if ref in (pid, ptype):
            return ptype
    if ref in NOT_IMPLEMENTED:
        raise not_found(f"{field}: the {ref} provider is not implemented by pytbmq")
    raise not_found(f"{field}: no authentication provider {ref!r}")


def priorities(config: AuthConfig) -> list[str]:
    return [MQTT_BASIC if p == BASIC else X_509 for p in config.priority]


def _parse_priorities(value: Any, field: str) -> tuple[str, ...]:
    """TBMQ's priority list -> AuthConfig.priority (missing providers go last)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"{field}: must be a list of provider types")
    order: list[str] = []
    for name in value:
        if name in NOT_IMPLEMENTED:
            continue
        internal = CHAIN_NAMES.get(name)
        if internal is None:
            raise bad_request(
                f"{field}: unknown provider type {name!r}; one of {MQTT_BASIC}, {X_509}"
                + "".join(f", {n}" for n in NOT_IMPLEMENTED)
            )
        if internal in order:
            raise bad_request(f"{field}: {name} is listed twice")
        order.append(internal)
    order.extend(p for p in (BASIC, X_509) if p not in order)
    return tuple(order)


async def _change(ctx: ApiContext, change: Callable[[AuthConfig], AuthConfig]) -> None:
    async with _lock:
        config = change(ctx.security.config)
        if config != ctx.security.config:
            await ctx.security.set_providers(config)


def _with_enabled(ptype: str, enabled: bool) -> Callable[[AuthConfig], AuthConfig]:
    changes: dict[str, Any] = {{MQTT_BASIC: "basic", X_509: "x509", SCRAM: "scram"}[ptype]: enabled}
    return lambda config: dataclasses.replace(config, **changes)


def _configured(ptype: str, body: Mapping[str, Any]) -> Callable[[AuthConfig], AuthConfig]:
    """The change a saved provider document asks for (checked before anything changes)."""
    changes: dict[str, Any] = {}
    enabled = body.get("enabled")
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise bad_request("enabled: must be a boolean")
        changes[{MQTT_BASIC: "basic", X_509: "x509", SCRAM: "scram"}[ptype]] = enabled
    conf = body.get("configuration")
    if conf is not None and not isinstance(conf, Mapping):
        raise bad_request("configuration: must be an object")
    conf = conf or {}
    if conf.get("type", ptype) != ptype:
        raise bad_request(f"configuration.type: must be {ptype}")
    if ptype == MQTT_BASIC and conf.get("authStrategy") is not None:
        try:
            changes["basic_strategy"] = AuthStrategy(str(conf["authStrategy"]))
        except ValueError:
            allowed = ", ".join(str(s) for s in AuthStrategy)
            raise bad_request(f"configuration.authStrategy: one of {allowed}") from None
    if ptype == X_509 and conf.get("skipValidityCheckForClientCert") is not None:
        skip = conf["skipValidityCheckForClientCert"]
        if not isinstance(skip, bool):
            raise bad_request("configuration.skipValidityCheckForClientCert: must be a boolean")
        changes["skip_validity"] = skip
    return lambda config: dataclasses.replace(config, **changes)


# ------------------------------------------------------------------ endpoints
@router.get("/api/mqtt/auth/providers", summary="The authentication providers (a page)")
async def list_providers(
    _claims: Viewer,
    ctx: Ctx,
    pageSize: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
    page: Annotated[int, Query(ge=0)] = 0,
    textSearch: str | None = None,
    sortProperty: str | None = None,
    sortOrder: SortOrder = SortOrder.ASC,
) -> dict[str, Any]:
    params = PageParams(pageSize, page, textSearch or None, sortProperty or None, sortOrder)
    docs = [provider_document(ctx, t) for t in TYPES]
    return paginate(
        docs,
        params,
        search=lambda d: str(d["type"]),
        sort_keys={
            "type": lambda d: d["type"],
            "enabled": lambda d: d["enabled"],
            "createdTime": lambda d: d["createdTime"],
        },
        render=lambda d: d,
    )


@router.get("/api/mqtt/auth/provider/priority", summary="The providers' execution order")
async def get_priority(_claims: Viewer, ctx: Ctx) -> list[str]:
    return priorities(ctx.security.config)


@router.post("/api/mqtt/auth/provider/priority", summary="Set the providers' execution order")
async def set_priority(
    body: Annotated[Any, Body(examples=[[MQTT_BASIC, X_509]])], _claims: Admin, ctx: Ctx
) -> list[str]:
    if isinstance(body, Mapping):
        body = body.get("priorities")
    order = _parse_priorities(body, "priorities")
    await _change(ctx, lambda c: dataclasses.replace(c, priority=order))
    return priorities(ctx.security.config)


@router.get("/api/mqtt/auth/provider/basic/strategy", summary="MQTT Basic's lookup strategy")
async def basic_strategy(_claims: Viewer, ctx: Ctx) -> str:
    return str(ctx.security.config.basic_strategy)


@router.get("/api/mqtt/auth/provider/type/{provider_type}", summary="One provider by type")
async def get_provider_by_type(provider_type: str, _claims: Viewer, ctx: Ctx) -> dict[str, Any]:
    if provider_type not in TYPES and provider_type not in NOT_IMPLEMENTED:
        raise bad_request(
            f"authProviderType: unknown type {provider_type!r}; one of {', '.join(TYPES)}"
        )
    return provider_document(ctx, _type_of(provider_type, "authProviderType"))


@router.get("/api/mqtt/auth/provider/{provider_id}", summary="One provider by id")
async def get_provider(provider_id: str, _claims: Viewer, ctx: Ctx) -> dict[str, Any]:
    return provider_document(ctx, _type_of(provider_id))


@router.post("/api/mqtt/auth/provider/{provider_id}/enable", summary="Enable a provider")
async def enable_provider(provider_id: str, _claims: Admin, ctx: Ctx) -> dict[str, Any]:
    ptype = _type_of(provider_id)
    await _change(ctx, _with_enabled(ptype, True))
    return provider_document(ctx, ptype)


@router.post("/api/mqtt/auth/provider/{provider_id}/disable", summary="Disable a provider")
async def disable_provider(provider_id: str, _claims: Admin, ctx: Ctx) -> dict[str, Any]:
    ptype = _type_of(provider_id)
    await _change(ctx, _with_enabled(ptype, False))
    return provider_document(ctx, ptype)


@router.post("/api/mqtt/auth/provider", summary="Save a provider (enabled, configuration)")
async def save_provider(
    body: Annotated[dict[str, Any], Body()], _claims: Admin, ctx: Ctx
) -> dict[str, Any]:
    ref = body.get("id") or body.get("type")
    if not isinstance(ref, str):
        raise bad_request("type: required (MQTT_BASIC, X_509 or SCRAM), or the provider's id")
    ptype = _type_of(ref, "id" if "id" in body else "type")
    if body.get("type") not in (None, ptype):
        raise bad_request(f"type: provider {ref!r} is of type {ptype}")
    await _change(ctx, _configured(ptype, body))
    return provider_document(ctx, ptype)


def _setting(config: AuthConfig) -> dict[str, Any]:
    return {
        "key": SETTING_KEY,
        "jsonValue": {
            "priorities": priorities(config),
            "useListenerBasedProviderOnly": config.single,
        },
    }


@router.get(f"/api/admin/settings/{SETTING_KEY}", summary="TBMQ's mqttAuthorization setting")
async def get_mqtt_authorization(_claims: Viewer, ctx: Ctx) -> dict[str, Any]:
    return _setting(ctx.security.config)


@router.post(f"/api/admin/settings/{SETTING_KEY}", summary="Save the mqttAuthorization setting")
async def save_mqtt_authorization(
    body: Annotated[dict[str, Any], Body()], _claims: Admin, ctx: Ctx
) -> dict[str, Any]:
    if body.get("key", SETTING_KEY) != SETTING_KEY:
        raise bad_request(f"key: must be {SETTING_KEY}")
    value = body.get("jsonValue")
    if not isinstance(value, Mapping):
        raise bad_request("jsonValue: required object {priorities, useListenerBasedProviderOnly}")
    changes: dict[str, Any] = {}
    if "priorities" in value:
        changes["priority"] = _parse_priorities(value["priorities"], "jsonValue.priorities")
    single = value.get("useListenerBasedProviderOnly")
    if single is not None:
        if not isinstance(single, bool):
            raise bad_request("jsonValue.useListenerBasedProviderOnly: must be a boolean")
        changes["single"] = single
    await _change(ctx, lambda c: dataclasses.replace(c, **changes))
    return _setting(ctx.security.config)
