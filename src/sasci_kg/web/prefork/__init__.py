"""The prefork server (``--server prefork``): each HTTP process runs its own queries, one
request at a time, and is itself the process that is killed when a query overruns.

Why. Under granian a light query crosses three processes on two cores — granian's worker,
then a query process over a pipe, and back — and that hop (pickling, two wake-ups, request
threads handing the GIL to each other) cost more CPU than the query. Here the request is read,
run and answered by one single-threaded process (``benchmarks/README.md``, session 5).

What keeps it safe:

- **The supervisor** (the ``serve`` process) binds the socket, builds the app once, forks the
  workers and keeps a duplicate of every open connection (each worker hands it over when it
  accepts one). It replaces a worker that dies. If the worker died in the middle of a request,
  the supervisor answers that request on its duplicate: 400 when the query killed the parser,
  500 otherwise, 504 when it had to kill a worker past its deadline.
- **Time limits**: :class:`~sasci_kg.local_runner.Watchdog` (a thread of the worker: pyoxigraph
  releases the GIL) answers 504 itself when a query outlives its limit and ends the process;
  a worker that holds the GIL past the deadline plus :data:`.supervisor.KILL_GRACE` is
  SIGKILLed by the supervisor, which answers 504.
- **Memory**: each worker has the address-space limit of a query process.
- **Idle connections** go back to the supervisor: a worker keeps its keep-alive connection
  only while no other client is waiting, so a few idle clients cannot hold every worker.
  The supervisor watches idle connections and hands one to a free worker when it has a request.
- **Slow senders**: a worker is given a request only once it is whole (or one it refuses at
  once: a broken head, a declared body over the limit). The supervisor looks at a request
  still arriving with ``MSG_PEEK`` while it fits in :data:`.http.PEEK_BYTES`; one that does
  not, or has a chunked body, or waits for ``100 Continue`` (sent by the supervisor), it
  reads into memory until it is whole (:class:`.http._Gathering`; at most
  :data:`.supervisor.GATHER_BUDGET` bytes in all, then 503), and hands it over with its
  bytes in a memfd. Each request must be in within :data:`.worker.READ_TIMEOUT` (then 408).
- **Slow readers**: a worker sends what the socket takes at once; the rest of a larger
  answer (in a memfd, or a download's own file) goes to the supervisor, which sends it as
  the client reads (:class:`.outbox._Outbox`), so a client reading slowly holds no worker.
  (Except behind a pipelined request, or past :data:`.outbox.HANDOVER_BUDGET`: then the
  worker sends it, within :data:`.worker.SEND_TIMEOUT`.) The supervisor's own refusals never
  make it wait (:class:`.supervisor._Lingering`).
- **Turns**: a request the supervisor hands over goes before a worker's own keep-alive
  connection, and while requests queue a worker gives its connection back after each answer,
  so clients that never pause cannot keep the others waiting.

Plain HTTP/1.1 requests are read here; anything unusual (chunked bodies, ``Expect:
100-continue``, obs-fold, …) by h11. The WSGI app is the same as under granian. A plain query
request (``/sparql`` or ``/query``) is answered by the app's lean route straight from the
parsed request, without a WSGI environ or the middleware, and its log line and answer-cache
record are written once the answer is sent (:meth:`.worker._Worker._answer_lean`): after an
idle spell each step of a request costs several times its warm time, and a light query
is ~1 ms.

The modules: :mod:`.http` (reading and writing HTTP/1.1), :mod:`.slots` (the shared memory
between the supervisor and its workers), :mod:`.outbox` (sending an answer, and handing the
rest to the supervisor), :mod:`.worker` and :mod:`.supervisor`.
"""

from __future__ import annotations

from .supervisor import Supervisor, default_processes, run_prefork
from .worker import WORKER_NAME

__all__ = ["WORKER_NAME", "Supervisor", "default_processes", "run_prefork"]
