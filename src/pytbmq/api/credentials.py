"""MQTT client credentials: TBMQ's `/api/mqtt/client/credentials` endpoints.

Documents have TBMQ's shape: `{id, createdTime, name, clientType, credentialsType,
credentialsId, credentialsValue}` with `credentialsValue` a JSON string. Secrets never
leave the broker: a MQTT_BASIC password shows as `***` and SCRAM salts and keys are left
out. `POST /api/mqtt/client/credentials` creates, or with an `id` updates (TBMQ's save
semantics); `POST /api/mqtt/client/credentials/{id}` changes a MQTT_BASIC password.

Updating keeps secrets the client did not send: a MQTT_BASIC `password` that is absent or
`***` keeps the stored hash (`null` removes the password, any other string is the new
password); a SCRAM value without `password` keeps its salt and keys when `userName` and
`algorithm` are unchanged. Every change goes through `Security.run_db`, which reloads the
broker's snapshot, so it applies to the next CONNECT.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from pytbmq.api.auth import Admin, Ctx, Viewer
from pytbmq.api.errors import bad_request, not_found
from pytbmq.api.paging import MAX_PAGE_SIZE, PageParams, SortOrder, enum_list, paginate
from pytbmq.auth.credentials import (
    SECRET_MASK,
    BasicCredentials,
    ClientType,
    CredentialsType,
    MqttClientCredentials,
    ScramCredentials,
    credentials_to_document,
    credentials_value_document,
    hash_password,
    parse_credentials,
    verify_password,
)
from pytbmq.storage.security import CredentialsRecord

router = APIRouter(tags=["MQTT client credentials"])

BASE = "/api/mqtt/client/credentials"


# ------------------------------------------------------------------ documents
def credentials_document(record: CredentialsRecord) -> dict[str, Any]:
    """TBMQ's MqttClientCredentials document, without secrets."""
    cred = record.credentials
    doc = credentials_to_document(cred, include_secrets=False)
    return {
        "id": record.id,
        "createdTime": record.created_time,
        "name": doc["name"],
        "clientType": doc["clientType"],
        "credentialsType": doc["credentialsType"],
        "credentialsId": cred.credentials_id or cred.unique_key,
        "credentialsValue": doc["credentialsValue"],
    }


def _sort_keys() -> dict[str, Any]:
    return {
        "name": lambda r: r.credentials.name,
        "createdTime": lambda r: r.created_time,
        "clientType": lambda r: str(r.credentials.client_type),
        "credentialsType": lambda r: str(r.credentials.credentials_type),
        "credentialsId": lambda r: r.credentials.credentials_id or r.credentials.unique_key,
    }


def _page(
    records: list[CredentialsRecord],
    pageSize: int | None,
    page: int | None,
    textSearch: str | None,
    sortProperty: str | None,
    sortOrder: SortOrder,
) -> dict[str, Any]:
    if pageSize is None:
        raise bad_request("pageSize: Field required")
    if page is None:
        raise bad_request("page: Field required")
    params = PageParams(pageSize, page, textSearch or None, sortProperty or None, sortOrder)
    return paginate(
        records,
        params,
        search=lambda r: r.credentials.name,
        sort_keys=_sort_keys(),
        render=credentials_document,
    )


def _parse(document: Any) -> MqttClientCredentials:
    try:
        return parse_credentials(document)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def _value_object(body: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = body.get("credentialsValue")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return None  # parse_credentials reports it
    return dict(raw) if isinstance(raw, Mapping) else None


async def _parse_update(
    ctx: Ctx, body: dict[str, Any], old: MqttClientCredentials
) -> MqttClientCredentials:
    """Parse an update, keeping the stored secrets the client did not resend."""
    value = _value_object(body)
    ctype = body.get("credentialsType")
    if value is None or ctype != str(old.credentials_type):
        return await ctx.security.run_hash(lambda: _parse(body))
    document = dict(body)
    if isinstance(old.value, BasicCredentials):
        if value.get("password", SECRET_MASK) != SECRET_MASK:
            return await ctx.security.run_hash(lambda: _parse(body))  # a new password
        value.pop("password", None)
        document["credentialsValue"] = json.dumps(value)
        cred = _parse(document)
        assert isinstance(cred.value, BasicCredentials)
        kept = dataclasses.replace(cred.value, password_hash=old.value.password_hash)
        return dataclasses.replace(cred, value=kept)
    if isinstance(old.value, ScramCredentials) and value.get("password") is None:
        if value.get("storedKey") is None:
            if value.get("userName") != old.value.user_name or value.get("algorithm") != str(
                old.value.algorithm
            ):
                raise bad_request(
                    "credentialsValue.password: required when userName or algorithm changes"
                )
            secrets = credentials_value_document(old.value, include_secrets=True)
            for key in ("salt", "iterations", "storedKey", "serverKey"):
                value[key] = secrets[key]
            document["credentialsValue"] = json.dumps(value)
        return _parse(document)
    return await ctx.security.run_hash(lambda: _parse(document))


def _check_id(record_id: str) -> str:
    try:
        return str(uuid.UUID(record_id))
    except ValueError:
        raise bad_request(f"credentialsId: {record_id!r} is not a valid UUID") from None


async def _get(ctx: Ctx, record_id: str) -> CredentialsRecord:
    rid = _check_id(record_id)
    record = await ctx.security.read_db(lambda db: db.get_credentials_record_by_id(rid))
    if record is None:
        raise not_found(f"MQTT client credentials with id {record_id!r} not found")
    return record


def _store_error(exc: ValueError) -> Exception:
    return bad_request(str(exc).replace("; use --replace", ""))


# ------------------------------------------------------------------ endpoints
@router.post(BASE, summary="Create or update MQTT client credentials (TBMQ's save)")
async def save_credentials(
    body: Annotated[dict[str, Any], Body()], _claims: Admin, ctx: Ctx
) -> dict[str, Any]:
    record_id = body.get("id")
    if isinstance(record_id, Mapping):  # ThingsBoard's {"id": "...", "entityType": ...}
        record_id = record_id.get("id")
    if record_id is None:
        cred = await ctx.security.run_hash(lambda: _parse(body))
        try:
            new_id = await ctx.security.run_db(lambda db: db.add_credentials(cred))
        except ValueError as exc:
            raise _store_error(exc) from None
        return credentials_document(await _get(ctx, new_id))
    if not isinstance(record_id, str):
        raise bad_request("id: must be a string (UUID)")
    old = await _get(ctx, record_id)
    cred = await _parse_update(ctx, body, old.credentials)
    try:
        updated = await ctx.security.run_db(lambda db: db.update_credentials(old.id, cred))
    except ValueError as exc:
        raise _store_error(exc) from None
    if not updated:
        raise not_found(f"MQTT client credentials with id {record_id!r} not found")
    return credentials_document(await _get(ctx, old.id))


@router.get(BASE, summary="A page of credentials, or one by name (?name=)")
async def list_credentials(
    _claims: Viewer,
    ctx: Ctx,
    name: Annotated[str | None, Query(description="Return the credentials of this name")] = None,
    pageSize: Annotated[int | None, Query(ge=1, le=MAX_PAGE_SIZE)] = None,
    page: Annotated[int | None, Query(ge=0)] = None,
    textSearch: str | None = None,
    sortProperty: str | None = None,
    sortOrder: SortOrder = SortOrder.ASC,
) -> dict[str, Any]:
    if name is not None:
        record = await ctx.security.read_db(lambda db: db.get_credentials_record(name))
        if record is None:
            raise not_found(f"MQTT client credentials named {name!r} not found")
        return credentials_document(record)
    records = await ctx.security.read_db(lambda db: db.list_credentials_records())
    return _page(records, pageSize, page, textSearch, sortProperty, sortOrder)


@router.get(f"/api/v2{BASE.removeprefix('/api')}", summary="A page of credentials, filtered")
async def list_credentials_v2(
    _claims: Viewer,
    ctx: Ctx,
    pageSize: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)],
    page: Annotated[int, Query(ge=0)],
    textSearch: str | None = None,
    sortProperty: str | None = None,
    sortOrder: SortOrder = SortOrder.ASC,
    clientTypeList: Annotated[list[str] | None, Query()] = None,
    credentialsTypeList: Annotated[list[str] | None, Query()] = None,
) -> dict[str, Any]:
    client_types = enum_list(clientTypeList, "clientTypeList", ClientType)
    credentials_types = enum_list(credentialsTypeList, "credentialsTypeList", CredentialsType)
    records = await ctx.security.read_db(lambda db: db.list_credentials_records())
    if client_types:
        records = [r for r in records if str(r.credentials.client_type) in client_types]
    if credentials_types:
        records = [r for r in records if str(r.credentials.credentials_type) in credentials_types]
    return _page(records, pageSize, page, textSearch, sortProperty, sortOrder)


@router.get(f"{BASE}/info", summary="How many credentials of each client type")
async def credentials_info(_claims: Viewer, ctx: Ctx) -> dict[str, int]:
    creds = await ctx.security.read_db(lambda db: db.list_credentials())
    devices = sum(1 for c in creds if c.client_type is ClientType.DEVICE)
    return {
        "deviceCredentialsCount": devices,
        "applicationCredentialsCount": len(creds) - devices,
        "totalCount": len(creds),
    }


@router.get(f"{BASE}/{{credentials_id}}", summary="One credentials document by id")
async def get_credentials(credentials_id: str, _claims: Viewer, ctx: Ctx) -> dict[str, Any]:
    return credentials_document(await _get(ctx, credentials_id))


@router.delete(f"{BASE}/{{credentials_id}}", summary="Remove credentials")
async def delete_credentials(credentials_id: str, _claims: Admin, ctx: Ctx) -> None:
    record = await _get(ctx, credentials_id)
    if not await ctx.security.run_db(lambda db: db.remove_credentials(record.credentials.name)):
        raise not_found(f"MQTT client credentials with id {credentials_id!r} not found")


@router.post(f"{BASE}/{{credentials_id}}", summary="Change a MQTT_BASIC credential's password")
async def change_password(
    credentials_id: str,
    body: Annotated[dict[str, Any], Body()],
    _claims: Admin,
    ctx: Ctx,
) -> dict[str, Any]:
    current, new = body.get("currentPassword"), body.get("newPassword")
    for field, value in (("currentPassword", current), ("newPassword", new)):
        if value is not None and not isinstance(value, str):
            raise bad_request(f"{field}: must be a string")
    record = await _get(ctx, credentials_id)
    cred = record.credentials
    if not isinstance(cred.value, BasicCredentials):
        raise bad_request("credentialsType: MQTT credentials should be of 'MQTT_BASIC' type")
    basic = cred.value
    stored = basic.password_hash
    if stored is not None:
        check = await ctx.security.run_hash(lambda: verify_password(stored, current or ""))
        if not check.ok:
            raise bad_request("currentPassword: does not match the current password")
    elif current:
        raise bad_request("currentPassword: the credentials have no password")
    new_hash = await ctx.security.run_hash(lambda: hash_password(new)) if new else None
    value = BasicCredentials(basic.client_id, basic.user_name, new_hash, basic.auth_rules)
    changed = MqttClientCredentials(cred.name, cred.client_type, cred.credentials_type, value)
    if not await ctx.security.run_db(lambda db: db.update_credentials(record.id, changed)):
        raise not_found(f"MQTT client credentials with id {credentials_id!r} not found")
    return credentials_document(await _get(ctx, record.id))
