"""Query processes without a network: the second line behind the guard's SERVICE refusal.

pyoxigraph runs SERVICE (and LOAD) itself, over HTTP, and has no switch to turn them off. The
guard refuses them by reading the query as the engine does; where the two readers differ, a
call got through (RELIABILITY.md lists four such ways, each closed). A process in a network
namespace of its own has no interface but a loopback that is down: whatever the guard
misses, the engine can reach nothing, not even this machine.

Linux only, and only where the kernel lets this process make the namespace: root, or
unprivileged user namespaces (a container's seccomp profile may forbid both). Elsewhere the
guard stands alone, and :func:`take_offline` says so.
"""

from __future__ import annotations

import ctypes
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def take_offline() -> bool:
    """Move this process into a network namespace of its own (with a user namespace too,
    when that is what lets an unprivileged process make one); whether it could.

    Call it while the process has one thread (right after fork): the kernel refuses a user
    namespace to a process with several. Sockets open before keep working (a listener
    accepts, connections answer); new ones reach nothing.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    unshare = getattr(libc, "unshare", None)
    if unshare is None:
        return False
    return any(unshare(flags) == 0 for flags in (CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET))
