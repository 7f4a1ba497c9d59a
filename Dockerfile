# The ML backend and, with another command, its RQ worker, rq-dashboard and the one-shot project setup
# (docker-compose.yml): Python 3.11 slim, CPU torch, non-root.
#
# Build arguments, for machines without a registry (scripts/build_image.sh sets them there; users need none):
#   BASE_IMAGE    a Python 3.11 image whose `python` and `pip` install system-wide
#   TORCH_INDEX   where torch's CPU wheel comes from (an index URL; file:// for a folder mounted at build time)
#   PYPI_INDEX    where everything else comes from
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG PYPI_INDEX=https://pypi.org/simple

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    MODEL_DIR=/data/models \
    PORT=9090 \
    WORKERS=1 \
    THREADS=4

WORKDIR /app
# Every file pip installs must match a hash of the locks (`make lock`), and each index serves only what it is meant
# to: torch from its CPU index alone (PyPI's is the multi-GB CUDA build), everything else from PyPI alone. No
# --extra-index-url: a package of the same name on another index can never be picked (dependency confusion).
COPY requirements-torch.lock requirements.lock ./
RUN pip install --no-deps --require-hashes --index-url "$TORCH_INDEX" -r requirements-torch.lock \
    && pip install --no-deps --require-hashes --index-url "$PYPI_INDEX" -r requirements.lock
COPY pyproject.toml README.md ./
COPY backend ./backend
# The project itself, built with the locked setuptools, nothing downloaded; `pip check`: the locks are complete.
RUN pip install --no-deps --no-build-isolation --no-index . \
    && pip check \
    && useradd --create-home --uid 1000 app \
    && mkdir -p /data/models /home/app/.cache/huggingface \
    && chown -R app /data /home/app/.cache

USER app
VOLUME ["/data/models"]
EXPOSE 9090
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health', timeout=2)"
CMD ["python", "-m", "backend", "serve"]
