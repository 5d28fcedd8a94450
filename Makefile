# Duely. `make run` starts everything; `make test` runs the tests. Both install what is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test lint bench clean-data system-deps

$(INSTALLED): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

# Debian packages used when present: bubblewrap isolates judged code, chromium runs the browser test.
system-deps:
	@command -v bwrap >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    (apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap chromium >/dev/null 2>&1) || \
	    echo "note: could not install bubblewrap/chromium; judging runs without bwrap and the browser test is skipped"; }

run: $(INSTALLED) system-deps
	$(PY) -m duely.run $(ARGS)

test: $(INSTALLED) system-deps
	XDG_RUNTIME_DIR= $(PY) -m pytest $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

clean-data:
	rm -rf .duely
