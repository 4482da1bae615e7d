"""A minimal asyncio MQTT 3.1.1 / 5 client for the soak (bench/soak), nothing more.

It speaks just what the soak needs: CONNECT (clean or persistent, will, session expiry,
receive maximum), SUBSCRIBE / UNSUBSCRIBE, PUBLISH at QoS 0 and 1 both ways (incoming
QoS 1 is acknowledged at once), PINGREQ and DISCONNECT, over TCP or TLS. It keeps no
state across connections: persistence is the broker's job, which is what is being tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Callable

OnMessage = Callable[[str, bytes, int, bool], None]  # topic, payload, qos, dup

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

#: What can go wrong on a connection (the broker closing it, a reset, TLS, a timeout).
NET_ERRORS = (OSError, EOFError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError)


class MqttError(Exception):
    """A protocol-level refusal (CONNACK / SUBACK / PUBACK failure) or a closed client."""


# --------------------------------------------------------------------------- codec


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def mqtt_str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def connect_packet(
    client_id: str,
    version: int = 5,
    *,
    clean: bool = True,
    keepalive: int = 60,
    session_expiry: int | None = None,
    receive_max: int | None = None,
    will: tuple[str, bytes, int] | None = None,
) -> bytes:
    flags = 0x02 if clean else 0
    if will is not None:
        flags |= 0x04 | (will[2] << 3)
    body = mqtt_str("MQTT") + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == 5:
        props = b""
        if session_expiry is not None:
            props += b"\x11" + struct.pack("!I", session_expiry)
        if receive_max is not None:
            props += b"\x21" + struct.pack("!H", receive_max)
        body += varint(len(props)) + props
    body += mqtt_str(client_id)
    if will is not None:
        if version == 5:
            body += b"\x00"  # no will properties
        body += mqtt_str(will[0]) + mqtt_str(will[1])
    return packet(CONNECT << 4, body)


def subscribe_packet(pid: int, filters: list[tuple[str, int]], version: int) -> bytes:
    body = struct.pack("!H", pid) + (b"\x00" if version == 5 else b"")
    for topic, qos in filters:
        body += mqtt_str(topic) + bytes([qos])
    return packet(0x82, body)


def unsubscribe_packet(pid: int, filters: list[str], version: int) -> bytes:
    body = struct.pack("!H", pid) + (b"\x00" if version == 5 else b"")
    for topic in filters:
        body += mqtt_str(topic)
    return packet(0xA2, body)


def publish_packet(
    topic: str, payload: bytes, qos: int, pid: int, version: int, dup: bool = False
) -> bytes:
    body = mqtt_str(topic)
    if qos:
        body += struct.pack("!H", pid)
    if version == 5:
        body += b"\x00"
    return packet((PUBLISH << 4) | (qos << 1) | (0x08 if dup and qos else 0), body + payload)


def puback_packet(pid: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", pid)


PINGREQ_PACKET = b"\xc0\x00"


def disconnect_packet(version: int, reason: int = 0) -> bytes:
    if version == 5 and reason:
        return bytes([DISCONNECT << 4, 1, reason])
    return bytes([DISCONNECT << 4, 0])


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(first byte, body) of the next packet; IncompleteReadError at EOF."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:
            raise MqttError("malformed remaining length from the broker")
    return first, (await reader.readexactly(length) if length else b"")


def skip_props(body: bytes, i: int) -> int:
    """Index just past a v5 property block starting at body[i]."""
    length, shift = 0, 0
    while True:
        byte = body[i]
        i += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return i + length
        shift += 7


def parse_publish(first: int, body: bytes, version: int) -> tuple[str, bytes, int, int, bool]:
    """(topic, payload, qos, packet id, dup) of a PUBLISH."""
    qos = (first >> 1) & 3
    (tlen,) = struct.unpack_from("!H", body)
    topic = body[2 : 2 + tlen].decode()
    i = 2 + tlen
    pid = 0
    if qos:
        (pid,) = struct.unpack_from("!H", body, i)
        i += 2
    if version == 5:
        i = skip_props(body, i)
    return topic, body[i:], qos, pid, bool(first & 0x08)


# --------------------------------------------------------------------------- client


def set_linger0(writer: asyncio.StreamWriter) -> None:
    """Make the next close send a TCP RST (an abrupt disconnect)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Client:
    """One MQTT connection. ``on_message(topic, payload, qos, dup)`` sees every PUBLISH."""

    def __init__(self, version: int = 5, on_message: OnMessage | None = None) -> None:
        self.version = version
        self.on_message = on_message
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.session_present = False
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.server_disconnect: int | None = None  # v5 DISCONNECT reason from the broker
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._pid = 0
        self._tasks: list[asyncio.Task[None]] = []

    # ---------------------------------------------------------------- connection
    async def connect(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        clean: bool = True,
        keepalive: int = 60,
        session_expiry: int | None = None,
        receive_max: int | None = None,
        will: tuple[str, bytes, int] | None = None,
        ssl_ctx: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        rcvbuf: int | None = None,
        ping: bool = False,
        read: bool = True,
    ) -> None:
        """Connect and wait for CONNACK (MqttError if refused). ``ping`` sends PINGREQ
        every keepalive/2; ``read=False`` starts no reader (the caller reads, or not)."""
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(timeout):
                if rcvbuf:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                    sock.setblocking(False)
                    await asyncio.get_running_loop().sock_connect(sock, (host, port))
                    self.reader, self.writer = await asyncio.open_connection(
                        sock=sock,
                        ssl=ssl_ctx,
                        server_hostname="localhost" if ssl_ctx else None,
                    )
                else:
                    self.reader, self.writer = await asyncio.open_connection(
                        host, port, ssl=ssl_ctx, server_hostname="localhost" if ssl_ctx else None
                    )
                self.writer.write(
                    connect_packet(
                        client_id,
                        self.version,
                        clean=clean,
                        keepalive=keepalive,
                        session_expiry=session_expiry,
                        receive_max=receive_max,
                        will=will,
                    )
                )
                first, body = await read_packet(self.reader)
        except BaseException:
            self._close_transport()
            if sock is not None and self.writer is None:
                sock.close()
            raise
        if first >> 4 != CONNACK or len(body) < 2:
            self._close_transport()
            raise MqttError(f"expected CONNACK, got packet type {first >> 4}")
        if body[1]:
            self._close_transport()
            raise MqttError(f"CONNACK refused {body[1]:#04x}")
        self.session_present = bool(body[0] & 1)
        if read:
            self._tasks.append(asyncio.create_task(self._read_loop()))
        if ping and keepalive:
            self._tasks.append(asyncio.create_task(self._pinger(keepalive)))

    def _close_transport(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.transport.abort()

    async def _read_loop(self) -> None:
        assert self.reader is not None and self.writer is not None
        reason = "eof"
        try:
            while True:
                first, body = await read_packet(self.reader)
                kind = first >> 4
                if kind == PUBLISH:
                    topic, payload, qos, pid, dup = parse_publish(first, body, self.version)
                    if qos == 1 and not self.writer.is_closing():
                        self.writer.write(puback_packet(pid))
                    if self.on_message is not None:
                        self.on_message(topic, payload, qos, dup)
                elif kind in (PUBACK, SUBACK, UNSUBACK):
                    (pid,) = struct.unpack_from("!H", body)
                    fut = self._pending.pop(pid, None)
                    if kind == PUBACK:
                        code = body[2] if len(body) > 2 else 0
                    elif kind == SUBACK:
                        i = skip_props(body, 2) if self.version == 5 else 2
                        code = max(body[i:]) if len(body) > i else 0
                    else:
                        code = 0
                    if fut is not None and not fut.done():
                        fut.set_result(code)
                elif kind == DISCONNECT:
                    self.server_disconnect = body[0] if body else 0
                    reason = f"server DISCONNECT {self.server_disconnect:#04x}"
                    break
        except asyncio.CancelledError:
            reason = "closed by us"
            raise
        except asyncio.IncompleteReadError:
            reason = "eof"
        except (OSError, ssl.SSLError) as exc:
            reason = type(exc).__name__
        except (MqttError, ValueError, struct.error, IndexError, UnicodeDecodeError) as exc:
            reason = f"bad packet from broker: {exc!r}"
        finally:
            self._finish(reason)

    def _finish(self, reason: str) -> None:
        if not self.closed.is_set():
            self.close_reason = self.close_reason or reason
            self.closed.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(MqttError(f"connection closed ({reason})"))
        self._pending.clear()
        self._close_transport()

    async def _pinger(self, keepalive: int) -> None:
        with contextlib.suppress(asyncio.CancelledError, *NET_ERRORS):
            while not self.closed.is_set():
                await asyncio.sleep(keepalive / 2)
                self.send(PINGREQ_PACKET)

    # ---------------------------------------------------------------- requests
    def send(self, data: bytes) -> None:
        if self.closed.is_set() or self.writer is None or self.writer.is_closing():
            raise MqttError(f"connection closed ({self.close_reason or 'closing'})")
        self.writer.write(data)

    def _new_pid(self) -> int:
        for _ in range(65535):
            self._pid = self._pid % 65535 + 1
            if self._pid not in self._pending:
                return self._pid
        raise MqttError("no free packet id")

    async def _request(self, build: Callable[[int], bytes], timeout: float) -> int:
        pid = self._new_pid()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[pid] = fut
        try:
            self.send(build(pid))
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pending.pop(pid, None)

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float = 10.0) -> int:
        """The highest SUBACK code (>= 0x80 is a refusal)."""
        v = self.version
        return await self._request(lambda pid: subscribe_packet(pid, filters, v), timeout)

    async def unsubscribe(self, filters: list[str], timeout: float = 10.0) -> int:
        v = self.version
        return await self._request(lambda pid: unsubscribe_packet(pid, filters, v), timeout)

    async def publish(self, topic: str, payload: bytes, qos: int = 0, timeout: float = 10.0) -> int:
        """QoS 0: sent; QoS 1: the PUBACK reason code (0 success, 0x10 no subscribers)."""
        if qos == 0:
            self.send(publish_packet(topic, payload, 0, 0, self.version))
            return 0
        v = self.version
        return await self._request(lambda pid: publish_packet(topic, payload, 1, pid, v), timeout)

    async def drain(self) -> None:
        if self.writer is not None and not self.closed.is_set():
            await self.writer.drain()

    # ---------------------------------------------------------------- endings
    async def disconnect(self, reason: int = 0) -> None:
        """A clean DISCONNECT (v5 ``reason`` 0x04 asks for the will), then close."""
        with contextlib.suppress(MqttError, *NET_ERRORS):
            self.send(disconnect_packet(self.version, reason))
            assert self.writer is not None
            async with asyncio.timeout(2):
                await self.writer.drain()
        self.close_reason = self.close_reason or "closed by us"
        await self._stop_tasks()
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.writer.wait_closed()
        self._finish("closed by us")

    async def abort(self, rst: bool = True) -> None:
        """Drop the connection without DISCONNECT: a TCP RST, or a plain FIN."""
        self.close_reason = self.close_reason or "closed by us"
        if self.writer is not None:
            if rst:
                set_linger0(self.writer)
                self.writer.transport.abort()
            else:
                self.writer.close()
        await self._stop_tasks()
        self._finish("closed by us")

    async def _stop_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
