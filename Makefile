# Duely. `make run` starts everything; `make test` runs the tests. Both install what is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test lint clean-data system-deps-run system-deps-test

$(INSTALLED): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
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

run: $(INSTALLED) system-deps-run
	$(PY) -m duely.run $(ARGS)

test: $(INSTALLED) system-deps-test
	$(VENV)/bin/ruff check .
	XDG_RUNTIME_DIR= $(PY) -m pytest $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

clean-data:
	rm -rf .duely
