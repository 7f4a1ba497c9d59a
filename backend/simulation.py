"""`python -m backend simulate`: the loop replayed on labeled tweets, to measure the labels it saves.

Per seed, a stratified test set is held out (or given as its own CSV) and the rest is the pool, whose labels
are revealed only when a strategy picks a tweet. Every strategy starts from the same `start` random labels
(with every class among them) and then, batch after batch, does what the worker does: while a class has fewer
than MIN_LABELS_PER_CLASS labels there is no model and the batch is random (Label Studio's order); after that
`train_version` trains MODEL_KINDS (or `kinds`) into a temporary registry exactly as the worker does, the
promoted version is scored on the test set, and it picks the next batch: "random", or the tweets it is least
sure about by an uncertainty strategy (backend.uncertainty). The full-pool figure (the same training on every
pool label) says what the curves are heading for; "labels to 98%" is the first count at which a curve reaches
98% of it. `unlabeled`: the project's other tweets, which no strategy can pick (no label is known) but which
are there in a real project, in its vocabulary and latent features; the test tweets never are.

Writes to `out`: curves.json (every point of every seed), table.csv (mean and standard error per strategy and
label count), learning_curve.html (plotly, offline) and learning_curve.png when an image exporter is installed.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from . import calibration, uncertainty
from .models.base import TextClassifier, label_shortfall
from .models.loader import load_version
from .models.training import selection_metric, train_version
from .registry import Registry
from .settings import Settings
from .tables import labeled_rows

log = logging.getLogger(__name__)

REPORT_AT = (50, 100, 150, 200, 300)


@dataclass
class SimulationConfig:
    strategies: list[str] = field(default_factory=lambda: ["margin", "random"])
    kinds: list[str] | None = None  # None: the settings' MODEL_KINDS
    batch: int = 10
    start: int = 10
    max_labels: int = 300
    seeds: int = 5
    test_size: float = 0.3  # when no test CSV is given
    report_at: list[int] = field(default_factory=lambda: list(REPORT_AT))

    def check(self) -> None:
        unknown = [s for s in self.strategies if s != "random" and s not in uncertainty.STRATEGIES]
        if unknown or not self.strategies:
            raise ValueError(f"strategies {unknown}: choose among {['random', *uncertainty.STRATEGIES]}")
        if self.batch < 1 or self.start < 2 or self.max_labels < self.start or self.seeds < 1:
            raise ValueError("need batch >= 1, start >= 2, max_labels >= start and seeds >= 1")


def _every_class(labels: list[str], classes: Sequence[str], what: str) -> None:
    missing = [c for c in classes if c not in labels]
    if missing:
        raise ValueError(f"the {what} has no tweet labeled {missing}: every class is needed to learn and to measure")


def _labeled(rows: list[dict], classes: Sequence[str], what: str) -> tuple[list[str], list[str]]:
    # A measurement goes on without rows it cannot read (named in a warning), not without a class.
    texts, labels = labeled_rows(rows, classes, strict=False)
    _every_class(labels, classes, what)
    return texts, labels


def _first_labels(pool_y: list[str], start: int, rng: np.random.Generator) -> list[int]:
    """`start` random pool rows with every class among them (redrawn whole until they have)."""
    classes = set(pool_y)
    while True:
        picked = [int(i) for i in rng.choice(len(pool_y), size=start, replace=False)]
        if {pool_y[i] for i in picked} == classes:
            return picked


def curve(
    strategy: str,
    pool_x: list[str],
    pool_y: list[str],
    test_x: list[str],
    test_y: list[str],
    classes: Sequence[str],
    *,
    config: SimulationConfig,
    settings: Settings,
    seed: int,
    progress: tqdm | None = None,
    unlabeled: Sequence[str] = (),
) -> tuple[dict[int, float | None], dict[int, dict]]:
    """({labels: F1 of the selection metric's class on the test set} after every batch (None: no model yet),
    {labels: calibration of the served version on the test set} at the report points)."""
    kinds = config.kinds or settings.kinds
    metric = selection_metric(classes, pool_y)
    rng = np.random.default_rng(seed)
    labeled = _first_labels(pool_y, config.start, rng)
    points: dict[int, float | None] = {}
    calibrated: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="simulate-") as folder:
        registry = Registry(folder)
        while True:
            texts, labels = [pool_x[i] for i in labeled], [pool_y[i] for i in labeled]
            rest = np.setdiff1d(np.arange(len(pool_x)), labeled)
            served = None
            if not label_shortfall(labels, classes, settings.min_labels_per_class):
                train_version(
                    texts,
                    labels,
                    classes,
                    kinds=kinds,
                    settings=settings,
                    registry=registry,
                    scope="sim",
                    unlabeled=[*(pool_x[i] for i in rest), *unlabeled],
                    serving=registry.current("sim"),
                )
                version = registry.current("sim")
                assert version is not None
                registry.prune("sim", keep=2)
                served = load_version(version, settings, dtype="float32")
                points[len(labeled)] = _score(served.predict_proba(test_x), served.labels, test_y, metric)
                if len(labeled) in config.report_at:
                    calibrated[len(labeled)] = test_calibration(served, test_x, test_y)
            else:
                points[len(labeled)] = None
            if progress is not None:
                progress.update(1)
            if len(labeled) >= min(config.max_labels, len(pool_x)) or len(rest) == 0:
                return points, calibrated
            need = min(config.batch, len(rest), config.max_labels - len(labeled))
            if served is None or strategy == "random":
                picked = rng.choice(rest, size=need, replace=False)
            else:
                scores = uncertainty.score(served.predict_proba([pool_x[i] for i in rest]), strategy)
                picked = rest[np.argsort(scores, kind="stable")[:need]]
            labeled += [int(i) for i in picked]


def test_calibration(served: TextClassifier, test_x: list[str], test_y: list[str], band: float = 0.3) -> dict:
    """How the served probabilities compare with the test labels, without (T = 1) and with its temperature: the
    expected calibration error, and the share of test tweets in the uncertain band (margin <= `band`) with the
    share of them the model gets wrong."""
    logits = served.predict_logits(test_x)
    truth = np.array([served.labels.index(y) for y in test_y])
    figures: dict[str, float] = {"temperature": round(served.temperature, 4)}
    for name, temperature in (("raw", 1.0), ("calibrated", served.temperature)):
        probs = calibration.softmax(logits, temperature)
        uncertain = uncertainty.margin(probs) <= band
        wrong = probs.argmax(axis=1) != truth
        figures[f"ece_{name}"] = round(calibration.expected_calibration_error(probs, truth), 4)
        figures[f"uncertain_share_{name}"] = round(float(uncertain.mean()), 4)
        figures[f"uncertain_error_rate_{name}"] = round(float(wrong[uncertain].mean()), 4) if uncertain.any() else 0.0
    figures["error_rate"] = round(float((logits.argmax(axis=1) != truth).mean()), 4)
    return figures


def _score(probs: np.ndarray, labels: Sequence[str], truth: list[str], metric: str) -> float:
    from sklearn.metrics import f1_score

    predicted = [labels[i] for i in probs.argmax(axis=1)]
    if metric == "f1_macro":
        return round(float(f1_score(truth, predicted, average="macro", zero_division=0)), 4)
    return round(
        float(f1_score(truth, predicted, labels=[metric.split(":", 1)[1]], average="macro", zero_division=0)), 4
    )


def full_pool(pool_x, pool_y, test_x, test_y, classes, *, kinds, settings, unlabeled: Sequence[str] = ()) -> float:
    """The figure of the same training on every pool label."""
    with tempfile.TemporaryDirectory(prefix="simulate-full-") as folder:
        registry = Registry(folder)
        outcome = train_version(
            pool_x, pool_y, classes, kinds=kinds, settings=settings, registry=registry, scope="sim", unlabeled=unlabeled
        )
        assert outcome.version is not None
        served = load_version(outcome.version, settings, dtype="float32")
        return _score(served.predict_proba(test_x), served.labels, test_y, selection_metric(classes, pool_y))


def simulate(
    pool_rows: list[dict],
    test_rows: list[dict] | None,
    classes: Sequence[str],
    *,
    config: SimulationConfig,
    settings: Settings,
    out: Path | None = None,
    progress: bool = True,
    unlabeled: Sequence[str] = (),
) -> dict[str, Any]:
    """Every strategy on every seed; the report (also written to `out` after each seed)."""
    config.check()
    kinds = config.kinds or settings.kinds
    texts, labels = _labeled(pool_rows, classes, "pool")
    fixed_test = _labeled(test_rows, classes, "test set") if test_rows is not None else None
    if fixed_test is not None:
        # A test tweet in the pool could be picked and learned: the test would measure memory.
        tested = set(fixed_test[0])
        kept = [i for i, text in enumerate(texts) if text not in tested]
        if len(kept) < len(texts):
            log.warning("%d pool tweets are also in the test set: left out of the pool", len(texts) - len(kept))
            texts, labels = [texts[i] for i in kept], [labels[i] for i in kept]
            _every_class(labels, classes, "pool")
    rounds = config.seeds * len(config.strategies) * (1 + -(-(config.max_labels - config.start) // config.batch))
    report: dict[str, Any] = {
        "config": asdict(config),
        "kinds": kinds,
        "classes": list(classes),
        "metric": selection_metric(classes, labels),
        "unlabeled": len(unlabeled),
        "seeds": [],
    }
    with tqdm(total=rounds, desc="simulating", unit="round", disable=not progress) as bar:
        for seed in range(config.seeds):
            if fixed_test is None:
                pool_x, test_x, pool_y, test_y = train_test_split(
                    texts, labels, test_size=config.test_size, stratify=labels, random_state=seed
                )
            else:
                pool_x, pool_y, (test_x, test_y) = texts, labels, fixed_test
            pool_x, pool_y, test_x, test_y = list(pool_x), list(pool_y), list(test_x), list(test_y)
            # A test tweet among the project's other tweets would shape the features it is tested with.
            tested = set(test_x)
            others = [t for t in unlabeled if t not in tested]
            full = full_pool(pool_x, pool_y, test_x, test_y, classes, kinds=kinds, settings=settings, unlabeled=others)
            runs = {
                strategy: curve(
                    strategy,
                    pool_x,
                    pool_y,
                    test_x,
                    test_y,
                    classes,
                    config=config,
                    settings=settings,
                    seed=seed,
                    progress=bar,
                    unlabeled=others,
                )
                for strategy in config.strategies
            }
            report["seeds"].append(
                {
                    "seed": seed,
                    "pool": len(pool_y),
                    "test": len(test_y),
                    "full_pool": full,
                    "curves": {s: {str(n): f for n, f in points.items()} for s, (points, _) in runs.items()},
                    "calibration": {s: {str(n): c for n, c in cal.items()} for s, (_, cal) in runs.items()},
                }
            )
            report["summary"] = summary(report)
            if out is not None:
                write(report, out)
    return report


def _mean_se(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    se = float(array.std(ddof=1) / np.sqrt(len(array))) if len(array) > 1 else 0.0
    return float(array.mean()), se


def labels_to_reach(points: dict[str, float | None], target: float) -> int | None:
    return next(
        (int(n) for n, f in sorted(points.items(), key=lambda kv: int(kv[0])) if f is not None and f >= target), None
    )


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """Mean and standard error per strategy and label count (a point without a model counts as 0), the
    full-pool figure, and the labels each strategy needs to reach 98% of it (median over seeds)."""
    seeds = report["seeds"]
    strategies = report["config"]["strategies"]
    counts = sorted({int(n) for s in seeds for c in s["curves"].values() for n in c})
    table = []
    for strategy in strategies:
        for n in counts:
            if any(str(n) not in s["curves"][strategy] for s in seeds):
                continue
            mean, se = _mean_se([s["curves"][strategy][str(n)] or 0.0 for s in seeds])
            table.append(
                {"strategy": strategy, "labels": n, "mean": round(mean, 4), "se": round(se, 4), "seeds": len(seeds)}
            )
    full_mean, full_se = _mean_se([s["full_pool"] for s in seeds])
    calibrated = []
    for strategy in strategies:
        for n in counts:
            found = [s.get("calibration", {}).get(strategy, {}).get(str(n)) for s in seeds]
            if found and all(found):
                means = {key: round(float(np.mean([f[key] for f in found])), 4) for key in found[0]}
                calibrated.append({"strategy": strategy, "labels": n, **means})
    reach = {}
    for strategy in strategies:
        needed = [labels_to_reach(s["curves"][strategy], 0.98 * s["full_pool"]) for s in seeds]
        # A seed that never reached it counts as more than any that did; None when the median is such a seed.
        median = float(np.median([n if n is not None else np.inf for n in needed]))
        reach[strategy] = {"per_seed": needed, "median": median if np.isfinite(median) else None}
    return {
        "table": table,
        "full_pool": {"mean": round(full_mean, 4), "se": round(full_se, 4)},
        "labels_to_98_percent": reach,
        "calibration": calibrated,
    }


def write(report: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "curves.json", out / "table.csv"]
    written[0].write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    with written[1].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["strategy", "labels", "mean", "se", "seeds"])
        writer.writeheader()
        writer.writerows(report["summary"]["table"])
    return written + chart(report, out)


def chart(report: dict[str, Any], out: Path) -> list[Path]:
    """The learning curves with a band of one standard error, as HTML (works offline) and PNG if possible."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    figure = go.Figure()
    rows = report["summary"]["table"]
    for strategy, color in zip(report["config"]["strategies"], itertools.cycle(qualitative.Plotly), strict=False):
        mine = [r for r in rows if r["strategy"] == strategy]
        x = [r["labels"] for r in mine]
        upper = [r["mean"] + r["se"] for r in mine]
        lower = [r["mean"] - r["se"] for r in mine]
        figure.add_trace(
            go.Scatter(
                x=x + x[::-1],
                y=upper + lower[::-1],
                fill="toself",
                fillcolor=color,
                opacity=0.2,
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
                name=strategy,
            )
        )
        figure.add_trace(
            go.Scatter(x=x, y=[r["mean"] for r in mine], mode="lines+markers", name=strategy, line={"color": color})
        )
    full = report["summary"]["full_pool"]["mean"]
    figure.add_hline(y=full, line_dash="dash", annotation_text=f"full pool {full:.3f}")
    figure.update_layout(
        title=f"{report['metric']} on the test set, {len(report['seeds'])} seeds, kinds {report['kinds']}",
        xaxis_title="labels",
        yaxis_title=report["metric"],
        yaxis_range=[0, 1],
        template="plotly_white",
    )
    html = out / "learning_curve.html"
    figure.write_html(html, include_plotlyjs=True)
    written = [html]
    try:
        figure.write_image(out / "learning_curve.png", width=900, height=500)
        written.append(out / "learning_curve.png")
    except Exception as exc:  # kaleido (and a browser for it) is optional
        log.info("no PNG of the chart (%s); the HTML has it", exc)
    return written


def format_summary(report: dict[str, Any]) -> str:
    """The table a person reads: mean (SE) at the report points, the full pool, labels to 98%."""
    summary_ = report["summary"]
    at = report["config"]["report_at"]
    lines = [
        f"{report['metric']} on the test set, mean (standard error) over {len(report['seeds'])} seeds",
        f"{'strategy':<18}" + "".join(f"{n:>16}" for n in at),
    ]
    for strategy in report["config"]["strategies"]:
        cells = {
            r["labels"]: f"{r['mean']:.3f} ({r['se']:.3f})" for r in summary_["table"] if r["strategy"] == strategy
        }
        lines.append(f"{strategy:<18}" + "".join(f"{cells.get(n, '-'):>16}" for n in at))
    full = summary_["full_pool"]
    lines.append(f"full pool: {full['mean']:.3f} ({full['se']:.3f})")
    for strategy, reach in summary_["labels_to_98_percent"].items():
        per_seed = "/".join(str(n) if n is not None else "-" for n in reach["per_seed"])
        median = "not reached" if reach["median"] is None else f"{reach['median']:.0f}"
        lines.append(f"labels to 98% of the full pool, {strategy}: median {median} (per seed {per_seed})")
    lines.append(
        "calibration on the test set (mean over seeds): expected calibration error raw -> calibrated; "
        "share of tweets with margin <= 0.3 and the share of those the model gets wrong, raw -> calibrated"
    )
    for row in summary_.get("calibration", []):
        lines.append(
            f"  {row['strategy']:<10} {row['labels']:>5} labels: T={row['temperature']:.2f}  "
            f"ECE {row['ece_raw']:.3f} -> {row['ece_calibrated']:.3f}  uncertain band "
            f"{row['uncertain_share_raw']:.0%} ({row['uncertain_error_rate_raw']:.0%} wrong) -> "
            f"{row['uncertain_share_calibrated']:.0%} ({row['uncertain_error_rate_calibrated']:.0%} wrong)"
        )
    return "\n".join(lines)
