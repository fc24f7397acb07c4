"""A tiny misbehaving SPARQL engine on loopback, for the remote-backend fault tests.

:class:`BadEngine` answers every request the way its current :class:`Misbehaviour` says: slow,
silent, dripping, garbage, cut short, the wrong type, an error status, a reset — or properly.
It counts the connections it is still serving, so a test can check that a client which gave
up left nothing hanging on either side.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD_RESULT = json.dumps({"head": {"vars": ["n"]}, "results": {"bindings": [
    {"n": {"type": "literal", "value": "3",
           "datatype": "http://www.w3.org/2001/XMLSchema#integer"}}]}}).encode()


@dataclass(frozen=True)
class Misbehaviour:
    """How to answer: ``kind`` and its parameters."""

    kind: str = "ok"  # ok, slow, silent, drip, garbage, truncated, type, status, reset, close
    delay: float = 0.0
    status: int = 200
    body: bytes = GOOD_RESULT
    content_type: str = "application/sparql-results+json"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._answer()

    def _answer(self) -> None:
        engine = self.server.engine
        how = engine.misbehaviour
        with engine.lock:
            engine.active += 1
            engine.requests += 1
        try:
            self._misbehave(how)
        except OSError:
            pass  # the client gave up: exactly what a timeout should do
        finally:
            with engine.lock:
                engine.active -= 1

    def _misbehave(self, how: Misbehaviour) -> None:
        if how.kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
            return
        if how.kind == "close":
            self.connection.close()
            return
        if how.kind in ("slow", "silent"):
            self.server.engine.stopping.wait(how.delay if how.kind == "slow" else 3600)
        body = how.body
        self.send_response(how.status)
        if how.content_type:
            self.send_header("Content-Type", how.content_type)
        length = len(body) + (1000 if how.kind == "truncated" else 0)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if how.kind == "drip":
            for i in range(len(body)):
                if self.server.engine.stopping.wait(how.delay):
                    return
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
            return
        self.wfile.write(body)
        self.wfile.flush()
        if how.kind == "truncated":
            self.connection.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    engine: BadEngine


class BadEngine:
    """The engine on 127.0.0.1 (a free port); a context manager that stops it."""

    def __init__(self) -> None:
        self.misbehaviour = Misbehaviour()
        self.lock = threading.Lock()
        self.active = 0
        self.requests = 0
        self.stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.engine = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/sparql"

    def __enter__(self) -> BadEngine:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def wait_idle(self, seconds: float) -> bool:
        """True once no request is being answered (within ``seconds``)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                if self.active == 0:
                    return True
            time.sleep(0.02)
        return False
