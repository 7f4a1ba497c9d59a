# The ML backend and, with another command, its RQ worker, rq-dashboard and the one-shot project setup
# (docker-compose.yml): Python 3.11 slim, CPU torch, non-root.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    MODEL_DIR=/data/models \
    PORT=9090 \
    WORKERS=1 \
    THREADS=4

WORKDIR /app
COPY pyproject.toml README.md ./
COPY backend ./backend
# The CPU wheel index keeps torch==2.13.0 from pulling the multi-GB CUDA build.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu . \
    && useradd --create-home --uid 1000 app \
    && mkdir -p /data/models /home/app/.cache/huggingface \
    && chown -R app /data /home/app/.cache

USER app
VOLUME ["/data/models"]
EXPOSE 9090
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health', timeout=2)"
CMD ["python", "-m", "backend", "serve"]
