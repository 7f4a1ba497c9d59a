"""setup-project's Data Manager tabs, as data (tests/e2e/test_label_studio.py and test_browser.py check them in a
real Label Studio)."""

from backend.labelstudio.project_setup import (
    MOST_UNCERTAIN,
    POSSIBLY_MISLABELED,
    SOURCE_ID,
    SUSPECT_KEY,
    TASK_COLUMNS,
    uncertain_tab,
    wanted_tabs,
)

ALL_COLUMNS = {f"tasks:{c}" for c in TASK_COLUMNS} | {f"tasks:data.{k}" for k in ("text", SOURCE_ID, SUSPECT_KEY)}


def _visible(tab: dict) -> set[str]:
    return ALL_COLUMNS - set(tab["hiddenColumns"]["explore"])


def test_the_score_tabs_show_id_score_predicted_label_and_tweet_only():
    tabs = wanted_tabs("text", 0.3)
    assert set(tabs) == {MOST_UNCERTAIN, uncertain_tab(0.3), POSSIBLY_MISLABELED}
    expected = {"tasks:id", "tasks:predictions_score", "tasks:predictions_results", "tasks:data.text"}
    for name in (MOST_UNCERTAIN, uncertain_tab(0.3)):
        assert _visible(tabs[name]) == expected
        assert tabs[name]["ordering"] == ["tasks:predictions_score"]
        # The labeling view's side list: the tweet alone.
        assert ALL_COLUMNS - set(tabs[name]["hiddenColumns"]["labeling"]) == {"tasks:data.text"}
    widths = tabs[MOST_UNCERTAIN]["columnsWidth"]
    assert sum(widths[c] for c in expected) <= 1400 - 100  # on a 1,400-pixel screen, with the row's margins


def test_the_mislabeled_tab_lists_doubted_annotations_most_doubted_first():
    tab = wanted_tabs("tweet", 0.3)[POSSIBLY_MISLABELED]
    assert _visible(tab) - {"tasks:data.text"} == {
        "tasks:id",
        "tasks:annotations_results",
        "tasks:predictions_results",
        f"tasks:data.{SUSPECT_KEY}",
    }
    filters = {item["filter"]: (item["operator"], item["value"]) for item in tab["filters"]["items"]}
    assert filters == {
        "filter:tasks:total_annotations": ("greater", 0),
        f"filter:tasks:data.{SUSPECT_KEY}": ("greater", 0.5),
    }
    assert tab["ordering"] == [f"-tasks:data.{SUSPECT_KEY}"]
    assert tab["columnsDisplayType"] == {f"tasks:data.{SUSPECT_KEY}": "Number"}  # sorted as a number
    assert tab["columnsWidth"]["tasks:data.tweet"] == 700
