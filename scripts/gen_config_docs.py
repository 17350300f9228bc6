"""Write docs/configuration.md from what the provider publishes to Airflow.

The table is rendered from ``get_provider_info()["config"]`` (the section ``airflow config list``
shows, built from the one declaration of every option in ``config.OPTIONS``), so the reference
documents exactly what Airflow sees. `python scripts/gen_config_docs.py` rewrites it; `--check`
exits 1 when it is out of date (tests/unit/test_config.py and tests/unit/deploy/test_config_docs.py
run that).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_predictive.provider_info import get_provider_info  # noqa: E402

TARGET = REPO / "docs" / "configuration.md"


def render() -> str:
    ((section, published),) = get_provider_info()["config"].items()
    lines = [
        "# Configuration reference: the `[predictive]` section",
        "",
        'Generated from the provider info Airflow reads (`get_provider_info()["config"]`, declared in',
        "`airflow_predictive/config.py`) by `python scripts/gen_config_docs.py`; do not edit by hand.",
        "Every option can also be set as an environment variable `AIRFLOW__PREDICTIVE__<OPTION>`.",
        "An invalid value fails loudly with the option's name (`InvalidConfig`); where a failure would touch a",
        "user's task, the listener logs it once and the task runs with its declared resources.",
        "",
        "| option | type | default | description |",
        "|---|---|---|---|",
    ]
    for name, opt in published["options"].items():
        default = opt["default"] if opt["default"] != "" else "(empty)"
        desc = opt["description"].replace("|", "\\|")
        if opt.get("example"):
            desc += f" Example: `{opt['example']}`."
        lines.append(f"| `{name}` | {opt['type']} | `{default}` | {desc} |")
    lines.append("")
    lines.append(f"Section name: `[{section}]`.")
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print("docs/configuration.md is out of date: run python scripts/gen_config_docs.py")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
