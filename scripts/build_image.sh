#!/usr/bin/env bash
# Build the backend's image (`make image`): with Docker where an engine runs, as users do (the Dockerfile's
# defaults: python:3.11-slim, torch from its CPU index). Without one, with podman: a stand-in for python:3.11-slim
# made from Debian packages (no registry image can be pulled here), torch's CPU wheel from this machine as a
# file:// index and its CA bundle, both mounted at build time only: nothing machine-specific enters the image.
#
#   IMAGE        the tag (default tweet-al-backend:0.1.0, as docker-compose.yml names it)
#   TORCH_WHEEL  the CPU wheel of torch (default: the one in pip's find-links folder)
#   IMAGE_WORK   a folder for the stand-in base and the wheel index (default .image/, kept between builds)
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-tweet-al-backend:0.1.0}

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    exec docker build -t "$IMAGE" .
fi
if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null; then
    echo "error: no Docker engine, and podman or mmdebstrap missing: \`make system-deps\` installs them" >&2
    exit 2
fi
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/containers.conf}
work=$(mkdir -p "${IMAGE_WORK:-.image}" && cd "${IMAGE_WORK:-.image}" && pwd)

# The stand-in base: Debian 12's Python 3.11, whose pip installs system-wide as the official image's does. Its
# 3.11.2 is older than python:3.11-slim's, and redis-py asks for async-timeout >= 4.0.3 below 3.11.3, which the
# lock (made on a newer 3.11) leaves out and Debian has only in 4.0.2: the base gets it, or `pip check` fails.
base=localhost/tweet-al-base:bookworm
if ! podman image exists "$base"; then
    if [ ! -s "$work/base.tar" ]; then
        pip download --quiet --no-deps --dest "$work" async-timeout==5.0.1
        mmdebstrap --variant=minbase --quiet \
            --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
            --customize-hook='printf "[global]\nbreak-system-packages = true\n" > "$1/etc/pip.conf"' \
            --customize-hook="copy-in $work/async_timeout-5.0.1-py3-none-any.whl /tmp" \
            --customize-hook='chroot "$1" sh -c "pip install --quiet --no-deps /tmp/async_timeout-*.whl && rm /tmp/*.whl"' \
            bookworm "$work/base.part.tar"
        mv "$work/base.part.tar" "$work/base.tar"
    fi
    podman import --quiet "$work/base.tar" "$base" >/dev/null
fi

# torch's CPU wheel as a one-package index (pip reads index.html from a file:// folder).
wheel=${TORCH_WHEEL:-$(ls "$(pip config get global.find-links 2>/dev/null || echo /opt/wheels)"/torch-2.13.0+cpu-*.whl 2>/dev/null | head -1)}
if [ ! -f "$wheel" ]; then
    echo "error: no torch 2.13.0 CPU wheel found; set TORCH_WHEEL to its path" >&2
    exit 2
fi
mkdir -p "$work/torch-index/torch"
cp -u "$wheel" "$work/torch-index/torch/"
name=$(basename "$wheel")
printf '<a href="%s">%s</a>\n' "${name//+/%2B}" "$name" > "$work/torch-index/torch/index.html"

ca=$(pip config get global.cert 2>/dev/null || echo /etc/ssl/certs/ca-certificates.crt)
started=$(date +%s)
podman build --isolation chroot --network host --format docker \
    --build-arg BASE_IMAGE="$base" --build-arg TORCH_INDEX=file:///torch-index \
    --volume "$work/torch-index:/torch-index:ro" --volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro" \
    --tag "$IMAGE" .
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "built $IMAGE with podman in $(( $(date +%s) - started )) s: $(( size / 1000000 )) MB"
