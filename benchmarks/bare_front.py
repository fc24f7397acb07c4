"""The floor of a Python HTTP front, for the query benchmark (``--bare-front``).

pyoxigraph behind the plainest HTTP/1.1 server that answers the benchmark's requests: a
thread per connection, keep-alive, GET with ``?query=`` and POST as a form, SPARQL JSON or
N-Triples. None of the endpoint's safety is here: no guard, no time limit, no row or byte
caps, no content negotiation, no cache, no log. Never serve anything with it.

What ``sasci-kg serve`` takes beyond this is the price of its own code per request; what this
takes beyond ``oxigraph serve`` is the price of answering from Python at all.

    python -m benchmarks.bare_front STORE PORT
"""

from __future__ import annotations

import socket
import sys
import threading
from urllib.parse import parse_qs

import pyoxigraph as ox


def _serve(conn: socket.socket, store: ox.Store) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buffer:
                more = conn.recv(65536)
                if not more:
                    return
                buffer += more
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            while len(buffer) < length:
                more = conn.recv(65536)
                if not more:
                    return
                buffer += more
            body, buffer = buffer[:length], buffer[length:]
            form = body.decode() if method == "POST" else target.partition("?")[2]
            result = store.query(parse_qs(form)["query"][0], use_default_graph_as_union=True)
            if isinstance(result, ox.QueryTriples):
                out = ox.serialize(result, format=ox.RdfFormat.N_TRIPLES)
                media_type = b"application/n-triples"
            else:
                out = result.serialize(format=ox.QueryResultsFormat.JSON)
                media_type = b"application/sparql-results+json"
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: " + media_type
                         + b"\r\nContent-Length: " + str(len(out)).encode() + b"\r\n\r\n" + out)


def main() -> None:
    store = ox.Store.read_only(sys.argv[1])
    listener = socket.create_server(("127.0.0.1", int(sys.argv[2])), backlog=128)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve, args=(conn, store), daemon=True).start()


if __name__ == "__main__":
    main()
