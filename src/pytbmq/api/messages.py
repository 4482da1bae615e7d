"""Retained messages (TBMQ's `/api/retained-msg*`) and publishing as the broker
(`POST /api/mqtt/publish`).

A retained message is shown as TBMQ's RetainedMsgDto: `topic`, `payload` (the bytes as
UTF-8 text, invalid sequences replaced), `qos`, `createdTime` (epoch ms; 0 when unknown:
pytbmq's store does not keep it, so a message restored after a restart shows the time
derived from its expiry interval, or 0), `userProperties` (`{"props": [{"k", "v"}]}`),
plus pytbmq's `payloadBase64` and MQTT 5 `properties`.

`POST /api/mqtt/publish` takes TBMQ's RestPublishRequest (`topic`, `payload`,
`payloadEncoding` PLAIN | BASE64, `qos`, `retain`, `properties`) and routes the message
exactly as a PUBLISH from a client (retained store included), with no sender: a No
Local subscription still receives it. It answers `{delivered, reasonCode, message}`:
200 when subscriptions matched, 202 (reason code 16) when none did, as TBMQ does.
Changes are answered once the store has committed them.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from pytbmq.api.auth import Admin, Ctx, Viewer
from pytbmq.api.errors import bad_request, not_found
from pytbmq.api.paging import MAX_PAGE_SIZE, PageParams, SortOrder, paginate
from pytbmq.api.sessions import durable, list_param, ms, optional_page
from pytbmq.message import Message
from pytbmq.protocol.packets import EMPTY_PROPERTIES, Properties
from pytbmq.topics import validate_topic_name

if TYPE_CHECKING:
    from pytbmq.config import Settings
    from pytbmq.router import Router

log = logging.getLogger(__name__)

router = APIRouter()

MAX_STRING_BYTES = 65535  # an MQTT UTF-8 string or binary field
REASON_NO_MATCHING_SUBSCRIBERS = 0x10


# ------------------------------------------------------------------ retained messages
def created_time(router: Router, msg: Message) -> int:
    """When the retained message was set, epoch ms (0 when unknown)."""
    at = router.retained_at.get(msg.topic)
    if at is None and msg.expires_at is not None:
        interval = msg.properties.message_expiry_interval
        if interval is not None:
            at = msg.expires_at - interval
    return ms(at)


def properties_document(props: Properties, msg: Message | None = None) -> dict[str, Any]:
    """The MQTT 5 properties of a message, present ones only; `messageExpiryInterval`
    is what remains of it now."""
    out: dict[str, Any] = {}
    if props.payload_format_indicator is not None:
        out["payloadFormatIndicator"] = props.payload_format_indicator
    if msg is not None and msg.expires_at is not None:
        out["messageExpiryInterval"] = max(0, int(msg.expires_at - time.time()))
    if props.content_type is not None:
        out["contentType"] = props.content_type
    if props.response_topic is not None:
        out["responseTopic"] = props.response_topic
    if props.correlation_data is not None:
        out["correlationData"] = base64.b64encode(props.correlation_data).decode()
    if props.user_properties:
        out["userProperties"] = {k: v for k, v in props.user_properties}
    return out


def retained_document(router: Router, msg: Message) -> dict[str, Any]:
    """TBMQ's RetainedMsgDto, plus payloadBase64 and properties."""
    props = msg.properties
    return {
        "topic": msg.topic,
        "payload": msg.payload.decode("utf-8", "replace"),
        "payloadBase64": base64.b64encode(msg.payload).decode(),
        "qos": msg.qos,
        "createdTime": created_time(router, msg),
        "userProperties": {"props": [{"k": k, "v": v} for k, v in props.user_properties]},
        "properties": properties_document(props, msg),
    }


def _live_retained(router: Router) -> list[Message]:
    """Every retained message that has not expired, by topic; forgets the set-times of
    topics no longer retained."""
    now = time.time()
    messages = [msg for _topic, msg in router.retained.items() if not msg.expired(now)]
    messages.sort(key=lambda m: m.topic)
    if len(router.retained_at) > len(router.retained):
        for topic in [t for t in router.retained_at if router.retained.get(t) is None]:
            del router.retained_at[topic]
    return messages


def _retained_page(router: Router, messages: list[Message], params: PageParams) -> dict[str, Any]:
    return paginate(
        messages,
        params,
        search=lambda m: m.topic,
        sort_keys={
            "topic": lambda m: m.topic,
            "qos": lambda m: m.qos,
            "createdTime": lambda m: created_time(router, m),
            "payload": lambda m: m.payload,
        },
        render=lambda m: retained_document(router, m),
    )


def _retained(router: Router, topic: str) -> Message:
    msg = router.retained.get(topic)
    if msg is None or msg.expired(time.time()):
        raise not_found(f"topicName: no retained message for topic {topic!r}")
    return msg


PageSize = Annotated[int | None, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page")]
PageNo = Annotated[int | None, Query(ge=0, description="Page number, from 0")]


@router.get(
    "/api/retained-msg",
    tags=["retained messages"],
    summary="One retained message (topicName) or a page of them (pageSize, page)",
)
async def retained_messages(
    _claims: Viewer,
    ctx: Ctx,
    topicName: Annotated[str | None, Query(description="The message of one topic")] = None,
    pageSize: PageSize = None,
    page: PageNo = None,
    textSearch: Annotated[str | None, Query(description="Topic contains")] = None,
    sortProperty: Annotated[str | None, Query()] = None,
    sortOrder: Annotated[SortOrder, Query()] = SortOrder.ASC,
) -> dict[str, Any]:
    router_ = ctx.router
    if topicName is not None:
        return retained_document(router_, _retained(router_, topicName))
    params = optional_page(pageSize, page, textSearch, sortProperty, sortOrder, "topicName")
    return _retained_page(router_, _live_retained(router_), params)


@router.get(
    "/api/retained-msg/v2",
    tags=["retained messages"],
    summary="A page of retained messages, with filters",
)
async def retained_messages_v2(
    _claims: Viewer,
    ctx: Ctx,
    pageSize: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)],
    page: Annotated[int, Query(ge=0)],
    textSearch: Annotated[str | None, Query(description="Topic contains")] = None,
    sortProperty: Annotated[str | None, Query()] = None,
    sortOrder: Annotated[SortOrder, Query()] = SortOrder.ASC,
    startTime: Annotated[int | None, Query(description="createdTime >= (ms)")] = None,
    endTime: Annotated[int | None, Query(description="createdTime <= (ms)")] = None,
    topicName: Annotated[str | None, Query(description="Topic contains")] = None,
    qosList: Annotated[list[str] | None, Query()] = None,
    payload: Annotated[str | None, Query(description="Payload (as text) contains")] = None,
) -> dict[str, Any]:
    router_ = ctx.router
    params = PageParams(pageSize, page, textSearch or None, sortProperty or None, sortOrder)
    qos = list_param("qosList", qosList, ("0", "1", "2"))
    topic_part = topicName.casefold() if topicName else None
    payload_part = payload.casefold() if payload else None
    messages = [
        m
        for m in _live_retained(router_)
        if (topic_part is None or topic_part in m.topic.casefold())
        and (qos is None or str(m.qos) in qos)
        and (
            payload_part is None or payload_part in m.payload.decode("utf-8", "replace").casefold()
        )
        and (startTime is None or created_time(router_, m) >= startTime)
        and (endTime is None or created_time(router_, m) <= endTime)
    ]
    return _retained_page(router_, messages, params)


@router.delete(
    "/api/retained-msg",
    tags=["retained messages"],
    summary="Delete the retained message of a topic (at once, stored)",
)
async def delete_retained_message(
    claims: Admin, ctx: Ctx, topicName: Annotated[str, Query(min_length=1)]
) -> None:
    router_ = ctx.router
    _retained(router_, topicName)
    router_.delete_retained(topicName)
    log.info("retained message of %r deleted by admin %s (REST API)", topicName, claims.email)
    await durable(ctx)


# ------------------------------------------------------------------ publish
class PublishPropertiesIn(BaseModel):
    """TBMQ's RestPublishProperties."""

    payloadFormatIndicator: int | None = Field(default=None, ge=0, le=1)
    messageExpiryInterval: int | None = Field(default=None, ge=0, le=0xFFFFFFFF)
    contentType: str | None = None
    responseTopic: str | None = None
    correlationData: str | None = Field(default=None, description="Base64")
    userProperties: dict[str, str] | None = None


class PublishIn(BaseModel):
    """TBMQ's RestPublishRequest."""

    topic: str
    payload: str
    payloadEncoding: str = Field(default="PLAIN", description="PLAIN (UTF-8 text) or BASE64")
    qos: int = Field(default=0, ge=0, le=2)
    retain: bool = False
    properties: PublishPropertiesIn | None = None


def _mqtt_string(field: str, value: str) -> str:
    """A value for an MQTT UTF-8 string field: no U+0000, at most 65535 bytes."""
    if "\x00" in value:
        raise bad_request(f"{field}: must not contain U+0000")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise bad_request(f"{field}: not valid UTF-8") from None
    if size > MAX_STRING_BYTES:
        raise bad_request(f"{field}: {size} bytes, more than {MAX_STRING_BYTES}")
    return value


def _base64(field: str, value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{field}: not valid base64") from None


def max_payload(settings: Settings) -> int:
    """The largest PUBLISH a client may send on any listener."""
    return max(
        settings.tcp_netty_max_payload_size,
        settings.ssl_netty_max_payload_size,
        settings.ws_netty_max_payload_size,
        settings.wss_netty_max_payload_size,
    )


def _properties(body: PublishIn, payload: bytes) -> Properties:
    p = body.properties
    if p is None:
        return EMPTY_PROPERTIES
    if p.payloadFormatIndicator == 1:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request(
                "properties.payloadFormatIndicator: 1 (UTF-8) but the payload is not UTF-8"
            ) from None
    response_topic = None
    if p.responseTopic is not None:
        response_topic = _mqtt_string("properties.responseTopic", p.responseTopic)
        if not validate_topic_name(response_topic):
            raise bad_request(
                f"properties.responseTopic: {p.responseTopic!r} is not a valid topic name"
            )
    correlation = None
    if p.correlationData is not None:
        correlation = _base64("properties.correlationData", p.correlationData)
        if len(correlation) > MAX_STRING_BYTES:
            raise bad_request(f"properties.correlationData: more than {MAX_STRING_BYTES} bytes")
    users = tuple(
        (
            _mqtt_string("properties.userProperties", k),
            _mqtt_string(f"properties.userProperties.{k}", v),
        )
        for k, v in (p.userProperties or {}).items()
    )
    return Properties(
        payload_format_indicator=p.payloadFormatIndicator,
        message_expiry_interval=p.messageExpiryInterval,
        content_type=(
            None if p.contentType is None else _mqtt_string("properties.contentType", p.contentType)
        ),
        response_topic=response_topic,
        correlation_data=correlation,
        user_properties=users,
    )


@router.post(
    "/api/mqtt/publish",
    tags=["publish"],
    summary="Publish a message as the broker",
    responses={202: {"description": "No subscription matched (a retained message is kept)"}},
)
async def publish(body: PublishIn, claims: Admin, ctx: Ctx) -> JSONResponse:
    topic = _mqtt_string("topic", body.topic)
    if not topic:
        raise bad_request("topic: must not be empty")
    if "+" in topic or "#" in topic:
        raise bad_request(f"topic: {topic!r} contains a wildcard (+ or #)")
    if not validate_topic_name(topic):
        raise bad_request(f"topic: {topic!r} is not a valid topic name")
    if topic.startswith("$SYS"):
        raise bad_request("topic: $SYS topics belong to the broker")
    encoding = body.payloadEncoding.strip().upper()
    if encoding == "PLAIN":
        try:
            payload = body.payload.encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request("payload: not valid UTF-8") from None
    elif encoding == "BASE64":
        payload = _base64("payload", body.payload)
    else:
        raise bad_request(f"payloadEncoding: {body.payloadEncoding!r} is not PLAIN or BASE64")
    limit = max_payload(ctx.settings)
    if len(payload) > limit:
        raise bad_request(
            f"payload: {len(payload)} bytes, more than the listeners accept "
            f"(*_NETTY_MAX_PAYLOAD_SIZE = {limit})"
        )
    props = _properties(body, payload)
    now = time.time()
    msg = Message.create(topic, payload, body.qos, body.retain, props, None, now)
    delivered = ctx.router.publish(msg, now)
    log.debug(
        "admin %s published to %r (QoS %d, retain %s): %d subscriber(s)",
        claims.email,
        topic,
        body.qos,
        body.retain,
        delivered,
    )
    await durable(ctx)
    if delivered:
        return JSONResponse({"delivered": delivered, "reasonCode": 0, "message": "Success"})
    return JSONResponse(
        {
            "delivered": 0,
            "reasonCode": REASON_NO_MATCHING_SUBSCRIBERS,
            "message": "No matching subscribers",
        },
        status_code=202,
    )
