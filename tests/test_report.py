"""The report page, rendered from hand-made figures (tests/e2e/test_report.py opens it for a real project)."""

import numpy as np

from backend.labelstudio.client import LabeledTask, Task
from backend.report import Report, label_counts, learning_curve, render, scatter, stop_chart
from backend.stopping import StabilizingPredictions
from backend.suspects import Suspect

CLASSES = ["ok", "xenófobo"]
EVIL = "</script><script>alert('x')</script> & <b>bold</b>"


def _history(n):
    return [
        {
            "version": f"project3-v{i + 1}",
            "kind": "linear" if i % 2 else "transformer",
            "labels_used": 20 * (i + 1),
            "label_counts": {"ok": 15 * (i + 1), "xenófobo": 5 * (i + 1)},
            "metrics": {"f1_macro": 0.5 + i / 20, "f1": {"ok": 0.8, "xenófobo": 0.3 + i / 10}},
            "created_at": f"2026-11-25T10:0{i}:00Z",
            "kappa_previous": None if i == 0 else 0.9 + i / 100,
            "unlabeled": 100,
            "uncertain": 40 - i,
            "uncertain_share": (40 - i) / 100,
        }
        for i in range(n)
    ]


def _report(**kw):
    tasks = [Task(i, f"tweet {i}") for i in range(9)] + [Task(99, EVIL)]
    probs = np.linspace(0, 1, len(tasks))
    history = kw.pop("history", _history(4))
    report = Report(
        project=3,
        classes=CLASSES,
        threshold=0.3,
        label_studio_url="http://ls.example:8080",
        serving="project3-v4",
        own_version="project3-v4",
        tasks=tasks,
        probs=np.column_stack([1 - probs, probs]),
        history=history,
        signal=StabilizingPredictions().judge(history),
        label_counts={"ok": 60, "xenófobo": 20},
        labeled=[LabeledTask(7, EVIL, "xenófobo"), LabeledTask(8, "hola", "ok")],
        suspects=[Suspect(0, "xenófobo", 0.12, "ok")],
    )
    for key, value in kw.items():
        setattr(report, key, value)
    return report


def test_the_scatter_has_one_point_per_unlabeled_task_coloured_by_prediction():
    report = _report()
    figure = scatter(report)
    points = {trace.name: len(trace.x) for trace in figure.data}
    assert sum(points.values()) == len(report.tasks)
    assert points == {"predicted ok (5)": 5, "predicted xenófobo (5)": 5}
    # The band |p0 - p1| <= 0.3 and the dashed lines at 0.5.
    shapes = figure.layout.shapes
    assert any(s.type == "path" and "L 0.3 0" in s.path for s in shapes)
    assert sum(1 for s in shapes if s.line.dash == "dash") == 2
    assert report.uncertain == int((np.abs(report.probs[:, 0] - report.probs[:, 1]) <= 0.3).sum())
    hover = " ".join(t for trace in figure.data for t in trace.hovertext)
    assert "&lt;/script&gt;" in hover and "</script>" not in hover


def test_thousands_of_points_are_drawn_with_webgl():
    n = 6000
    report = _report(tasks=[Task(i, "t") for i in range(n)], probs=np.tile([[0.3, 0.7]], (n, 1)))
    assert {trace.type for trace in scatter(report).data} == {"scattergl"}
    assert sum(len(trace.x) for trace in scatter(report).data) == n


def test_more_than_two_classes_plot_top_one_against_top_two():
    report = _report(classes=["a", "b", "c"], probs=np.tile([[0.2, 0.5, 0.3]], (10, 1)))
    figure = scatter(report)
    (b_trace,) = [t for t in figure.data if len(t.x)]
    assert list(b_trace.x) == [0.5] * 10 and list(b_trace.y) == [0.3] * 10
    assert figure.layout.xaxis.title.text == "p(top-1 class)"


def test_the_curve_has_one_point_per_version_per_kind_and_marks_the_serving_one():
    history = _history(5)
    figure = learning_curve(history, "project3-v4", CLASSES)
    macro = [t for t in figure.data if t.name.endswith("macro F1")]
    assert {t.name for t in macro} == {"transformer · macro F1", "linear · macro F1"}
    assert sum(len(t.x) for t in macro) == len(history)
    (serving,) = [t for t in figure.data if t.name.startswith("serving")]
    assert list(serving.x) == [80] and serving.name == "serving: project3-v4"
    kappa = stop_chart(history, 0.99).data[0]
    assert list(kappa.y) == [h["kappa_previous"] for h in history]


def test_a_first_version_is_drawn_on_readable_axes():
    (first,) = _history(1)
    for figure in (learning_curve([first], None, CLASSES), stop_chart([first], 0.99)):
        assert figure.layout.xaxis.rangemode == "tozero"
    start, end = label_counts([first], CLASSES).layout.xaxis.range
    assert (start.isoformat(), end.isoformat()) == ("2026-11-25T09:30:00+00:00", "2026-11-25T10:30:00+00:00")
    assert label_counts(_history(2), CLASSES).layout.xaxis.range is None


def test_the_page_explains_each_part_and_escapes_tweets():
    page = render(_report(), plotly_src="report/plotly.min.js")
    for part in ("figure-scatter", "figure-curve", "figure-counts", "figure-stop", 'id="suspects"'):
        assert part in page
    assert '<script src="report/plotly.min.js"></script>' in page
    assert "Keep labeling: the model is still changing" in page
    assert "http://ls.example:8080/projects/3/data?task=7" in page
    assert "<script>alert" not in page and "&lt;/script&gt;&lt;script&gt;alert" in page
    assert page.count("<tr>") == 2  # the header and one suspect


def test_a_project_without_versions_gets_a_page_that_says_so():
    report = _report(history=[], serving=None, own_version=None, suspects=[], label_counts={"ok": 3, "xenófobo": 0})
    report.signal = StabilizingPredictions().judge([])
    assert "figure-" not in render(report, plotly_src="x.js").split("</head>")[1]
    page = render(report, plotly_src=None)
    assert 'id="no-scatter"' in page and 'id="no-versions"' in page
    assert "no model has been trained on this project" in page
    assert "needs at least 2 labels of every class" in page  # one class only
    assert "Plotly" in page.split("</head>")[0]  # inlined: the file works offline
