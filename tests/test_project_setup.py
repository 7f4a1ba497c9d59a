"""setup-project's Data Manager tabs, as data, and what it asks of Label Studio's ML connection
(tests/e2e/test_label_studio.py and test_browser.py check both in a real Label Studio)."""

from types import SimpleNamespace

from backend.labelstudio.project_setup import (
    MOST_UNCERTAIN,
    POSSIBLY_MISLABELED,
    SOURCE_ID,
    SUSPECT_KEY,
    TASK_COLUMNS,
    connect_backend,
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


class _Connections:
    """Label Studio's ML connections and webhooks of one project, as the SDK's `ls.ml` and `ls.webhooks` show them."""

    def __init__(self, urls):
        self.items = [SimpleNamespace(id=i, url=url, auth_method="NONE") for i, url in enumerate(urls)]
        self.updates, self.created = [], []

    def list(self, project):
        return list(self.items)

    def update(self, id, **fields):
        self.updates.append((id, fields))

    def create(self, **fields):
        self.created.append(fields)


def test_a_connection_made_before_the_backend_had_a_login_is_given_it():
    """A `make run` stack from before the backend's login had connected Label Studio without one: every call of
    Label Studio would then answer 401. Label Studio never shows the password, so setup sends it again."""
    ml, hooks = _Connections(["http://127.0.0.1:9090"]), _Connections([])
    ls = SimpleNamespace(ml=ml, webhooks=hooks)
    assert not connect_backend(ls, 3, "http://127.0.0.1:9090/", backend_auth=("admin", "pw"), webhook_secret="s")
    login = {"auth_method": "BASIC_AUTH", "basic_auth_user": "admin", "basic_auth_pass": "pw"}
    # Label Studio validates a change of the connection against the URL and the project: both go with it.
    assert ml.updates == [(0, {"url": "http://127.0.0.1:9090", "project": 3, **login})] and ml.created == []
    assert hooks.created[0]["headers"] == {"X-Webhook-Secret": "s"}
    # A new connection carries the login from the start.
    ml = _Connections([])
    ls = SimpleNamespace(ml=ml, webhooks=_Connections([]))
    assert connect_backend(ls, 3, "http://b:9090", backend_auth=("admin", "pw"))
    assert ml.created == [{"project": 3, "url": "http://b:9090", "title": "tweets active learning", **login}]
