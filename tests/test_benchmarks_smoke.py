"""The benchmark suite does not rot: its generator is deterministic and its output, at a tiny
size, validates (evidence checked against the synthetic source texts) and builds, and the
query mix runs on it.

The measurements themselves are not tests: run ``python -m benchmarks.run`` (benchmarks/).
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyoxigraph as ox
import requests
from click.testing import CliRunner
from project import ONTOLOGY, ROOT

from sasci_kg.cli import main

TINY = "3000"


def _generate(out: Path) -> None:
    subprocess.run([sys.executable, "-m", "benchmarks.generate", "--triples", TINY,
                    "--out", str(out)], cwd=ROOT, check=True, capture_output=True)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generator_is_deterministic_and_its_facts_validate_build_and_answer(
        tmp_path: Path) -> None:
    _generate(tmp_path / "a")
    _generate(tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")

    runner = CliRunner()
    common = ["--data", str(tmp_path / "a" / "data"), "--ontology", str(ONTOLOGY),
              "--sources", str(tmp_path / "a" / "sources")]
    result = runner.invoke(main, ["validate", *common])
    assert result.exit_code == 0, result.output
    assert "evidence not checked" not in result.output  # the synthetic texts were used

    store = tmp_path / "store"
    result = runner.invoke(main, ["load", "--no-shacl", *common, "--store", str(store)])
    assert result.exit_code == 0, result.output

    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.mix import MIX
    finally:
        sys.path.remove(str(ROOT))
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    opened = ox.Store.read_only(str(store))
    for query in MIX:
        opened.query(query.sparql(manifest, 0), use_default_graph_as_union=True)
    assert len(opened) > 2000


def test_the_bare_front_answers_the_mix_as_pyoxigraph_does(store_path: Path) -> None:
    """``--bare-front``'s floor answers GET and POST with pyoxigraph's own serialisation."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.bare_front", str(store_path),
                               str(port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.05)
        store = ox.Store.read_only(str(store_path))
        select = "SELECT ?s WHERE { ?s ?p ?o } ORDER BY ?s LIMIT 3"
        expected = store.query(select, use_default_graph_as_union=True)
        assert isinstance(expected, ox.QuerySolutions)
        want = expected.serialize(format=ox.QueryResultsFormat.JSON)
        url = f"http://127.0.0.1:{port}/query"
        with requests.Session() as session:  # one keep-alive connection for all three
            assert session.post(url, data={"query": select}, timeout=10).content == want
            assert session.get(url, params={"query": select}, timeout=10).content == want
            graph = session.post(url, data={"query": "CONSTRUCT WHERE { ?s ?p ?o }"}, timeout=10)
        assert graph.headers["Content-Type"] == "application/n-triples"
        assert len(graph.content.splitlines()) == len(store)
    finally:
        server.kill()
        server.wait()
