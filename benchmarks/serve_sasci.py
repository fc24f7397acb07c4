"""Start ``sasci_kg.web.server.run_server`` on a store and port (every safety feature at its
default) — what ``sasci-kg serve`` does, for when the CLI command is not there yet.

    python -m benchmarks.serve_sasci STORE PORT
"""

from __future__ import annotations

import sys
from pathlib import Path

from sasci_kg.web.config import ServerConfig
from sasci_kg.web.server import run_server


def main() -> None:
    store, port = sys.argv[1], int(sys.argv[2])
    run_server(ServerConfig(store=Path(store), port=port, log_level="warning"))


if __name__ == "__main__":
    main()
