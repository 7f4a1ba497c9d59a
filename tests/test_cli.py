"""`python -m backend ...`: the user's mistakes as one-line errors, the worker's recipe, rollback."""

import resource
import signal
import subprocess
import sys

import pytest

from backend.cli import main
from backend.models.finetune import TrainConfig
from backend.models.training import Outcome
from backend.registry import Registry
from backend.settings import Settings
from tests.helpers import DEMO, ROOT, v


def _fails(args, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code not in (0, None)
    return str(exit_info.value.code)


def test_cli_reports_clear_errors(trained_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MODEL_DIR", str(trained_model_dir))
    bad = tmp_path / "bad.csv"
    bad.write_text("id,tweet\n1,hola\n")
    for args, message in [
        (["predict", "--csv", str(bad), "--out", str(tmp_path / "o.csv")], "lacks column(s) ['text']"),
        (["train", "--csv", str(bad)], "lacks column(s) ['text', 'label']"),
        (["train", "--csv", str(DEMO / "tweets_pool.csv")], "lacks column(s) ['label']"),
        (["train", "--csv", str(tmp_path / "missing.csv")], "No such file"),
    ]:
        assert message in _fails(args, capsys)


def test_train_uses_the_workers_recipe(tmp_path, monkeypatch):
    """Same epochs, learning rate and minimum steps as the worker's first (cold) training, unless overridden."""
    configs = []

    def record(*args, train_config, **kwargs):
        configs.append(train_config)
        return Outcome(Registry(tmp_path).store("default", _Stub(), {}), "promoted stub")

    monkeypatch.setattr("backend.models.training.train_version", record)
    monkeypatch.setenv("TRAIN_LEARNING_RATE", "3e-5")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    main(["train", "--csv", str(DEMO / "tweets_labeled.csv")])
    main(["train", "--csv", str(DEMO / "tweets_labeled.csv"), "--epochs", "1.5"])
    worker = TrainConfig.from_settings(Settings(), warm=False)
    assert configs[0] == worker and worker.learning_rate == 3e-5
    assert configs[1].epochs == 1.5 and configs[1].learning_rate == 3e-5


@pytest.mark.slow
def test_train_promotes_the_best_of_the_candidate_kinds(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    main(["train", "--csv", str(DEMO / "tweets_labeled.csv"), "--kinds", "linear"])
    assert "promoted linear" in capsys.readouterr().out
    version = Registry(tmp_path).current("default")
    assert version.metadata["kind"] == "linear" and version.metadata["labels_used"] > 100
    assert "MODEL_KINDS" in _fails(["train", "--csv", str(DEMO / "tweets_labeled.csv"), "--kinds", "svm"], capsys)


class _Stub:
    kind = "stub"

    def save(self, folder):
        (folder / "weights").write_text("w")


@pytest.mark.slow
def test_rollback_serves_an_earlier_version(tmp_path):
    registry = Registry(tmp_path)
    for _ in range(2):
        registry.store("4", _Stub(), {})
    env = {"MODEL_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "backend",
            "rollback",
            "--project",
            "4",
            "--to",
            v(registry, "4", 1),
            "--no-rescore",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert registry.current("4").name == v(registry, "4", 1)
    missing = subprocess.run(
        [sys.executable, "-m", "backend", "rollback", "--project", "4", "--to", v(registry, "4", 9)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and f"no version '{v(registry, '4', 9)}'" in missing.stderr


def test_versions_shows_kappa_uncertain_share_and_the_stop_signal(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    registry = Registry(tmp_path)
    for kappa in (None, 0.995, 0.999, 1.0):
        registry.store("4", _Stub(), {"kappa_previous": kappa, "unlabeled": 50, "uncertain": 5, "uncertain_share": 0.1})
    main(["versions"])
    out = capsys.readouterr().out
    assert "kappa to previous 0.999; uncertain 5 of 50 unlabeled (10.0%)" in out
    assert "The model has stopped changing" in out
    monkeypatch.setenv("STOP_KAPPA", "0.999")
    main(["versions"])
    assert "Keep labeling: the model is still changing" in capsys.readouterr().out


def test_train_refuses_labels_that_are_not_the_label_config_s_classes(tmp_path, monkeypatch, capsys):
    """Labels 0/1 promoted a default version that served no project (its classes are not the config's): /predict
    answered empty slots for every project without a version of its own while /health said UP."""
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models"))
    numeric = tmp_path / "numeric.csv"
    numeric.write_text("text,label\n" + "".join(f"tweet {i},{i % 2}\n" for i in range(40)))
    message = _fails(["train", "--csv", str(numeric)], capsys)
    assert "labels that are not among ['ok', 'xenófobo']: '0' (20), '1' (20)" in message
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    assert "every class needs at least 2" in _fails(["train", "--csv", str(header_only)], capsys)
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\n" + "".join(f"tweet {i},ok\n" for i in range(40)))
    assert "(short: {'xenófobo': 0})" in _fails(["train", "--csv", str(one_class)], capsys)
    assert Registry(tmp_path / "models").scopes() == []


def test_ordinary_mistakes_are_one_line_errors_not_tracebacks(trained_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MODEL_DIR", str(trained_model_dir))
    big = tmp_path / "big.csv"
    big.write_text("text,label\n" + "x" * 5_000_000 + ",ok\n")
    pool = str(DEMO / "tweets_pool.csv")
    for args, message in [
        (["train", "--csv", str(big)], "field larger than field limit"),
        (["predict", "--csv", str(big), "--out", str(tmp_path / "o.csv")], "field larger than field limit"),
        (["simulate", "--pool", str(big), "--out", str(tmp_path / "sim")], "field larger than field limit"),
        (["train", "--csv", str(tmp_path)], "Is a directory"),
        (["predict", "--csv", str(tmp_path), "--out", str(tmp_path / "o.csv")], "Is a directory"),
        (["predict", "--csv", pool, "--out", str(tmp_path)], "Is a directory"),
    ]:
        assert message in _fails(args, capsys), args


def test_a_model_dir_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys):
    """A read-only MODEL_DIR was a traceback (OSError), after the training. Root writes into a folder whatever its
    mode, so the folder here lies under a file: a write there fails for root too."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "a-file" / "models"))
    message = _fails(["train", "--csv", str(DEMO / "tweets_labeled.csv")], capsys)
    assert message.startswith("error: ") and "Not a directory" in message


def test_rollback_that_cannot_write_model_dir_is_one_line(tmp_path):
    """As root a folder's mode does not stop a write, so the write fails another real way: a process may write no
    byte to files (RLIMIT_FSIZE 0, as on a full disk or quota), and CURRENT cannot be written."""
    registry = Registry(tmp_path)
    for _ in range(2):
        registry.store("4", _Stub(), {})

    def no_file_bytes():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    done = subprocess.run(
        [sys.executable, "-m", "backend", "rollback", "--project", "4", "--to", v(registry, "4", 1), "--no-rescore"],
        cwd=ROOT,
        env={"MODEL_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        preexec_fn=no_file_bytes,
    )
    # (Above it, a warning of joblib's that it cannot make its semaphore file either.)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert last.startswith("error: ") and "File too large" in last
    assert registry.current("4").name == v(registry, "4", 2) and not list((tmp_path / "4").glob(".CURRENT.*"))
