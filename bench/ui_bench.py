"""UI page-load benchmark: a task with 1,000 runs behind a real ``airflow api-server``.

Writes 1,000 tries of one task (600 one-second samples each) plus one long try (20,000 samples)
into the provider's store through its own stores, starts an API server with the plugin (own
AIRFLOW_HOME, SQLite, simple auth manager), then times:
1. the JSON API calls (median / p95 of 20 calls each, Bearer token, wall clock);
2. page loads in headless Debian chromium (from navigation to the page's charts drawn, median of
   5 loads each): the overview, the task page (first page of 50 of 1,000 tries) and a try's
   Resources tab, for a 600-sample try and for the 20,000-sample one (downsampled to 600 points).

Usage: .venv/bin/python bench/ui_bench.py [--runs 1000] [--out docs/benchmarks/ui.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_predictive.core.model.resources import MIB, ResourceVector  # noqa: E402
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord  # noqa: E402
from airflow_predictive.core.model.series import ResourceSample  # noqa: E402
from airflow_predictive.storage import migrate  # noqa: E402
from airflow_predictive.storage.engine import engine_for  # noqa: E402
from airflow_predictive.storage.run_store import SqlRunStore  # noqa: E402
from tests.integration.airflow_runs.airflow_env import AirflowEnv  # noqa: E402
from tests.integration.ui.browser import start_chromium  # noqa: E402
from tests.integration.ui.seed import DECLARED, DEMO, seed  # noqa: E402

LONG_SAMPLES = 20_000


def _long_try(engine: object) -> int:
    store = SqlRunStore(engine)  # type: ignore[arg-type]
    start = datetime.now(UTC) - timedelta(seconds=LONG_SAMPLES + 60)
    pk = store.start_run(RunRecord(identity=RunIdentity(DEMO, "long__1", 1), start=start, declared=DECLARED))
    readings = [
        ResourceSample(float(i), ResourceVector(cpu_cores=1.0, memory_bytes=(200 + (i % 600)) * MIB))
        for i in range(LONG_SAMPLES)
    ]
    for i in range(0, len(readings), 2000):
        store.add_samples(pk, readings[i : i + 2000])
    store.finish_run(pk, outcome=Outcome.SUCCESS, end=start + timedelta(seconds=LONG_SAMPLES))
    return pk


def _token(base: str, home: Path) -> str:
    password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    req = urllib.request.Request(
        base + "/auth/token",
        data=json.dumps({"username": "admin", "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return str(json.loads(r.read())["access_token"])


def _time_api(base: str, token: str, path: str, n: int = 20) -> tuple[float, float, int]:
    times, size = [], 0
    for _ in range(n):
        req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as r:
            body = r.read()
        times.append(time.perf_counter() - t0)
        size = len(body)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], size


def _time_page(driver, url: str, n: int = 5) -> float:
    from selenium.webdriver.support.ui import WebDriverWait

    times = []
    for _ in range(n):
        driver.get(url)
        WebDriverWait(driver, 120, poll_frequency=0.05).until(
            lambda d: d.find_element("tag name", "body").get_attribute("data-ready")
        )
        state = driver.find_element("tag name", "body").get_attribute("data-ready")
        if state != "true":
            raise RuntimeError(f"{url}: {driver.execute_script('return window.Predictive.errors')}")
        # measured by the page itself: from navigation start until its last chart is drawn
        times.append(float(driver.execute_script("return window.Predictive.readyMs")) / 1000.0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/ui.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ui_bench_") as tmp:
        home = Path(tmp)
        (home / "dags").mkdir()
        url = f"sqlite:///{home / 'predictive.db'}"
        env = AirflowEnv.create(
            home,
            {
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__PREDICTIVE__SQL_ALCHEMY_CONN": url,
                "AIRFLOW__API__WORKERS": "1",
            },
            dags_folder=home / "dags",
        )
        env.migrate()
        engine = engine_for(url)
        migrate.upgrade(engine)
        t0 = time.perf_counter()
        data = seed(engine, runs=args.runs, samples=args.samples)
        long_pk = _long_try(engine)
        seed_s = time.perf_counter() - t0
        engine.dispose()
        env.start_api_server(timeout=240)
        driver = None
        try:
            base = f"http://127.0.0.1:{env.port}"
            token = _token(base, home)
            p = "/predictive"
            api = {
                "overview": f"{p}/api/overview",
                "runs, first page of 50": f"{p}/api/tasks/{DEMO.dag_id}/{DEMO.task_id}/runs?limit=50",
                "runs, last page of 50": (
                    f"{p}/api/tasks/{DEMO.dag_id}/{DEMO.task_id}/runs?limit=50&offset={args.runs - 50}"
                ),
                f"try, {args.samples} samples": f"{p}/api/tries/{data.latest.run_pk}",
                f"try, {LONG_SAMPLES} samples": f"{p}/api/tries/{long_pk}",
                "pool": f"{p}/api/pools/ui-pool",
            }
            api_rows = [(name, *_time_api(base, token, path)) for name, path in api.items()]
            driver = start_chromium(home / "chromium-profile")
            driver.get(base + f"{p}/static/style.css")
            driver.add_cookie({"name": "_token", "value": token, "path": "/"})
            pages = {
                "overview": f"{p}/",
                f"task page ({args.runs} runs, first 50)": (
                    f"{p}/task?dag_id={DEMO.dag_id}&task_id={DEMO.task_id}&map_index=-1"
                ),
                f"Resources tab, {args.samples}-sample try": f"{p}/try?run_pk={data.latest.run_pk}",
                f"Resources tab, {LONG_SAMPLES}-sample try": f"{p}/try?run_pk={long_pk}",
                "pools": f"{p}/pools",
            }
            page_rows = [(name, _time_page(driver, base + path)) for name, path in pages.items()]
        finally:
            if driver is not None:
                driver.quit()
            env.stop()

    lines = [
        "# UI benchmark: page load for a task with 1,000 runs",
        "",
        f"Generated by `bench/ui_bench.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
        f"({platform.machine()}, Python {platform.python_version()}, shared 2-core machine under load).",
        "",
        f"Reproduce: `.venv/bin/python bench/ui_bench.py --runs {args.runs}`",
        "",
        f"Data: {args.runs} tries of `{DEMO}` with {args.samples} samples each, plus one try with "
        f"{LONG_SAMPLES} samples, on SQLite (provider store), written in {seed_s:.0f} s. A real "
        "`airflow api-server` (1 worker) with the plugin; wall clock from the client.",
        "",
        "## JSON API (20 calls each)",
        "",
        "| call | median | p95 | response size |",
        "| --- | ---: | ---: | ---: |",
        *[
            f"| {n} | {med * 1000:.0f} ms | {p95 * 1000:.0f} ms | {size / 1024:.0f} KiB |"
            for n, med, p95, size in api_rows
        ],
        "",
        "## Page load in headless chromium (median of 5; `performance.now()` from navigation start until the page's data is fetched and every chart drawn)",
        "",
        "| page | median |",
        "| --- | ---: |",
        *[f"| {n} | {s * 1000:.0f} ms |" for n, s in page_rows],
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
