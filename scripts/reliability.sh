#!/usr/bin/env bash
# The long reliability run: every fuzz, hostile-input, load and fault test (pytest -m
# reliability) at its long size — thousands of fuzz cases per target, 2 minutes of load,
# 30 random kills, 60 s of restarts — then a summary of the figures.
#
#   scripts/reliability.sh                  # the long run (about 25 minutes on 2 cores)
#   SASCI_KG_LONG=0 scripts/reliability.sh  # the CI sizes, with the same summary
#   scripts/reliability.sh -k load          # extra arguments go to pytest
#
# Needs Debian's wrk for the load test (a threads client stands in without it) and installs
# atheris into the venv for the coverage-guided facts fuzzer. The figures are appended as JSON
# lines to $SASCI_KG_RELIABILITY_REPORT (default: .sasci-kg/reliability-report.jsonl, which git
# ignores); RELIABILITY.md quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."

python=.venv/bin/python
if [ ! -x "$python" ]; then
  python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'
fi
if ! command -v wrk >/dev/null 2>&1; then
  echo "note: wrk is not installed (apt-get install -y wrk); the load test uses its threads client" >&2
fi
if ! "$python" -c "import atheris" 2>/dev/null; then
  .venv/bin/pip install -q atheris || echo "note: atheris could not be installed; its test is skipped" >&2
fi

export SASCI_KG_LONG="${SASCI_KG_LONG:-1}"
export SASCI_KG_RELIABILITY_REPORT="${SASCI_KG_RELIABILITY_REPORT:-$PWD/.sasci-kg/reliability-report.jsonl}"
mkdir -p "$(dirname "$SASCI_KG_RELIABILITY_REPORT")"
: > "$SASCI_KG_RELIABILITY_REPORT"

status=0
"$python" -m pytest -m reliability -p no:cacheprovider -q "$@" || status=$?

"$python" - "$SASCI_KG_RELIABILITY_REPORT" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
size = "long" if any(r.get("long") for r in rows) else "CI"
print(f"\n== reliability figures ({size} sizes) ==")
for row in rows:
    name = row["test"]
    if name in ("fuzz-facts", "fuzz-http", "hostile"):
        cases = row.get("cases", {})
        print(f"{name}: {row.get('total', sum(cases.values()))} cases")
        for target, n in cases.items():
            print(f"    {n:>7}  {target}")
    elif name == "load":
        fast, slow = row["fast"], row["slow"]
        rss = row["http_worker_rss_kib"]
        print(f"load ({fast['tool']}, {row['seconds']} s): fast {fast['requests']} requests "
              f"({fast['requests_per_s']}/s, {fast['connections']} connections) "
              f"p50 {fast['p50_ms']} ms p99 {fast['p99_ms']} ms statuses {fast['statuses']}; "
              f"slow {slow['requests']} stopped ({slow['statuses']}, p50 {slow['p50_ms']} ms); "
              f"HTTP worker RSS {rss['before']} -> {rss['after']} KiB")
    elif name == "faults":
        print(f"faults: {row['total']} survived")
        for fault, n in row["survived"].items():
            print(f"    {n:>7}  {fault}")
    else:
        print(f"{name}: " + json.dumps({k: v for k, v in row.items()
                                        if k not in ("test", "long", "at")}))
EOF
exit $status
