import pytest

from backend.registry import DEFAULT_SCOPE, Registry, scope_of
from tests.helpers import v


def _stage_and_promote(registry, scope, content="w"):
    with registry.stage(scope) as staged:
        (staged / "weights.bin").write_text(content)
        return registry.promote(scope, staged, {"labels_used": 3})


def test_promote_names_versions_in_order_and_moves_current(tmp_path):
    registry = Registry(tmp_path)
    assert registry.current(DEFAULT_SCOPE) is None and registry.resolve("3.1700000000") is None
    v1 = _stage_and_promote(registry, DEFAULT_SCOPE)
    v2 = _stage_and_promote(registry, DEFAULT_SCOPE)
    assert (v1.name, v2.name) == (v(registry, "default", 1), v(registry, "default", 2))
    assert registry.current(DEFAULT_SCOPE).name == v(registry, "default", 2)
    assert v2.metadata["labels_used"] == 3 and v2.metadata["version"] == v(registry, "default", 2)
    assert [v.name for v in registry.versions(DEFAULT_SCOPE)] == [
        v(registry, "default", 1),
        v(registry, "default", 2),
    ]


def test_project_falls_back_to_default_until_it_has_its_own(tmp_path):
    registry = Registry(tmp_path)
    _stage_and_promote(registry, DEFAULT_SCOPE)
    assert registry.resolve("7.1700000000").name == v(registry, "default", 1)
    own = _stage_and_promote(registry, "7")
    assert own.name == v(registry, "7", 1)
    assert registry.resolve("7.1700000000").name == v(registry, "7", 1)
    assert registry.resolve("8").name == v(registry, "default", 1)


def test_failed_training_leaves_nothing_visible(tmp_path):
    registry = Registry(tmp_path)
    v1 = _stage_and_promote(registry, DEFAULT_SCOPE)
    with pytest.raises(RuntimeError), registry.stage(DEFAULT_SCOPE) as staged:
        (staged / "half.bin").write_text("partial")
        raise RuntimeError("killed mid-write")
    assert registry.current(DEFAULT_SCOPE) == v1
    assert [v.name for v in registry.versions(DEFAULT_SCOPE)] == [v(registry, "default", 1)]
    assert not list((tmp_path / DEFAULT_SCOPE).glob(".staging-*"))


def test_scope_of_label_studio_project_ids():
    assert scope_of("12.1700000000") == "12"
    assert scope_of(None) == DEFAULT_SCOPE
    assert scope_of(7) == "7" and scope_of("default") == DEFAULT_SCOPE
    # Only ASCII digits, never longer than a folder name can be (found by fuzzing: each was a 500).
    for bad in ("../etc", "²", "٣", "1" * 300, 10**30, True, 1.5, ["1"], "project5"):
        with pytest.raises(ValueError):
            scope_of(bad)


def test_prune_keeps_the_newest_and_never_the_serving_version(tmp_path):
    registry = Registry(tmp_path)
    for _ in range(5):
        _stage_and_promote(registry, "3")
    registry.set_current("3", v(registry, "3", 1))  # a rollback to the oldest
    assert registry.prune("3", keep=2) == [v(registry, "3", 2), v(registry, "3", 3)]
    assert [v.name for v in registry.versions("3")] == [
        v(registry, "3", 1),
        v(registry, "3", 4),
        v(registry, "3", 5),
    ]
    assert registry.current("3").name == v(registry, "3", 1)


def test_stale_staging_left_by_a_killed_process_is_cleaned_and_never_listed(tmp_path):
    import os
    import time

    registry = Registry(tmp_path)
    _stage_and_promote(registry, "3")
    stale = tmp_path / "3" / ".staging-killed"
    stale.mkdir()
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    fresh = tmp_path / "3" / ".staging-running"
    fresh.mkdir()
    assert [v.name for v in registry.versions("3")] == [v(registry, "3", 1)]
    _stage_and_promote(registry, "3")
    assert not stale.exists() and fresh.exists()


def test_history_keeps_every_promoted_version_after_pruning(tmp_path):
    registry = Registry(tmp_path)
    for _ in range(4):
        _stage_and_promote(registry, "5")
    registry.prune("5", keep=1)
    assert [v.name for v in registry.versions("5")] == [v(registry, "5", 4)]
    history = registry.history("5")
    assert [h["version"] for h in history] == [v(registry, "5", i) for i in range(1, 5)]
    assert all(h["labels_used"] == 3 for h in history)
    # A line cut short by a crash mid-append is skipped, not fatal.
    with (tmp_path / "5" / "history.jsonl").open("a") as handle:
        handle.write('{"version": "project5-v5", "lab')
    assert len(registry.history("5")) == 4 and registry.history("6") == []


def test_version_names_carry_the_instance_id_of_their_model_dir(tmp_path):
    registry = Registry(tmp_path)
    first = _stage_and_promote(registry, "3")
    instance = (tmp_path / "INSTANCE").read_text().strip()
    assert first.name == f"{instance}-project3-v1" and len(instance) == 6
    # Every process on the same MODEL_DIR (the server, each worker) shares the id; another MODEL_DIR has its own.
    assert Registry(tmp_path).instance == instance and Registry(tmp_path / "other").instance != instance
    assert registry.ours(first.name) and not registry.ours(Registry(tmp_path / "other").name_for("3", 1))
    # Names from before instance ids still load and count, but are not ours to delete from Label Studio.
    legacy = tmp_path / "3" / "versions" / "project3-v4"
    legacy.mkdir()
    assert [v.name for v in registry.versions("3")] == [first.name, "project3-v4"]
    assert not registry.ours("project3-v4") and not registry.ours("someone-elses-v1")
    assert _stage_and_promote(registry, "3").name == f"{instance}-project3-v5"


def test_a_run_that_lost_its_lease_never_promotes_over_a_newer_run(tmp_path):
    from backend.registry import Superseded

    registry = Registry(tmp_path)
    old_run, new_run = registry.fence("3", "full"), registry.fence("3", "full")
    assert new_run > old_run
    with registry.stage("3") as staged:
        (staged / "weights.bin").write_text("newer labels")
        newer = registry.promote("3", staged, {}, fence=("full", new_run))
    with pytest.raises(Superseded, match="lease was lost"), registry.stage("3") as staged:
        (staged / "weights.bin").write_text("older labels")
        registry.promote("3", staged, {}, fence=("full", old_run))
    assert registry.current("3") == newer and [v.name for v in registry.versions("3")] == [newer.name]
    # Tokens are per tier: a fast run overlapping a full one is by design, and still promotes.
    fast = registry.fence("3", "fast")
    with registry.stage("3") as staged:
        (staged / "weights.bin").write_text("fast")
        assert registry.promote("3", staged, {}, fence=("fast", fast)).metadata["fence"] == ["fast", fast]
    # The tokens live in MODEL_DIR, not in Redis: a flushed Redis does not reset them.
    assert Registry(tmp_path).fence("3", "full") == new_run + 1


def test_a_history_line_torn_inside_a_character_is_skipped_and_the_next_promotion_starts_a_line(tmp_path):
    """A crash that cut an append inside the "ó" of xenófobo made every read a UnicodeDecodeError (/versions 500)."""
    registry = Registry(tmp_path)
    _stage_and_promote(registry, "5")
    torn = '{"version": "x", "decision": "promoted (f1:xenó'.encode()[:-1]
    with (tmp_path / "5" / "history.jsonl").open("ab") as handle:
        handle.write(torn)
    assert [h["version"] for h in registry.history("5")] == [v(registry, "5", 1)]
    _stage_and_promote(registry, "5")
    assert [h["version"] for h in registry.history("5")] == [v(registry, "5", 1), v(registry, "5", 2)]


@pytest.mark.parametrize("content", [b"{not json", b'{"kind": "linear", "labels_us', b"\xff\xfe", b"[1, 2]", b"null"])
def test_an_invalid_metadata_file_costs_that_version_s_figures_only(tmp_path, content):
    registry = Registry(tmp_path)
    broken, fine = _stage_and_promote(registry, "5"), _stage_and_promote(registry, "5")
    (broken.path / "metadata.json").write_bytes(content)
    assert broken.metadata == {} and fine.metadata["labels_used"] == 3
    assert broken.summary()["version"] == broken.name and broken.summary()["labels"] is None
    with pytest.raises(ValueError, match="metadata.json"):
        broken.read_metadata()


def test_an_invalid_instance_id_is_refused_every_time(tmp_path):
    """It was cached before it was checked: the second access returned '../../evil', and version names made from
    it resolved outside versions/."""
    (tmp_path / "INSTANCE").write_text("../../evil\n")
    registry = Registry(tmp_path)
    for _ in range(2):
        with pytest.raises(ValueError, match="not an instance id"):
            _ = registry.instance
        with pytest.raises(ValueError, match="not an instance id"):
            registry.name_for("default", 2)


def test_a_version_folder_that_links_out_of_model_dir_is_neither_listed_nor_served(tmp_path):
    registry = Registry(tmp_path / "models")
    inside = _stage_and_promote(registry, "5")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "weights.bin").write_text("not ours")
    link = inside.path.parent / registry.name_for("5", 2)
    link.symlink_to(outside, target_is_directory=True)
    (tmp_path / "models" / "5" / "CURRENT").write_text(link.name + "\n")
    assert [v.name for v in registry.versions("5")] == [inside.name]
    assert registry.current("5") is None
    # Nor one in a scope folder that links out.
    scope = tmp_path / "scope-elsewhere"
    (scope / "versions" / registry.name_for("7", 1)).mkdir(parents=True)
    (scope / "CURRENT").write_text(registry.name_for("7", 1) + "\n")
    (tmp_path / "models" / "7").symlink_to(scope, target_is_directory=True)
    assert registry.versions("7") == [] and registry.current("7") is None
