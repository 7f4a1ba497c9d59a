"""Command line: `python -m backend serve | worker | run | train | predict | export | report | versions |
rollback | setup-project | simulate | smoke`.

Each command is a thin wrapper over a package function; heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from .settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the ML backend (gunicorn, port 9090)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)

    train = commands.add_parser(
        "train",
        help="train the candidate kinds (MODEL_KINDS) on a labeled CSV (text,label) as the worker does, and "
        "store and promote the best (the transformer with TRAIN_EPOCHS, TRAIN_LEARNING_RATE, TRAIN_MIN_STEPS)",
    )
    train.add_argument("--csv", required=True, type=Path)
    train.add_argument("--project", help="Label Studio project id (default: the version every project uses)")
    train.add_argument("--base-model", help="model to fine-tune (default: MODEL_NAME)")
    train.add_argument("--epochs", type=float, help="default: TRAIN_EPOCHS")
    train.add_argument("--learning-rate", type=float, help="default: TRAIN_LEARNING_RATE")
    train.add_argument("--kinds", help="candidate model kinds, comma-separated (default: MODEL_KINDS)")
    train.add_argument(
        "--label-config", type=Path, help="its classes are the labels (default: the label_config.xml shipped here)"
    )

    predict = commands.add_parser("predict", help="score a CSV (id,text) offline, most uncertain first")
    predict.add_argument("--csv", required=True, type=Path)
    predict.add_argument("--out", required=True, type=Path)
    predict.add_argument("--project", help="use this project's version (default: the default version)")
    predict.add_argument(
        "--threshold", type=float, help="keep only rows scored <= THRESHOLD (the UNCERTAINTY score; margin by default)"
    )

    export = commands.add_parser("export", help="a Label Studio project's unlabeled tasks, most uncertain first")
    export.add_argument("--project", required=True, type=int)
    export.add_argument("--out", required=True, type=Path, help="a .csv or .json file")
    export.add_argument(
        "--threshold", type=float, help="keep only tasks scored <= THRESHOLD (the UNCERTAINTY score; margin by default)"
    )

    report = commands.add_parser(
        "report",
        help="a project's learning report as one HTML file (the page of /report?project=ID, works offline)",
    )
    report.add_argument("--project", required=True, type=int)
    report.add_argument("--out", required=True, type=Path, help="an .html file")

    commands.add_parser("versions", help="list stored model versions, their figures and the stop signal")

    rollback = commands.add_parser("rollback", help="serve an earlier version again and re-score the project with it")
    rollback.add_argument("--project", help="Label Studio project id (default: the default version)")
    rollback.add_argument("--to", required=True, dest="version", help="version name, as `versions` lists it")
    rollback.add_argument("--no-rescore", action="store_true", help="do not enqueue the re-scoring in Label Studio")

    setup = commands.add_parser(
        "setup-project", help="create or update a Label Studio project for the loop (idempotent)"
    )
    source = setup.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", type=Path, help="tweets: id,text[,label] (labels become annotations)")
    source.add_argument(
        "--demo",
        action="store_true",
        help="the demo project of `make run`: the shipped demo tweets, and a first model trained on their labels",
    )
    setup.add_argument("--title", default="Tweets: xenofobia")
    setup.add_argument("--label-config", type=Path, help="default: the label_config.xml shipped with the backend")
    setup.add_argument("--backend-url", default="http://localhost:9090", help="the backend as Label Studio reaches it")
    setup.add_argument("--threshold", type=float, default=0.3, help="margin of the 'Uncertain' tab")
    setup.add_argument("--no-retrieve", action="store_true", help="do not ask the backend for predictions now")
    shown = setup.add_mutually_exclusive_group()
    shown.add_argument(
        "--hide-predictions",
        dest="show_predictions",
        action="store_false",
        default=None,
        help="annotators label without the model's guess pre-selected; the queue still follows its uncertainty",
    )
    shown.add_argument(
        "--show-predictions", dest="show_predictions", action="store_true", help="pre-select it again (the default)"
    )

    commands.add_parser(
        "run",
        help="the whole stack locally (Redis, Label Studio, backend, worker) with a demo project; Ctrl-C stops it",
    )

    simulate = commands.add_parser(
        "simulate",
        help="replay the loop on labeled tweets: uncertainty against random sampling, curves and labels saved",
    )
    simulate.add_argument("--pool", required=True, type=Path, help="labeled tweets (text,label): the pool")
    simulate.add_argument("--test", type=Path, help="labeled tweets to test on (default: --test-size of the pool)")
    simulate.add_argument("--test-size", type=float, default=0.3, help="share of --pool held out per seed")
    simulate.add_argument(
        "--unlabeled",
        type=Path,
        help="the project's other tweets (text): never picked (no label), but in its vocabulary and latent features",
    )
    simulate.add_argument("--strategies", default="margin,random", help="random and/or uncertainty strategies")
    simulate.add_argument("--kinds", help="model kinds, comma-separated (default: MODEL_KINDS)")
    simulate.add_argument("--batch", type=int, default=10, help="labels per round (the loop's RETRAIN_EVERY)")
    simulate.add_argument("--start", type=int, default=10, help="random labels to start from")
    simulate.add_argument("--max-labels", type=int, default=300)
    simulate.add_argument("--steps", default="50,100,150,200,300", help="label counts the printed table shows")
    simulate.add_argument("--seeds", type=int, default=5)
    simulate.add_argument("--out", type=Path, default=Path("simulation"), help="folder for JSON, CSV and chart")

    worker = commands.add_parser("worker", help="run an RQ worker for the retraining and re-scoring jobs")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")

    smoke = commands.add_parser(
        "smoke",
        help="check a running stack end to end (backend, Redis and its workers, Label Studio, the projects) and "
        "say in plain words what is wrong; exit status 1 if anything is",
    )
    smoke.add_argument("--project", type=int, help="check this project (default: every one this backend serves)")
    smoke.add_argument("--backend-url", help="the backend (default: http://localhost:PORT, PORT 9090)")
    smoke.add_argument("--train", action="store_true", help="also press Start Training and wait for the job")

    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:  # a setting of the environment or .env: say which, no traceback
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        sys.exit(f"error: invalid settings: {problems}")
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Label Studio call otherwise
    from .errors import BackendError

    try:
        handlers = {
            "serve": _serve,
            "worker": _worker,
            "train": _train,
            "simulate": _simulate,
            "predict": _predict,
            "versions": _versions,
            "rollback": _rollback,
            "setup-project": _setup_project,
            "export": _export,
            "report": _report,
            "run": _run,
            "smoke": _smoke,
        }
        handlers[args.command](args, settings)
    # The user's input or machine (a missing file, a folder given for a file, a MODEL_DIR that cannot be written):
    # one line that says what is wrong, no traceback.
    except (OSError, ValueError, BackendError) as exc:
        sys.exit(f"error: {exc}")


def _serve(args, settings: Settings) -> None:
    from .retraining.policy import check_credentials
    from .wsgi import serve

    check_credentials(settings)
    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    serve(settings.model_copy(update=overrides))


def _worker(args, settings: Settings) -> None:
    from rq import Worker

    from .retraining.policy import check_credentials, connect

    check_credentials(settings)  # before the slow imports: a wrong password fails at once
    # Import the jobs (torch, transformers) once here; each job's forked process inherits them.
    from .retraining import jobs  # noqa: F401

    # Maintenance finds the chunk jobs of a killed worker (RQ retries them, then lets the final switch run). It runs
    # when the worker wakes from waiting for a job (worker_ttl - 15 s), so both are about a minute, not RQ's 10 and
    # 7: a lost worker delays a project's switch by about 2.5 minutes at most (90 s until RQ calls it lost).
    worker = Worker([settings.rq_queue], connection=connect(settings), maintenance_interval=60, worker_ttl=75)
    # RQ's scheduler (one process per worker; one of them holds the queue's lock) enqueues the cleanups that wait
    # for annotators to pause (jobs.delete_old_predictions).
    worker.work(burst=args.burst, logging_level=settings.log_level, with_scheduler=True)


def _rollback(args, settings: Settings) -> None:
    from .registry import Registry, scope_of

    scope = scope_of(args.project)
    Registry(settings.model_dir).set_current(scope, args.version)
    print(f"{scope}: now serving {args.version} (every server process picks it up on its next request)")
    if args.no_rescore or not scope.isdigit():
        return
    from redis.exceptions import RedisError

    from .retraining.jobs import enqueue_rescoring
    from .retraining.policy import RetrainPolicy

    try:
        enqueue_rescoring(int(scope), args.version, settings, RetrainPolicy.from_settings(settings).queue)
    except RedisError as exc:
        sys.exit(
            f"error: could not enqueue the re-scoring, Redis unreachable ({exc}); "
            f"press Start Training in Label Studio later, or run rollback again"
        )
    print(f"re-scoring of project {scope}'s unlabeled tasks with {args.version} enqueued")


def _setup_project(args, settings: Settings) -> None:
    from label_studio_sdk import LabelStudio

    from .labelstudio.label_config import default_label_config
    from .labelstudio.project_setup import setup_project
    from .stack.demo import setup_demo
    from .tables import read_csv

    if not settings.api_key:
        raise ValueError("set LABEL_STUDIO_API_KEY (a legacy token or a personal access token)")
    ls = LabelStudio(base_url=settings.label_studio_url, api_key=settings.api_key)
    label_config = args.label_config.read_text(encoding="utf-8") if args.label_config else default_label_config()
    if args.demo:
        report = setup_demo(
            ls,
            args.backend_url,
            label_config=label_config,
            backend_auth=settings.basic_auth,
            webhook_secret=settings.secret,
        )
    else:
        report = setup_project(
            ls,
            title=args.title,
            label_config=label_config,
            rows=read_csv(args.csv, ["text"]),
            backend_url=args.backend_url,
            threshold=args.threshold,
            retrieve=not args.no_retrieve,
            backend_auth=settings.basic_auth,
            webhook_secret=settings.secret,
            show_predictions=args.show_predictions,
        )
    if report.labels_restored:
        print(f"project {report.project}: {report.labels_restored} labels of the CSV written to tweets that had none")
    if report.scored_by_worker:
        print(f"project {report.project}: the worker scores the {report.imported} new tweets (seconds; see its log)")
    if report.training_requested:
        print(f"project {report.project}: training of a first model on its labels queued (see the worker's log)")
    print(
        f"project {report.project} at {settings.label_studio_url}/projects/{report.project}: "
        f"{'created' if report.created else 'updated'}; {report.imported} tweets imported "
        f"({report.annotated} with labels), {report.already_there} already there; "
        f"tabs added: {report.tabs_created or 'none'}; model_version: {report.model_version or 'not set yet'}; "
        f"annotators {'see' if report.predictions_shown else 'do not see'} the model's guess"
    )


def _train(args, settings: Settings) -> None:
    from .labelstudio.label_config import default_label_config, parse_label_config
    from .models.finetune import TrainConfig
    from .models.training import train_version
    from .registry import Registry, scope_of
    from .tables import labeled_rows, read_csv

    # The label config's classes, not the CSV's: a version trained on others (0/1) would serve no project.
    label_config = args.label_config.read_text(encoding="utf-8") if args.label_config else default_label_config()
    classes = parse_label_config(label_config).classes
    texts, labels = labeled_rows(read_csv(args.csv, ["text", "label"]), classes)
    if args.kinds:
        settings = settings.model_copy(
            update={"model_kinds": Settings.model_validate({"model_kinds": args.kinds}).model_kinds}
        )
    registry = Registry(settings.model_dir)
    scope = scope_of(args.project)
    with registry.stage(scope):
        pass  # MODEL_DIR can be written: found now, not after minutes of training
    outcome = train_version(
        texts,
        labels,
        classes,
        kinds=settings.kinds,
        settings=settings.model_copy(update={"model_name": args.base_model}) if args.base_model else settings,
        registry=registry,
        scope=scope,
        serving=registry.current(scope),
        train_config=TrainConfig.from_settings(
            settings, warm=False, epochs=args.epochs, learning_rate=args.learning_rate
        ),
    )
    print(outcome.decision)
    if outcome.version is not None:
        print(f"stored and promoted {outcome.version.name} at {outcome.version.path}")


def _simulate(args, settings: Settings) -> None:
    from .labelstudio.label_config import default_label_config, parse_label_config
    from .simulation import SimulationConfig, format_summary, simulate
    from .tables import read_csv

    kinds = Settings.model_validate({"model_kinds": args.kinds}).kinds if args.kinds else None
    config = SimulationConfig(
        strategies=[s.strip() for s in args.strategies.split(",") if s.strip()],
        kinds=kinds,
        batch=args.batch,
        start=args.start,
        max_labels=args.max_labels,
        seeds=args.seeds,
        test_size=args.test_size,
        report_at=[int(n) for n in args.steps.split(",")],
    )
    classes = parse_label_config(default_label_config()).classes
    # One line per training would break the progress bar; the report has every figure.
    for name in ("backend.registry", "backend.models"):
        logging.getLogger(name).setLevel(logging.WARNING)
    report = simulate(
        read_csv(args.pool, ["text", "label"]),
        read_csv(args.test, ["text", "label"]) if args.test else None,
        classes,
        config=config,
        settings=settings,
        out=args.out,
        unlabeled=[r["text"] for r in read_csv(args.unlabeled, ["text"])] if args.unlabeled else (),
    )
    print(format_summary(report))
    print(f"curves, table and chart in {args.out}/")


def _predict(args, settings: Settings) -> None:
    from .export import score_csv

    written = score_csv(args.csv, args.out, settings, project=args.project, threshold=args.threshold)
    print(f"wrote {written} rows to {args.out}")


def _run(args, settings: Settings) -> None:
    from .stack.launcher import run

    run()


def _smoke(args, settings: Settings) -> None:
    from .smoke import main as smoke

    sys.exit(smoke(settings, args.backend_url, project=args.project, train=args.train))


def _export(args, settings: Settings) -> None:
    from .export import export_project

    written = export_project(args.project, args.out, settings, threshold=args.threshold)
    print(f"wrote {written} tasks of project {args.project} to {args.out}")


def _report(args, settings: Settings) -> None:
    from .report import write_report

    report = write_report(args.project, args.out, settings)
    print(f"wrote the report of project {args.project} to {args.out}")
    if report.history:
        print(report.signal.sentence)


def _versions(args, settings: Settings) -> None:
    from .registry import Registry

    registry = Registry(settings.model_dir)
    scopes = registry.scopes()
    if not scopes:
        print(f"no trained versions under {settings.model_dir}")
    for scope in scopes:
        current = registry.current(scope)
        for version in registry.versions(scope):
            info = version.summary()
            mark = "*" if current and current.name == version.name else " "
            score = "-" if info["score"] is None else f"{info['score']:.3f}"
            print(
                f"{mark} {scope:>8} {version.name:<20} {info['kind']:<12} labels={info['labels'] or '?':<6} "
                f"{info['metric']}={score}  {info['created_at'] or ''}"
            )
            if info["decision"]:
                print(f"{'':11}{info['decision']}")
            if info["unlabeled"] is not None:
                kappa = "-" if info["kappa_previous"] is None else f"{info['kappa_previous']:.3f}"
                share = "-" if info["uncertain_share"] is None else f"{info['uncertain_share']:.1%}"
                print(
                    f"{'':11}kappa to previous {kappa}; uncertain {info['uncertain']} of {info['unlabeled']} "
                    f"unlabeled ({share})"
                )
        print(f"{'':11}{settings.stop_rule.judge(registry.history(scope)).sentence}")
