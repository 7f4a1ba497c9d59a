"""Which model serves: the registry's CURRENT, swapped while serving; every kind through the one loader."""

import json
import shutil

import pytest

from backend.model_store import ModelStore
from backend.models.loader import load_version
from backend.registry import METADATA, Registry


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
    assert store.get("3.1700000000").version == "default-v2"
    registry.set_current("default", "default-v1")  # what a rollback (or another process's promotion) does
    assert store.version_for("3") == "default-v1" and store.get("3").version == "default-v1"
    # The replaced version is dropped from memory: one loaded version per scope.
    assert [key.name for key in store._loaded if not isinstance(key, str)] == ["default-v1"]


def test_a_project_with_its_own_versions_is_served_them(settings, trained_model_dir, tmp_path):
    _copy_version(trained_model_dir, tmp_path)
    _copy_version(trained_model_dir, tmp_path, scope="5")
    store = ModelStore(settings.model_copy(update={"model_dir": tmp_path}))
    assert store.get("5").version == "project5-v2" and store.get("6").version == "default-v2"


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
