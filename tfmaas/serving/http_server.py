"""The HTTP/1.1 transport of the REST port: a bounded pool of workers, one deadline per request,
strict framing. What a request means is `rest.RestApi`'s business.

A worker serves one connection at a time, so the pool bounds threads however many connections
arrive: one that finds every worker busy is answered 503 and closed. Each request, from the
wait for its first byte to its last body byte, must arrive within --rest_api_timeout_in_ms, so
an idle or trickling client frees its worker by then. A body is read only with a well-formed
Content-Length under MAX_BODY_BYTES; anything else is refused before a byte of it is read, and
the connection is closed, since its remaining bytes can no longer be framed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import socket
import threading
import time
from concurrent import futures
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from tfmaas.serving.rest import MAX_BODY_BYTES, RestApi

log = logging.getLogger(__name__)

_DIGITS = re.compile(r"[0-9]{1,19}")


class FramingError(Exception):
    """A request whose body cannot be delimited safely; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def body_length(method: str, headers: Message) -> int:
    """How many body bytes follow the headers, or FramingError. The value itself is never
    echoed back: it is the client's text."""
    if headers.get("Transfer-Encoding") is not None:
        raise FramingError(400, "Transfer-Encoding is not supported; send Content-Length")
    values = headers.get_all("Content-Length") or []
    if not values:
        if method == "POST":
            raise FramingError(400, "a POST needs a Content-Length header")
        return 0
    if len(values) > 1 or not _DIGITS.fullmatch(values[0]):
        raise FramingError(400, "Content-Length must be one decimal number of bytes")
    length = int(values[0])
    if length > MAX_BODY_BYTES:
        raise FramingError(413, f"the request body is over the limit of {MAX_BODY_BYTES} bytes")
    return length


def _json_answer(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


_BUSY = _json_answer(503, "Service Unavailable", "every REST worker is busy; retry later")


class _DeadlineReader(io.RawIOBase):
    """Socket reads against one deadline for a whole request rather than a timeout per read,
    which a client sending a byte at a time would never run into."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline = float("inf")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request took longer than --rest_api_timeout_in_ms")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _PooledHttpServer

    def setup(self) -> None:
        super().setup()
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self._reader.deadline = time.monotonic() + self.server.timeout_s
        self.server.connection_idle(self.connection, True)
        try:
            super().handle_one_request()
        finally:
            self.server.connection_idle(self.connection, False)

    def parse_request(self) -> bool:
        self.server.connection_idle(self.connection, False)  # its request line is in
        return super().parse_request()

    def _respond(self, method: str) -> None:
        try:
            length = body_length(method, self.headers)
        except FramingError as exc:
            self.close_connection = True
            status, ctype, data = RestApi._json(exc.status, {"error": exc.message})
        else:
            body = self.rfile.read(length) if length else b""
            if len(body) < length:
                self.close_connection = True
                return  # the client went away mid-body; nobody to answer
            status, ctype, data = self.server.api.handle(method, self.path, body)
        if self.server.draining:
            self.close_connection = True  # the client's next call goes to another replica
        self.connection.settimeout(self.server.timeout_s)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._respond("GET")

    def do_POST(self) -> None:
        self._respond("POST")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _PooledHttpServer(HTTPServer):
    allow_reuse_address = True
    request_queue_size = 128  # accept a burst and answer it 503, rather than drop SYNs

    def __init__(
        self, address: tuple[str, int], api: RestApi, *, threads: int, timeout_s: float
    ) -> None:
        self.api = api
        self.timeout_s = timeout_s
        self.draining = False
        self._free_workers = threading.BoundedSemaphore(threads)
        self._pool = futures.ThreadPoolExecutor(threads, thread_name_prefix="rest")
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, bool] = {}  # open connection -> idle
        self._all_closed = threading.Condition(self._lock)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._free_workers.acquire(blocking=False):
            self._refuse(request)
            return
        with self._lock:
            self._connections[request] = True
        self._pool.submit(self._serve, request, client_address)

    def _refuse(self, request: socket.socket) -> None:
        with contextlib.suppress(OSError):  # a client that left needs no answer
            request.settimeout(1.0)
            request.sendall(_BUSY)
        self.shutdown_request(request)

    def _serve(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._lock:
                self._connections.pop(request, None)
                self._all_closed.notify_all()
            self._free_workers.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("REST connection from %s failed", client_address, exc_info=True)

    def connection_idle(self, connection: socket.socket, idle: bool) -> None:
        with self._lock:
            if connection in self._connections:
                self._connections[connection] = idle
            if idle and self.draining:
                _hang_up(connection)

    def drain(self, grace: float) -> None:
        """Answer the requests in flight (for up to `grace` seconds), then close everything."""
        with self._lock:
            self.draining = True
            for connection, idle in self._connections.items():
                if idle:
                    _hang_up(connection)
            self._all_closed.wait_for(lambda: not self._connections, timeout=grace)
            for connection in self._connections:
                _hang_up(connection)
        self._pool.shutdown(wait=False)


def _hang_up(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by its client
        connection.shutdown(socket.SHUT_RDWR)  # wakes a worker blocked reading it


class RestServer:
    def __init__(
        self, api: RestApi, host: str, port: int, *, threads: int, timeout_s: float
    ) -> None:
        self._httpd = _PooledHttpServer((host, port), api, threads=threads, timeout_s=timeout_s)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.1,), name="rest-server", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop_accepting(self) -> None:
        """Close the port; requests on open connections are still answered."""
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def stop(self, grace: float = 0.0) -> None:
        self.stop_accepting()
        self._httpd.drain(grace)
