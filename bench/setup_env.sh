#!/usr/bin/env bash
# Builds the benchmark's own virtualenv, .venv-bench: expc (editable, with its test extras)
# plus the peer tools it is compared against (TransformerLens, nnsight). The peers live only
# here, never in pyproject's dependencies. torch is installed first and pinned; the peers are
# installed under constraints that pin torch and transformers to what is already there, and
# the script checks afterwards that neither moved.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV_BENCH:-.venv-bench}"
PIP="$VENV/bin/python -m pip install -q -c constraints.txt"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
echo '*' > "$VENV/.gitignore"  # keep the environment out of git without touching the repo's ignores
$PIP torch==2.13.0
$PIP -e '.[test]'

versions() {
  "$VENV/bin/python" -c 'import torch, transformers; print(torch.__version__, transformers.__version__)'
}
before="$(versions)"
pins="$(mktemp)"
trap 'rm -f "$pins"' EXIT
"$VENV/bin/python" -c 'import torch, transformers; print(f"torch=={torch.__version__}"); print(f"transformers=={transformers.__version__}")' > "$pins"
$PIP -c "$pins" "transformer-lens>=4,<5" "nnsight>=0.8,<0.9"
after="$(versions)"
if [ "$before" != "$after" ]; then
  echo "installing the peers changed torch/transformers: $before -> $after" >&2
  exit 1
fi
"$VENV/bin/python" -c 'import transformer_lens, nnsight; print("peers ok:", transformer_lens.__name__, nnsight.__version__)'
echo "torch/transformers unchanged: $after"
