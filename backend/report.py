"""The project manager's report: one HTML page per project, served at /report and written by `python -m backend
report`. Four parts, each a plotly figure or a table with one sentence saying how to read it:

- the notebook's scatter: every unlabeled task's probabilities under the serving model, the uncertain band;
- the learning curve: each version's held-out F1 against its label count, per model kind (registry history);
- when to stop: kappa between consecutive versions' predictions and the uncertain share (stopping.py);
- labels that look wrong: annotated tasks ranked by an out-of-fold model (suspects.py).

`gather` reads Label Studio, the registry and the model; `render` turns that into HTML and never fails on
missing parts: a project without versions, or with one class only, gets a page that says what is missing.
The page loads plotly's JavaScript from `plotly_src` (the backend serves it: no CDN), or inlines it in a file.
"""

from __future__ import annotations

import html
import itertools
import logging
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import plotly
import plotly.graph_objects as go
from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from .errors import LabelStudioUnavailable, UnknownProject
from .labelstudio.client import LabeledTask, LabelStudioClient, Task
from .labelstudio.label_config import parse_label_config
from .labelstudio.project_setup import not_connected
from .model_store import ModelStore
from .predictions import in_config_order
from .registry import kind_of, scope_of
from .retraining.pool import PoolStore
from .settings import Settings
from .stopping import StabilizingPredictions, StopSignal, f_bound
from .suspects import Suspect, rank_suspects
from .uncertainty import margin

log = logging.getLogger(__name__)

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
MAX_SUSPECTS = 25
MAX_SVG_POINTS = 5000
# From 0 labels: a curve's start is where the labels began, and a lone first version gets whole-number ticks.
LABELS_AXIS = {"title": "labels the version was trained on", "rangemode": "tozero"}
_PAGES = Environment(loader=PackageLoader("backend", "templates"), autoescape=True)


@dataclass
class Report:
    project: int
    classes: list[str]
    threshold: float
    label_studio_url: str
    serving: str | None  # the version that scored the scatter; None: nothing trained serves the project
    own_version: str | None  # the project's own serving version (None: it has none yet)
    tasks: list[Task] = field(default_factory=list)  # unlabeled, scored
    probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # columns in the order of `classes`
    history: list[dict] = field(default_factory=list)
    signal: StopSignal = field(default_factory=lambda: StabilizingPredictions().judge([]))
    label_counts: dict[str, int] = field(default_factory=dict)
    labeled: list[LabeledTask] = field(default_factory=list)
    suspects: list[Suspect] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))

    @property
    def margins(self) -> np.ndarray:
        return margin(self.probs) if len(self.probs) else np.zeros(0)

    @property
    def uncertain(self) -> int:
        return int((self.margins <= self.threshold).sum())


def gather(project: int, settings: Settings, store: ModelStore, *, served_only: bool = False) -> Report:
    """Everything the page shows, read now: tasks and labels from Label Studio, versions from the registry.
    `served_only` (/report): only a project connected to this backend, though its token may read others."""
    if not settings.api_key:
        raise LabelStudioUnavailable("LABEL_STUDIO_API_KEY is not set: the report reads the project from Label Studio")
    client = LabelStudioClient.from_settings(settings)
    if served_only and (problem := not_connected(client, project, store.registry.instance)):
        log.warning("report of project %s refused: %s", project, problem)
        raise UnknownProject(f"project {project} is not connected to this backend: the report shows only those")
    config = parse_label_config(client.label_config(project))
    labeled, annotated = client.annotated(project, config)
    # The worker's copy of the project's tasks (read from Label Studio only if the worker never made one).
    unlabeled = PoolStore.of(settings, project).current(client, config).without(annotated)
    registry = store.registry
    scope = scope_of(project)
    own = registry.current(scope)
    report = Report(
        project=project,
        classes=list(config.classes),
        threshold=settings.uncertain_margin,
        label_studio_url=settings.public_label_studio_url,
        serving=None,
        own_version=own.name if own else None,
        history=registry.history(scope),
        label_counts={c: sum(t.label == c for t in labeled) for c in config.classes},
        labeled=labeled,
    )
    report.signal = settings.stop_rule.judge(report.history)

    classifier = store.get(project)
    if classifier.serves(config.classes):
        # The tasks /predict would score (the pool holds a task whose text is too long without one: no point).
        report.tasks = [Task(int(i), text) for i, text in zip(unlabeled.ids, unlabeled.texts(), strict=True)]
        report.probs = in_config_order(classifier, config, unlabeled.probabilities(classifier))
        report.serving = classifier.version
    report.suspects = rank_suspects(
        [t.text for t in labeled],
        [t.label for t in labeled],
        config.classes,
        settings=settings,
        unlabeled=unlabeled,
        limit=MAX_SUSPECTS,
    )
    return report


def render(report: Report, *, plotly_src: str | None) -> str:
    """The page; `plotly_src`: the URL of plotly.min.js, or None to inline it (a file that works offline)."""
    script = (
        Markup('<script src="{}"></script>').format(plotly_src)
        if plotly_src
        else Markup("<script>{}</script>").format(Markup(PLOTLY_JS.read_text(encoding="utf-8")))
    )
    figures = {"scatter": scatter(report)} if report.serving else {}
    if report.history:
        figures["curve"] = learning_curve(report.history, report.own_version, report.classes)
        figures["counts"] = label_counts(report.history, report.classes)
        figures["stop"] = stop_chart(report.history, report.signal.threshold)
    return _PAGES.get_template("report.html").render(
        report=report,
        plotly_script=script,
        figures={name: _div(fig, name) for name, fig in figures.items()},
        f1_bound=f_bound(report.signal.threshold),
        suspects=[(s, report.labeled[s.index]) for s in report.suspects],
        enough_for_suspects=all(report.label_counts.get(c, 0) >= 2 for c in report.classes),
        latest=report.history[-1] if report.history else None,
    )


def _div(figure: go.Figure, name: str) -> Markup:
    # Markup: plotly writes the figure as JSON inside a script and escapes "</" in it (tweets cannot close it).
    return Markup(figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"figure-{name}"))


def _hover(text: str) -> str:
    """A tweet as hover text: escaped (plotly reads a few HTML tags in it), wrapped, cut after 280 characters."""
    short = text if len(text) <= 280 else text[:279] + "…"
    return "<br>".join(html.escape(line) for line in textwrap.wrap(short, 60)) or "(empty)"


def scatter(report: Report) -> go.Figure:
    """The notebook's picture: p(first class) against p(second class), one point per unlabeled task, coloured
    by the predicted label, with the band |p0 - p1| <= t shaded. More than two classes: top-1 against top-2."""
    probs, classes, t = report.probs, report.classes, report.threshold
    if len(classes) == 2:
        x, y = probs[:, 0], probs[:, 1]
        x_title, y_title = f"p({classes[0]})", f"p({classes[1]})"
    else:
        top2 = np.sort(probs, axis=1)[:, -2:] if len(probs) else np.zeros((0, 2))
        x, y = top2[:, 1], top2[:, 0]
        x_title, y_title = "p(top-1 class)", "p(top-2 class)"
    predicted = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    figure = go.Figure()
    # The band: every point within t of the diagonal x = y, i.e. margin <= t.
    figure.add_shape(
        type="path",
        path=f"M 0 0 L {t} 0 L 1 {1 - t} L 1 1 L {1 - t} 1 L 0 {t} Z",
        fillcolor="rgba(255, 193, 7, 0.25)",
        line={"width": 0},
        layer="below",
    )
    for value in (0.5,):
        figure.add_hline(y=value, line_dash="dash", line_color="grey")
        figure.add_vline(x=value, line_dash="dash", line_color="grey")
    margins = report.margins
    # Past a few thousand points SVG gets slow in a browser; WebGL draws them all.
    trace = go.Scatter if len(report.tasks) <= MAX_SVG_POINTS else go.Scattergl
    for index, name in enumerate(classes):
        rows = np.flatnonzero(predicted == index)
        figure.add_trace(
            trace(
                x=x[rows],
                y=y[rows],
                mode="markers",
                name=f"predicted {name} ({len(rows)})",
                marker={"size": 7, "opacity": 0.7},
                hovertext=[
                    f"task {report.tasks[i].id} · margin {margins[i]:.2f}<br>{_hover(report.tasks[i].text)}"
                    for i in rows
                ],
                hoverinfo="text",
                customdata=[report.tasks[i].id for i in rows],
            )
        )
    figure.update_layout(
        xaxis={"title": x_title, "range": [-0.02, 1.02], "constrain": "domain"},
        yaxis={"title": y_title, "range": [-0.02, 1.02], "scaleanchor": "x"},
        height=520,
        margin={"t": 30},
        legend={"title": f"shaded: margin ≤ {t:g}"},
    )
    return figure


def _kinds(history: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(kind_of(h) for h in history))


def learning_curve(history: Sequence[dict], serving: str | None, classes: Sequence[str]) -> go.Figure:
    """Each version's held-out F1 (per class, and macro) at its label count, one colour per model kind; the
    serving version circled."""
    figure = go.Figure()
    styles = itertools.cycle(["dot", "dash", "dashdot", "longdash"])
    dashes = {"macro F1": "solid", **{f"F1 {c}": next(styles) for c in classes}}
    for kind in _kinds(history):
        versions = [h for h in history if kind_of(h) == kind]
        x = [h.get("labels_used") for h in versions]
        names = [h.get("version", "?") for h in versions]
        for metric, dash in dashes.items():
            figures = [h.get("metrics") or {} for h in versions]
            y = [m.get("f1_macro") if metric == "macro F1" else (m.get("f1") or {}).get(metric[3:]) for m in figures]
            figure.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers",
                    name=f"{kind} · {metric}",
                    line={"dash": dash},
                    text=names,
                    hovertemplate="%{text}: %{y:.3f} at %{x} labels<extra>" + f"{kind} · {metric}</extra>",
                    legendgroup=kind,
                    visible=True if metric == "macro F1" or len(classes) == 2 else "legendonly",
                )
            )
    served = [h for h in history if h.get("version") == serving]
    if served:
        h = served[-1]
        figure.add_trace(
            go.Scatter(
                x=[h.get("labels_used")],
                y=[(h.get("metrics") or {}).get("f1_macro")],
                mode="markers",
                name=f"serving: {serving}",
                marker={"size": 18, "symbol": "circle-open", "line": {"width": 3}, "color": "black"},
                hoverinfo="name",
            )
        )
    figure.update_layout(
        xaxis=LABELS_AXIS,
        yaxis={"title": "held-out F1", "range": [0, 1.02]},
        height=420,
        margin={"t": 30},
    )
    return figure


def label_counts(history: Sequence[dict], classes: Sequence[str]) -> go.Figure:
    """Labels per class at each version, over time."""
    figure = go.Figure()
    when = [h.get("created_at") for h in history]
    for name in classes:
        figure.add_trace(
            go.Scatter(
                x=when,
                y=[(h.get("label_counts") or {}).get(name) for h in history],
                mode="lines+markers",
                name=name,
                stackgroup="labels",
            )
        )
    figure.update_layout(xaxis_title="version promoted at (UTC)", yaxis_title="labels", height=300, margin={"t": 30})
    if len(set(when)) == 1 and when[0]:
        # Plotly spans a lone instant by a millisecond either side; an hour says "when" at a glance.
        at = datetime.fromisoformat(when[0].replace("Z", "+00:00"))
        figure.update_xaxes(range=[at - timedelta(minutes=30), at + timedelta(minutes=30)])
    return figure


def stop_chart(history: Sequence[dict], threshold: float) -> go.Figure:
    """Kappa to the previous version, and the share of unlabeled tasks in the uncertain band, per version."""
    x = [h.get("labels_used") for h in history]
    names = [h.get("version", "?") for h in history]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=x,
            y=[h.get("kappa_previous") for h in history],
            mode="lines+markers",
            name="kappa to the previous version",
            text=names,
            hovertemplate="%{text}: kappa %{y:.3f}<extra></extra>",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=x,
            y=[h.get("uncertain_share") for h in history],
            mode="lines+markers",
            name="share of unlabeled tasks in the uncertain band",
            text=[f"{h.get('version', '?')}: {h.get('uncertain')} of {h.get('unlabeled')}" for h in history],
            hovertemplate="%{text} (%{y:.1%})<extra></extra>",
            line={"dash": "dot"},
        )
    )
    figure.add_hline(y=threshold, line_dash="dash", line_color="green", annotation_text=f"stop at {threshold:g}")
    figure.update_layout(xaxis=LABELS_AXIS, yaxis={"range": [0, 1.02]}, height=360, margin={"t": 30})
    return figure


def write_report(project: int, out: Path, settings: Settings) -> Report:
    """`python -m backend report`: the page as one file, plotly inlined."""
    report = gather(project, settings, ModelStore(settings))
    out.write_text(render(report, plotly_src=None), encoding="utf-8")
    return report
