"""The UI in a real browser against a real ``airflow api-server`` with the plugin and stored data.

One API server for the module (own AIRFLOW_HOME, SQLite, simple auth manager with a generated
password), the provider's store seeded through its own stores. Login as the simple auth manager
expects: POST ``/auth/token`` with the generated password, then the ``_token`` cookie in Chromium
(headless, Debian's chromium + chromedriver through selenium). Screenshots go to
``$AIRFLOW_PREDICTIVE_ARTIFACTS`` (else the test's tmp dir).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_predictive.core.model.resources import MIB
from airflow_predictive.storage import migrate
from airflow_predictive.storage.engine import engine_for
from tests._real_parts import require, require_module
from tests.integration.airflow_runs.airflow_env import AirflowEnv
from tests.integration.ui.browser import CHROMEDRIVER, CHROMIUM, start_chromium
from tests.integration.ui.seed import FORECAST_P99_PEAK, SHAPED_TO, SPIKE_BYTES, seed

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.integration.ui.seed import Seeded

pytestmark = pytest.mark.airflow


class Server:
    def __init__(self, env: AirflowEnv, token: str, data: Seeded) -> None:
        self.env, self.token, self.data = env, token, data
        self.base = f"http://127.0.0.1:{env.port}"

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.base + path)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")


def _token(base: str, home: Path, user: str) -> str:
    password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())[user]
    body = json.dumps({"username": user, "password": password}).encode()
    request = urllib.request.Request(
        base + "/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return str(json.loads(r.read())["access_token"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("ui_airflow")
    dags = home / "dags"
    dags.mkdir()
    store_url = f"sqlite:///{home / 'predictive.db'}"
    env = AirflowEnv.create(
        home,
        {
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN": store_url,
            "AIRFLOW__API__WORKERS": "1",
        },
        dags_folder=dags,
    )
    env.migrate()
    engine = engine_for(store_url)
    migrate.upgrade(engine)
    data = seed(engine, runs=3, samples=600)
    engine.dispose()
    env.start_api_server(timeout=180)
    try:
        base = f"http://127.0.0.1:{env.port}"
        yield Server(env, _token(base, home, "admin"), data)
    finally:
        env.stop()


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    require(shutil.which(CHROMIUM) or os.path.exists(CHROMIUM), f"Debian chromium at {CHROMIUM}")
    require(os.path.exists(CHROMEDRIVER), f"Debian chromium-driver at {CHROMEDRIVER}")
    require_module("selenium.webdriver", "pip install selenium==4.51.*")
    driver = start_chromium(server.env.home / "chromium-profile")
    driver.set_page_load_timeout(60)
    try:
        driver.get(server.base + "/predictive/static/style.css")  # same origin first, then the cookie
        driver.add_cookie({"name": "_token", "value": server.token, "path": "/"})
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("AIRFLOW_PREDICTIVE_ARTIFACTS")
    path = Path(configured) / "ui" if configured else tmp_path_factory.mktemp("ui_artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open(driver: Any, url: str) -> dict[str, Any]:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready"))
    state = driver.find_element("tag name", "body").get_attribute("data-ready")
    errors = driver.execute_script("return window.Predictive.errors")
    assert state == "true", errors
    charts: dict[str, Any] = driver.execute_script(
        "var out = {}; Object.keys(window.Predictive.charts).forEach(function (k) {"
        " var c = window.Predictive.charts[k]; out[k] = {labels: c.labels, data: c.data,"
        " yLabel: c.yLabel || null, canvas: !!document.querySelector('#' + k + ' canvas')}; });"
        " return out;"
    )
    return charts


def _series(chart: dict[str, Any], label: str) -> list[float]:
    i = chart["labels"].index(label) + 1  # data[0] is the x axis
    return [v for v in chart["data"][i] if v is not None]


def test_the_api_server_lists_the_plugin_views(server: Server) -> None:
    status, body = server.get("/api/v2/plugins", token=server.token)
    assert status == 200
    plugin = next(p for p in body["plugins"] if p["name"] == "predictive")
    destinations = {v["destination"]: v for v in plugin["external_views"]}
    assert destinations["nav"]["href"] == "/predictive/"
    assert destinations["task_instance"]["name"] == "Resources"
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/predictive"]


def test_the_json_api_refuses_requests_without_a_valid_login(server: Server) -> None:
    for path in ("/predictive/api/overview", f"/predictive/api/tries/{server.data.latest.run_pk}"):
        status, body = server.get(path)
        assert status == 401, body
        assert "ui_demo" not in str(body)
    status, _ = server.get("/predictive/api/overview", token="not-a-token")
    assert status in (401, 403)
    status, body = server.get("/predictive/api/overview", token=server.token)
    assert status == 200
    assert [t["task_id"] for t in body["tasks"] if t["dag_id"] == "ui_demo"] == ["transform"]


def test_overview_page_renders_its_charts(server: Server, browser: Any, artifacts: Path) -> None:
    charts = _open(browser, server.base + "/predictive/")
    browser.save_screenshot(str(artifacts / "overview.png"))
    tries = charts["chart-tries"]
    assert tries["canvas"]
    assert tries["labels"] == ["tries", "OOM kills"]
    assert sum(_series(tries, "tries")) == 4  # 3 demo tries + 1 of the second DAG (admin sees both)
    assert sum(_series(tries, "OOM kills")) == 1
    headroom = charts["chart-headroom"]
    assert headroom["yLabel"] == "GiB" and headroom["canvas"]
    cells = [td.text for td in browser.find_elements("css selector", "table td")]
    assert "ui_demo.transform" in cells
    assert "scaled_curve" in cells


def test_resources_tab_of_a_try_shows_actual_against_forecast_plan_and_shaping(
    server: Server, browser: Any, artifacts: Path
) -> None:
    _, body = server.get("/api/v2/plugins", token=server.token)
    plugin = next(p for p in body["plugins"] if p["name"] == "predictive")
    href = next(v["href"] for v in plugin["external_views"] if v["destination"] == "task_instance")
    # what Airflow's UI does for the tab of this task instance
    url = (
        href.replace("{DAG_ID}", "ui_demo")
        .replace("{TASK_ID}", "transform")
        .replace("{RUN_ID}", urllib.request.quote(server.data.run_id))
        .replace("{MAP_INDEX}", "-1")
    )
    charts = _open(browser, server.base + url)
    browser.save_screenshot(str(artifacts / "try-resources.png"))
    memory = charts["chart-memory_bytes"]
    assert memory["canvas"]
    assert memory["yLabel"] == "MiB"
    assert memory["labels"] == [
        "actual",
        "forecast p50",
        "forecast p90",
        "forecast p99",
        "plan limit",
        "limit in force",
        "shaping events",
    ]
    assert max(_series(memory, "actual")) == pytest.approx(SPIKE_BYTES / MIB)  # the spike survived
    assert max(_series(memory, "forecast p99")) == pytest.approx(FORECAST_P99_PEAK / MIB)
    assert max(_series(memory, "limit in force")) == pytest.approx(SHAPED_TO / MIB)
    assert _series(memory, "shaping events") == [pytest.approx(SHAPED_TO / MIB)]
    assert len(memory["data"][0]) <= 600 + 200  # downsampled actual + forecast steps + plan points
    cpu = charts["chart-cpu_cores"]
    assert cpu["yLabel"] == "cores"
    assert "actual" in cpu["labels"] and "forecast p90" in cpu["labels"]
    text = browser.find_element("tag name", "main").text
    assert "applied" in text and "usage within 10% of the limit" in text
    assert "scaled_curve" in text


def test_pools_page_shows_reserved_memory_and_held_back_tasks(
    server: Server, browser: Any, artifacts: Path
) -> None:
    charts = _open(browser, server.base + "/predictive/pools")
    browser.save_screenshot(str(artifacts / "pools.png"))
    memory = charts["chart-pool-memory-0"]
    assert memory["labels"] == ["reserved (GiB)", "used (GiB)", "capacity (GiB)"]
    assert max(_series(memory, "reserved (GiB)")) >= 0.5
    assert max(_series(memory, "capacity (GiB)")) == pytest.approx(4.0)
    used = _series(memory, "used (GiB)")  # the newest try's measured memory (100-400 MiB ramp)
    assert used and 0.09 < max(used) <= SPIKE_BYTES / MIB / 1024
    assert "0.5 GiB free" in browser.find_element("tag name", "main").text


def test_airflow_ui_shows_the_nav_entry_as_a_frame_of_the_overview(
    server: Server, browser: Any, artifacts: Path
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.base + "/plugin/predictive")
    frame = WebDriverWait(browser, 60, poll_frequency=0.2).until(
        lambda d: next(iter(d.find_elements("css selector", "iframe")), None)
    )
    assert frame.get_attribute("src").endswith("/predictive/")
    browser.switch_to.frame(frame)
    try:
        WebDriverWait(browser, 60, poll_frequency=0.2).until(
            lambda d: d.find_element("tag name", "body").get_attribute("data-ready")
        )
        assert browser.find_element("tag name", "body").get_attribute("data-ready") == "true"
    finally:
        browser.switch_to.default_content()
    browser.save_screenshot(str(artifacts / "airflow-nav-entry.png"))
