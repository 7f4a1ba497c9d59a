# `make install` builds two virtualenvs, each from hashed locks alone: .venv for the backend (requirements-torch.lock,
# requirements-dev.lock), .venv-ls for Label Studio (requirements-ls.lock; its pins -- Django, rq 2.x, redis 5.x --
# are not ours, as in docker-compose where they are two containers). `make lock` writes the locks.
PYTHON ?= python3
VENV ?= .venv
LS_VENV ?= .venv-ls
PY := $(VENV)/bin/python
# Where torch's CPU wheel comes from when pip's own indexes do not have it: https://download.pytorch.org/whl/cpu
# (PyPI has only the CUDA build, whose hash the lock refuses).
TORCH_INDEX ?=
# Exactly the locked files: every one checked against its hash, no dependency added that a lock does not name
# (`pip check` then fails on one the lock lacks), nothing that pip would pick today.
PIP_LOCKED := --quiet --no-deps --require-hashes

.PHONY: install system-deps check test run serve worker smoke benchmark load clean image

install: $(VENV)/.installed $(LS_VENV)/.installed

# A lock that changes builds the virtualenv anew: installing over it would leave what the lock no longer names.
$(VENV)/.installed: pyproject.toml requirements-torch.lock requirements-dev.lock
	rm -rf $(VENV) && $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_LOCKED) $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
		-r requirements-torch.lock -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --no-index -e .
	$(PY) -m pip check
	touch $@

$(LS_VENV)/.installed: requirements-ls.lock
	rm -rf $(LS_VENV) && $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install $(PIP_LOCKED) -r requirements-ls.lock
	$(LS_VENV)/bin/python -m pip check
	touch $@

# Debian packages for checks of `make test` (skipped without them, failed in CI): Chromium for the browser test,
# docker-compose 1.29 to validate docker-compose.yml without a Docker engine, podman (with runc and mmdebstrap)
# to build and run the image without one. Needs root (or sudo). Not installed here: the PostgreSQL server (and its
# psql) that tests/e2e/test_postgres.py creates a database on (TEST_POSTGRE_*; CI's machines run one).
SYSTEM_DEPS := chromium docker-compose podman runc mmdebstrap
system-deps:
	@missing=$$(for p in $(SYSTEM_DEPS); do command -v $$p >/dev/null || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing \
		|| { $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; }; \
	fi

# Lint, format, types and the tests not marked e2e or slow: about a minute on a warm install; run it often.
check: $(VENV)/.installed
	$(VENV)/bin/ruff check backend tests scripts
	$(VENV)/bin/ruff format --check backend tests scripts
	$(VENV)/bin/mypy
	FUZZ_EXAMPLES=200 HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not e2e and not slow" -q $(PYTEST_ARGS)

# Everything, the end-to-end tests (a real Label Studio, Chromium, docker-compose) included.
test: install
	LABEL_STUDIO_BIN=$(abspath $(LS_VENV))/bin/label-studio HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

# The whole stack without Docker: Redis, Label Studio, backend, worker, and a demo project (data in .stack/).
run: install
	$(PY) -m backend run

# The Docker image (tweet-al-backend:0.1.0): `docker build` where an engine runs, else podman (scripts/build_image.sh).
image:
	scripts/build_image.sh

# Checks a running stack end to end and says in plain words what is wrong (README: Smoke check): after `make run`,
# in another terminal. URL: the backend (default http://localhost:$PORT); PROJECT: one project (default: every
# project with this backend connected); SMOKE_ARGS=--train also presses Start Training and waits for the job.
smoke: $(VENV)/.installed
	$(PY) -m backend smoke $(if $(URL),--backend-url $(URL)) $(if $(PROJECT),--project $(PROJECT)) $(SMOKE_ARGS)

# HF_HUB_OFFLINE from the shell (0: MODEL_NAME may be a hub id), 1 when unset.
serve: $(VENV)/.installed
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(PY) -m backend serve

# An RQ worker for the retraining loop (needs Redis at REDIS_URL and LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY).
worker: $(VENV)/.installed
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(PY) -m backend worker

benchmark: install
	HF_HUB_OFFLINE=1 $(PY) scripts/benchmark_predict.py
	HF_HUB_OFFLINE=1 $(PY) scripts/benchmark_loop.py
	HF_HUB_OFFLINE=1 $(PY) scripts/benchmark_cleanup.py

# Issue 12's load run: 20 simulated annotators for 5 minutes against the local stack (figures: docs/benchmarks.md).
load: install
	HF_HUB_OFFLINE=1 $(PY) scripts/load_run.py $(LOAD_ARGS)

# The hashed locks from pyproject.toml and requirements-ls.in: pip-tools in a throwaway virtualenv, PyPI alone
# (PIP_CONFIG_FILE=/dev/null: no other index of this machine's pip configuration leaks in). Run it after any change
# to the dependencies; `make check` fails while they disagree (tests/test_lock.py). requirements.lock is the image's;
# requirements-dev.lock adds the test extras to it, at the same versions (its constraint), for .venv. torch stays out
# of them: it comes from its CPU index (requirements-torch.lock, written by hand), but its own dependencies are
# resolved here from its CPU wheel, found in TORCH_FIND_LINKS, since PyPI's torch is the CUDA build with its nvidia-*
# packages. Each pip-compile takes several minutes.
TORCH_FIND_LINKS ?= $(or $(PIP_FIND_LINKS),https://download.pytorch.org/whl/cpu/torch/)
LOCK_VENV ?= /tmp/tweet-al-pip-tools
COMPILE = PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet \
	--generate-hashes --strip-extras --index-url https://pypi.org/simple --no-emit-index-url --no-emit-find-links
BACKEND_COMPILE = $(COMPILE) pyproject.toml --all-build-deps --unsafe-package torch --no-allow-unsafe \
	--find-links $(TORCH_FIND_LINKS)
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet pip-tools==7.6.2
	$(BACKEND_COMPILE) --output-file requirements.lock
	$(BACKEND_COMPILE) --extra test --constraint requirements.lock --output-file requirements-dev.lock
	PIP_FIND_LINKS= $(COMPILE) requirements-ls.in --allow-unsafe --output-file requirements-ls.lock
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache
