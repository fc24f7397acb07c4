"""The code stays lint- and type-clean: ruff over the package, the tests and the benchmarks,
mypy --strict over the package (settings in pyproject.toml). Both come with the test extras."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", "--no-cache", "src", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    result = _run("mypy", "--strict", "--no-incremental", "src/sasci_kg")
    assert result.returncode == 0, result.stdout + result.stderr


# Imported only inside ``try: … except ImportError`` (a fallback when present).
OPTIONAL_IMPORTS = ("cairosvg",)


def test_every_module_the_package_imports_is_a_declared_dependency() -> None:
    """A plain ``pip install .`` must be enough to run everything in ``src``: a module that
    only arrives with the test extras (h11 came in through them once) fails here."""
    import ast
    import importlib.metadata
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {re.split(r"[<>=!~ \[;]", req, maxsplit=1)[0].lower().replace("_", "-")
                for req in project["dependencies"]}
    providers = importlib.metadata.packages_distributions()
    missing = set()
    for path in (ROOT / "src" / "sasci_kg").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("sasci_kg", *OPTIONAL_IMPORTS):
                    continue
                dists = {d.lower().replace("_", "-") for d in providers.get(top, [top])}
                if not dists & declared:
                    missing.add(f"{path.relative_to(ROOT)}: {top} ({', '.join(sorted(dists))})")
    assert not missing, "imported but not in [project] dependencies:\n" + "\n".join(
        sorted(missing))
