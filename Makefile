# Duely. `make run` starts everything; `make test` runs the tests. Both install what is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
# Stamps: what the server needs (make run), and that plus the development tools (make test).
# Changing requirements.txt or pyproject.toml reinstalls both; requirements-dev.txt only the tools.
INSTALLED_RUN := $(VENV)/.installed-run
INSTALLED_DEV := $(VENV)/.installed-dev

.PHONY: run test lint typecheck clean-data system-deps-run system-deps-test

# The pinned requirements, then duely itself in editable mode (no dependencies of its own to
# resolve: they are the pins above), so everything imports `duely` without sys.path edits.
$(INSTALLED_RUN): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	@touch $@

$(INSTALLED_DEV): $(INSTALLED_RUN) requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	@touch $@

# Debian packages used when present: bubblewrap isolates judged code (run and tests), chromium
# runs the browser test, nginx-light the test of docs/nginx.conf. Installed when missing and we
# are root with apt; otherwise a note.
APT_INSTALL = DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
define ensure_debian
	@missing=""; for cmd in $(1); do command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$cmd"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $(2)"; apt-get update -qq >/dev/null 2>&1; $(APT_INSTALL) $(2) >/dev/null 2>&1 || \
	    echo "note: could not install $(2)"; \
	  else echo "note: missing$$missing ($(2)); $(3)"; fi; \
	fi
endef

system-deps-run:
	$(call ensure_debian,bwrap,bubblewrap,judging falls back to rlimits without filesystem isolation)

system-deps-test: system-deps-run
	$(call ensure_debian,chromium,chromium,the browser test will be skipped)
	$(call ensure_debian,nginx,nginx-light,the nginx test will be skipped)

run: $(INSTALLED_RUN) system-deps-run
	$(PY) -m duely.run $(ARGS)

test: $(INSTALLED_DEV) system-deps-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	XDG_RUNTIME_DIR= $(PY) -m pytest $(PYTEST_ARGS)

lint: $(INSTALLED_DEV)
	$(VENV)/bin/ruff check .

typecheck: $(INSTALLED_DEV)
	$(VENV)/bin/mypy

clean-data:
	rm -rf .duely
