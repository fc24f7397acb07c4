"""The server's log handler: request threads only queue their lines; a thread writes them."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time

from sasci_kg.web.server import BatchedHandler


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def _wait_for(stream: io.StringIO, text: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while text not in stream.getvalue():
        assert time.monotonic() < deadline, stream.getvalue()
        time.sleep(0.01)


def test_lines_arrive_in_order_within_the_interval_and_warnings_at_once() -> None:
    stream = io.StringIO()
    handler = BatchedHandler(stream, interval=0.2)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = _logger(handler, "test.batched.order")
    words = ["a"]
    log.info("first %s", words)
    words.append("b")  # the line keeps the argument as it was when logged
    log.info("second")
    _wait_for(stream, "second")
    assert stream.getvalue() == "INFO first ['a']\nINFO second\n"
    log.info("third")
    log.warning("fourth")  # written before warning() returns, with the line before it
    assert stream.getvalue().endswith("INFO third\nWARNING fourth\n")


def test_a_forked_process_writes_its_own_lines_once() -> None:
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    handler = BatchedHandler(stream, interval=0.05)
    handler.setFormatter(logging.Formatter("%(process)d %(message)s"))
    log = _logger(handler, "test.batched.fork")
    log.info("before the fork")
    handler.flush()
    pid = os.fork()
    if pid == 0:  # the child: a writer thread of its own writes its line
        log.info("from the child")
        time.sleep(0.5)
        os._exit(0)
    os.waitpid(pid, 0)
    handler.flush()
    stream.close()
    with os.fdopen(read_end) as lines:
        text = lines.read()
    assert text.count("before the fork") == 1
    assert f"{pid} from the child" in text


def test_what_is_left_is_written_at_exit() -> None:
    code = (
        "import logging, sys\n"
        "from sasci_kg.web.server import BatchedHandler\n"
        "handler = BatchedHandler(sys.stderr, interval=60)\n"
        "log = logging.getLogger('x'); log.addHandler(handler); log.setLevel('INFO')\n"
        "log.info('last words')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert "last words" in done.stderr
