"""Which model serves: the registry's CURRENT, swapped while serving; every kind through the one loader."""

import json
import shutil

import pytest

from backend.model_store import ModelStore
from backend.models.loader import load_version
from backend.registry import METADATA, Registry
from tests.helpers import LABEL_CONFIG, v


def _copy_version(trained_model_dir, model_dir, scope="default"):
    """A second registry holding two versions (copies of the trained one) in `scope`."""
    source = Registry(trained_model_dir).current("default")
    registry = Registry(model_dir)
    for _ in range(2):
        with registry.stage(scope) as staged:
            shutil.copytree(source.path, staged, dirs_exist_ok=True)
            registry.promote(scope, staged, json.loads((source.path / METADATA).read_text()))
    return registry


def test_a_promotion_is_served_on_the_next_request(settings, trained_model_dir, tmp_path):
    registry = _copy_version(trained_model_dir, tmp_path)
    store = ModelStore(settings.model_copy(update={"model_dir": tmp_path}))
    assert store.get("3.1700000000").version == v(registry, "default", 2)
    registry.set_current("default", v(registry, "default", 1))  # what a rollback (or another process's promotion) does
    assert store.version_for("3") == v(registry, "default", 1) and store.get("3").version == v(registry, "default", 1)
    # The replaced version is dropped from memory: one loaded version per scope.
    assert [key.name for key in store._loaded if not isinstance(key, str)] == [v(registry, "default", 1)]


def test_a_project_with_its_own_versions_is_served_them(settings, trained_model_dir, tmp_path):
    _copy_version(trained_model_dir, tmp_path)
    registry = _copy_version(trained_model_dir, tmp_path, scope="5")
    store = ModelStore(settings.model_copy(update={"model_dir": tmp_path}))
    assert store.get("5").version == v(registry, "5", 2) and store.get("6").version == v(registry, "default", 2)


def test_versions_without_a_kind_load_as_transformers_and_unknown_kinds_are_refused(
    settings, trained_model_dir, tmp_path
):
    registry = _copy_version(trained_model_dir, tmp_path)
    version = registry.current("default")
    meta = json.loads((version.path / METADATA).read_text())
    (version.path / METADATA).write_text(json.dumps({k: v for k, v in meta.items() if k != "kind"}))
    assert load_version(version, settings).kind == "transformer"
    (version.path / METADATA).write_text(json.dumps({**meta, "kind": "quantum"}))
    with pytest.raises(ValueError, match="kind 'quantum'"):
        load_version(version, settings)


def _linear_versions(model_dir, scope, n):
    from backend.models.training import train_version
    from backend.settings import Settings
    from tests.helpers import CONFIG, read_demo

    rows = read_demo("tweets_labeled.csv")[:60]  # a few labels: these tests are about serving, not learning
    settings = Settings(model_dir=model_dir)
    for _ in range(n):
        train_version(
            [r["text"] for r in rows],
            [r["label"] for r in rows],
            CONFIG.classes,
            kinds=["linear"],
            settings=settings,
            registry=Registry(model_dir),
            scope=scope,
        )
    return Registry(model_dir)


def test_a_version_that_does_not_load_never_breaks_serving(settings, tmp_path):
    """Truncated weights in the version CURRENT names made every /predict a 500 while /health said UP."""
    from backend.api import create_app

    registry = _linear_versions(tmp_path, "4", 2)
    (registry.current("4").path / "linear.npz").write_bytes(b"PK\x03\x04 truncated")
    app = create_app(settings.model_copy(update={"model_dir": tmp_path}))
    client = app.test_client()
    body = {"tasks": [{"data": {"text": "Fuera los extranjeros"}}], "label_config": LABEL_CONFIG, "project": "4"}
    answer = client.post("/predict", json=body)
    assert answer.status_code == 200 and answer.json["model_version"] == v(registry, "4", 1)
    assert answer.json["results"][0]["model_version"] == v(registry, "4", 1)
    health = client.get("/health").json
    assert health["status"] == "DEGRADED" and "project4-v2, which does not load" in health["degraded"]["4"]
    assert 'ml_backend_degraded{project="4"} 1.0' in client.get("/metrics").get_data(as_text=True)
    assert client.post("/setup", json={"schema": LABEL_CONFIG, "project": "4"}).json["model_version"] == v(
        registry, "4", 1
    )
    # A rollback to the version that loads ends the degraded state.
    registry.set_current("4", v(registry, "4", 1))
    client.post("/predict", json=body)
    assert client.get("/health").json["status"] == "UP"


def test_current_naming_a_deleted_version_serves_the_newest_one_left(settings, tmp_path):
    """It served the default model, silently."""
    registry = _linear_versions(tmp_path, "4", 2)
    _linear_versions(tmp_path, "default", 1)
    shutil.rmtree(registry.current("4").path)
    store = ModelStore(settings.model_copy(update={"model_dir": tmp_path}))
    assert store.get("4").version == v(registry, "4", 1)
    assert f"names {v(registry, '4', 2)}, which is not in the registry" in store.degraded["4"]
    # A project with no version of its own is served the default one, and that is not degraded.
    assert store.get("9").version == v(registry, "default", 1) and "9" not in store.degraded
    # A rollback ends it in every process, also in one that serves the project no more (what /health asks).
    assert store.recheck() == store.degraded and "4" in store.degraded
    registry.set_current("4", v(registry, "4", 1))
    assert store.recheck() == {}


def test_rollback_accepts_only_names_the_registry_lists(tmp_path):
    registry = _linear_versions(tmp_path, "4", 1)
    for name in ("../4", "..", "/tmp", v(registry, "4", 9), "versions/../project4-v1"):
        with pytest.raises(FileNotFoundError, match="`versions` lists them"):
            registry.set_current("4", name)
    registry.set_current("4", v(registry, "4", 1))


def test_health_says_why_in_words_without_paths_or_exception_text(settings, tmp_path, caplog):
    """/health, open even behind basic auth, showed install paths (the base model's site-packages folder) and raw
    numpy and tokenizer messages; they belong in the log."""
    from backend.api import create_app

    registry = _linear_versions(tmp_path / "models", "4", 1)
    (registry.current("4").path / "linear.npz").write_bytes(b"PK\x03\x04 truncated")
    _linear_versions(tmp_path / "models", "5", 1)
    shutil.rmtree(registry.current("5").path)
    client = create_app(settings.model_copy(update={"model_dir": tmp_path / "models"})).test_client()
    body = {"tasks": [{"data": {"text": "hola"}}], "label_config": LABEL_CONFIG}
    with caplog.at_level("ERROR", logger="backend.model_store"):
        for project in ("4", "5"):
            client.post("/predict", json={**body, "project": project})
    health = client.get("/health")
    degraded = health.json["degraded"]
    assert degraded == {
        "4": f"the CURRENT of scope 4 names {v(registry, '4', 1)}, which does not load (its files are damaged or "
        "unreadable); serving the base model (MODEL_NAME) instead",
        "5": f"the CURRENT of scope 5 names {v(registry, '5', 1)}, which is not in the registry; serving the base "
        "model (MODEL_NAME) instead",
    }
    assert "/" not in health.get_data(as_text=True)
    # The log keeps what an operator needs: the path and the error.
    assert any(str(tmp_path) in r.getMessage() for r in caplog.records)
