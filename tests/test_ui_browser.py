"""The Prefect UI in Debian's Chromium: open a failed run, press Retry, only the failed item reruns."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from prefect_helpers import Served, executions, fix_input, start_failing_run, wait_final

pytestmark = pytest.mark.usefixtures("prefect_api")
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("POOLFLOW_SCREENSHOT_DIR", Path(__file__).resolve().parents[1] / "out"))


@pytest.fixture
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's chromium is missing; `make test` installs it")
        pytest.skip("chromium not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


def test_retry_button_in_the_ui_reruns_only_the_failed_item(
    served: Served, prefect_server: str, browser: object, tmp_path: Path
) -> None:
    failed = start_failing_run(served)
    flow_run_id = failed.id
    fix_input(served)
    ui = prefect_server.removesuffix("/api")
    ui_host = urlparse(ui).netloc

    context = browser.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    # Only the local Prefect server may be reached; everything else is refused.
    context.route(
        "**/*",
        lambda route: route.continue_() if urlparse(route.request.url).netloc == ui_host else route.abort(),
    )
    page = context.new_page()
    page.goto(f"{ui}/runs/flow-run/{flow_run_id}")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        page.get_by_role("button", name="Retry", exact=True).first.click(timeout=60_000)
        # The confirmation modal has its own "Retry" button, the last one on the page.
        page.get_by_role("button", name="Retry", exact=True).last.click(timeout=30_000)
    except Exception:
        page.screenshot(path=str(SCREENSHOTS / "ui-retry-failure.png"))
        raise

    # The click returns before the UI's request lands: until then the run is still Failed.
    finished = wait_final(flow_run_id, leaving=failed.state_id)
    assert finished.state is not None and finished.state.is_completed(), finished.state
    # Across both attempts: 4 + 1 items ran (one failed), 3 were reused from the cache.
    assert executions(flow_run_id) == {"ran": 5, "failed": 1, "cached": 3}

    page.reload()
    page.get_by_text("Completed").first.wait_for(timeout=60_000)
    shot = SCREENSHOTS / "ui-retried-run.png"
    page.screenshot(path=str(shot), full_page=False)
    shutil.copy(shot, tmp_path / shot.name)
    assert shot.stat().st_size > 10_000
    context.close()
