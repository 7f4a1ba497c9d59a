# `make install` builds two virtualenvs: .venv for the backend, .venv-ls for Label Studio
# (its pins -- Django, rq 2.x, redis 5.x -- are not ours, as in docker-compose where they are two containers).
PYTHON ?= python3
VENV ?= .venv
LS_VENV ?= .venv-ls
LABEL_STUDIO_VERSION ?= 1.23.2
PY := $(VENV)/bin/python

.PHONY: install system-deps check test run serve worker benchmark clean

install: $(VENV)/.installed $(LS_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet label-studio==$(LABEL_STUDIO_VERSION)
	touch $@

# Debian packages for two checks of `make test` (skipped without them): Chromium for the browser test,
# docker-compose 1.29 to validate docker-compose.yml without a Docker engine. Needs root (or sudo).
SYSTEM_DEPS := chromium docker-compose
system-deps:
	@missing=$$(for p in $(SYSTEM_DEPS); do command -v $$p >/dev/null || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing \
		|| { $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; }; \
	fi

# Lint, format, types and the tests not marked e2e: seconds on a warm install; run it often.
check: $(VENV)/.installed
	$(VENV)/bin/ruff check backend tests scripts
	$(VENV)/bin/ruff format --check backend tests scripts
	$(VENV)/bin/mypy
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not e2e" -q $(PYTEST_ARGS)

# Everything, the end-to-end tests (a real Label Studio, Chromium, docker-compose) included.
test: install
	LABEL_STUDIO_BIN=$(abspath $(LS_VENV))/bin/label-studio HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

# The whole stack without Docker: Redis, Label Studio, backend, worker, and a demo project (data in .stack/).
run: install
	$(PY) -m backend run

serve: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m backend serve

# An RQ worker for the retraining loop (needs Redis at REDIS_URL and LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY).
worker: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m backend worker

benchmark: install
	HF_HUB_OFFLINE=1 $(PY) scripts/benchmark_predict.py
	HF_HUB_OFFLINE=1 $(PY) scripts/benchmark_loop.py

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache
