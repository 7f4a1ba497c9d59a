"""The Docker image, built (scripts/build_image.sh: podman where no Docker engine runs) and run: a backend
container and a worker container from it, against the Redis and Label Studio of the `stack` fixture on the host
(host network), sharing a model volume as in docker-compose.yml.

The loop is checked end to end through the containers only: setup-project run from the image, Start Training sent
to the backend container, the worker container training and promoting into the volume, the backend container
serving the version Label Studio switched to. A queue of its own keeps the host's worker out of it.
"""

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from backend.labelstudio.client import model_version_counts
from backend.labelstudio.project_setup import webhook_headers
from backend.settings import Settings
from backend.stack.processes import free_port
from tests.helpers import DEMO, LABEL_CONFIG, ROOT, read_demo

pytestmark = pytest.mark.e2e

IMAGE = os.environ.get("IMAGE", "tweet-al-backend:0.1.0")
ENV = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(ROOT / "scripts" / "containers.conf"))}
# podman runs an image's HEALTHCHECK on a systemd timer, and no systemd runs here: the checks run on demand
# (`podman healthcheck run`) instead.
NO_TIMER = "--health-interval=disable"
# What the Dockerfile sets, and what a base image may: nothing else may be in the image's environment.
IMAGE_ENV = {"PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "HF_HUB_OFFLINE", "MODEL_DIR", "PORT", "WORKERS", "THREADS"}
BASE_ENV = {"PATH", "LANG", "GPG_KEY", "PYTHON_VERSION", "PYTHON_SHA256"}


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        pytest.skip("a Docker engine runs here: these checks drive podman (the engine's users run compose)")
    if not shutil.which("podman"):
        reason = "no podman here (`make system-deps` installs it): the image is not built or run"
        if os.environ.get("REQUIRE_E2E"):
            pytest.fail(reason)
        pytest.skip(reason)
    built = subprocess.run(
        [str(ROOT / "scripts" / "build_image.sh")], env={**ENV, "IMAGE": IMAGE}, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    print(built.stdout.strip().splitlines()[-1])
    return IMAGE


def test_nothing_of_the_build_machine_is_in_the_image(image):
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    env = dict(item.split("=", 1) for item in config["Env"])
    assert set(env) - BASE_ENV == IMAGE_ENV, env
    for value in env.values():
        assert not any(mark in value for mark in ("/opt/wheels", "torch-index", ".crt", "find-links")), env
    # The build-time mounts (the torch wheel index, this machine's CA bundle) left nothing behind: an empty mount
    # point at most, pip's config without them, the base's own bundle.
    check = "test -z \"$(ls -A /torch-index 2>/dev/null)\" && ! grep -qs 'index\\|find-links\\|cert' /etc/pip.conf"
    assert podman("run", "--rm", NO_TIMER, image, "sh", "-c", check, check=False).returncode == 0
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    inside = podman("run", "--rm", NO_TIMER, image, "sha256sum", bundle).stdout.split()[0]
    assert inside != hashlib.sha256(Path(bundle).read_bytes()).hexdigest(), "this machine's CA bundle is in the image"
    assert config["User"] == "app"
    # HEALTHCHECK survives only in the docker image format (podman's default, OCI, drops it).
    healthcheck = json.loads(podman("image", "inspect", "--format", "{{json .HealthCheck}}", image).stdout)
    assert "/health" in " ".join(healthcheck["Test"])


@pytest.fixture()
def containers(image):
    names, volume = [], f"tal-models-{secrets.token_hex(4)}"
    podman("volume", "create", volume)

    def run(name: str, env: dict, *command: str, detach: bool = True) -> str:
        flags = [f"--env={k}={v}" for k, v in env.items()]
        mounts = [f"--volume={volume}:/data/models", f"--volume={DEMO}:/demo:ro"]
        if detach:
            names.append(name)
            podman("run", "--detach", NO_TIMER, "--name", name, "--network=host", *mounts, *flags, image, *command)
            return name
        return podman("run", "--rm", NO_TIMER, "--network=host", *mounts, *flags, image, *command, timeout=600).stdout

    yield run
    for name in names:
        logs = podman("logs", "--tail", "40", name, check=False)
        print(f"--- {name}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        podman("rm", "--force", name, check=False)
    podman("volume", "rm", "--force", volume, check=False)


def test_the_loop_runs_in_the_image_containers(stack, containers):
    port, tag = free_port(), secrets.token_hex(3)
    backend_url = f"http://127.0.0.1:{port}"
    env = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "REDIS_URL": stack.redis_url,
        "RQ_QUEUE": f"image-e2e-{tag}",
        "LABEL_STUDIO_URL": stack.ls_url,
        "LABEL_STUDIO_API_KEY": stack.token,
        "WEBHOOK_SECRET": stack.webhook_secret,
        "BASIC_AUTH_USER": stack.backend_username,
        "BASIC_AUTH_PASS": stack.backend_password,
        "MODEL_KINDS": "linear",
    }
    started = time.time()
    backend = containers(f"tal-backend-{tag}", env)
    deadline = time.time() + 180
    while True:
        try:
            if requests.get(f"{backend_url}/health", timeout=5).ok:
                break
        except requests.RequestException:  # not listening yet, or busy loading the model
            pass
        assert time.time() < deadline, podman("logs", backend, check=False).stderr[-3000:]
        time.sleep(0.5)
    print(f"backend container: /health answered {time.time() - started:.1f} s after `podman run`")
    # The image's own HEALTHCHECK command passes, as the compose file and Docker rely on it.
    assert podman("healthcheck", "run", backend, check=False).returncode == 0
    assert podman("exec", backend, "id", "-u").stdout.strip() == "1000"
    containers(f"tal-worker-{tag}", env, "python", "-m", "backend", "worker")

    # setup-project from the image: the demo tweets with their labels, then the unlabeled ones (a second run adds
    # to the same project), the backend container connected.
    title = f"image e2e {tag}"
    for table in ("tweets_labeled.csv", "tweets_pool.csv"):
        setup = ["python", "-m", "backend", "setup-project", "--csv", f"/demo/{table}", "--title", title]
        print(containers(f"tal-setup-{tag}", env, *setup, "--backend-url", backend_url, detach=False))
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=stack.ls_url, api_key=stack.token)
    (project,) = [p for p in ls.projects.list() if p.title == title]
    answer = requests.post(
        f"{backend_url}/webhook",
        json={"action": "START_TRAINING", "project": {"id": project.id}},
        headers=webhook_headers(None, stack.webhook_secret),
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["status"] == "queued", answer.text

    # The worker container trains, promotes into the shared volume and switches the project; the backend
    # container serves that version.
    deadline = time.time() + 300
    while True:
        current = requests.get(
            f"{backend_url}/versions", params={"project": project.id}, auth=stack.backend_auth, timeout=10
        ).json()["current"]
        if current and ls.projects.get(id=project.id).model_version == current:
            break
        assert time.time() < deadline, podman("logs", f"tal-worker-{tag}", check=False).stderr[-3000:]
        time.sleep(2)
    # Its window (the image's default QUEUE_WINDOW of the unlabeled demo tweets) carries predictions of it in Label
    # Studio, written by the worker container.
    window = min(Settings.model_fields["queue_window"].default, len(read_demo("tweets_pool.csv")))
    assert model_version_counts(ls, project.id) == {current: window}
    body = {
        "tasks": [{"id": 1, "data": {"text": "hola a todos"}}],
        "project": str(project.id),
        "label_config": LABEL_CONFIG,
    }
    served = requests.post(f"{backend_url}/predict", json=body, auth=stack.backend_auth, timeout=30).json()
    assert served["results"][0]["model_version"] == current
    # Written by the non-root user of the image into the volume.
    owner = podman("exec", backend, "stat", "-c", "%u", f"/data/models/{project.id}/versions/{current}")
    assert owner.stdout.strip() == "1000"


REDIS_STANDIN = "localhost/tweet-al-redis-standin:bookworm"
# Label Studio's image (heartexlabs/label-studio) cannot be pulled here, nor built from its sources offline: the
# compose check runs every other long-lived service, the loop with Label Studio is checked above.
COMPOSE_SERVICES = ("redis", "ml-backend", "worker", "rq-dashboard")


@pytest.fixture()
def compose(image, tmp_path):
    """docker-compose (1.29) against podman's Docker API: `podman system service` on a socket of the test's."""
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is missing (`make system-deps`)")
    if podman("image", "exists", REDIS_STANDIN, check=False).returncode != 0:
        tar = ROOT / ".image" / "redis.tar"
        if not tar.exists():
            bootstrap = ["mmdebstrap", "--variant=minbase", "--quiet", "--include=redis-server,redis-tools"]
            subprocess.run([*bootstrap, "bookworm", str(tar)], check=True, capture_output=True, timeout=600)
        podman("import", "--change", "WORKDIR=/data", str(tar), REDIS_STANDIN)
    socket = tmp_path / "podman.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"], env=ENV)
    deadline = time.time() + 30
    while not socket.exists():
        assert time.time() < deadline and service.poll() is None, "podman system service did not start"
        time.sleep(0.2)
    project = f"tal{secrets.token_hex(3)}"
    secrets_env = {
        name: secrets.token_hex(12)
        for name in ("LABEL_STUDIO_API_KEY", "WEBHOOK_SECRET", "REDIS_PASSWORD", "LABEL_STUDIO_PASSWORD")
    }
    env = {
        **ENV,
        **secrets_env,
        "RQ_DASHBOARD_USERNAME": "ops",
        "RQ_DASHBOARD_PASSWORD": secrets.token_hex(12),
        "BASIC_AUTH_USER": "ops",
        "BASIC_AUTH_PASS": secrets.token_hex(12),
        "PORT": str(free_port()),
        "RQ_DASHBOARD_PORT": str(free_port()),
        "DOCKER_HOST": f"unix://{socket}",
    }
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "tests" / "e2e" / "compose.standins.yml")]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = ["docker-compose", *files, "-p", project, *args]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert not check or done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done

    yield run, env, project
    print(run("logs", "--tail", "30", check=False).stdout[-6000:])
    run("down", "--volumes", check=False)
    service.terminate()
    service.wait(timeout=30)


def _healthy(container: str, seconds: float = 120) -> None:
    """Run the container's HEALTHCHECK until it passes (systemd timers run it on a normal host)."""
    deadline = time.time() + seconds
    while podman("healthcheck", "run", container, check=False).returncode != 0:
        assert time.time() < deadline, podman("logs", "--tail", "30", container, check=False).stderr
        time.sleep(2)


def test_compose_runs_the_stack_but_label_studio_through_podman(compose):
    run, env, project = compose
    # One service at a time: `depends_on: service_healthy` waits for health states that, without systemd, only
    # the `podman healthcheck run` calls here produce.
    run("up", "--detach", "--no-build", "--no-deps", "redis")
    _healthy(f"{project}_redis_1")
    run("up", "--detach", "--no-build", "--no-deps", "ml-backend", "worker", "rq-dashboard")
    backend = f"http://127.0.0.1:{env['PORT']}"
    _healthy(f"{project}_ml-backend_1", seconds=180)
    assert requests.get(f"{backend}/health", timeout=10).json()["status"] == "UP"
    # Behind its login (compose requires one); a name not in ALLOWED_HOSTS is refused.
    assert requests.get(f"{backend}/versions", timeout=10).status_code == 401
    backend_login = (env["BASIC_AUTH_USER"], env["BASIC_AUTH_PASS"])
    assert requests.get(f"{backend}/versions", auth=backend_login, timeout=10).status_code == 200
    assert requests.get(f"{backend}/health", headers={"Host": "rebound.example"}, timeout=10).status_code == 400
    _healthy(f"{project}_rq-dashboard_1")

    # The worker container reached Redis over the compose network with the password, and registered.
    dashboard = f"http://127.0.0.1:{env['RQ_DASHBOARD_PORT']}/0/data/workers.json"
    assert requests.get(dashboard, timeout=10).status_code == 401
    login = (env["RQ_DASHBOARD_USERNAME"], env["RQ_DASHBOARD_PASSWORD"])
    deadline = time.time() + 120
    while not requests.get(dashboard, auth=login, timeout=10).json()["workers"]:
        assert time.time() < deadline, run("logs", "--tail", "30", "worker", check=False).stdout
        time.sleep(2)
    # And the backend container queues a training there (Label Studio, absent, is what the job would read next).
    answer = requests.post(
        f"{backend}/webhook",
        json={"action": "START_TRAINING", "project": {"id": 1}},
        headers=webhook_headers(None, env["WEBHOOK_SECRET"]),
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["status"] == "queued", answer.text
    assert set(COMPOSE_SERVICES) <= set(run("ps", "--services").stdout.split())
