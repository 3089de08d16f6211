"""What a person sees in the MLflow UI, driven in a real browser (Debian's Chromium + Playwright).

Used by ``tests/test_browser.py`` on the session's tiny sweep, and by hand to refresh the
README's screenshots from a real sweep::

    python -m tests.browser_pages WORKDIR SWEEP docs/screenshots

No browser is downloaded: Playwright drives the system Chromium (``executable_path``), with the
flags that keep it off the network (this machine's network is closed) and a fresh profile, so
the UI is seen as a first-time visitor sees it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_FLAGS = [
    "--no-sandbox",  # root in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 120_000  # the UI's first load on 2 busy cores


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def why_no_browser() -> str | None:
    """None when a browser test can run here, else the reason it cannot."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        return "no Chromium on PATH (Debian: apt-get install chromium; `make test` installs it as root)"
    return None


@dataclass
class Seen:
    rows: dict[str, str]  # trial id -> the text of its row in the runs table (every column)
    genai_overview: bool  # whether the GenAI overview was shown instead of the runs table
    chart_sizes: dict[str, int]  # chart artifact path -> the rendered image's natural width in pixels
    screenshots: list[Path]


def _close_assistant(page) -> None:
    """MLflow 3.17 opens an "Assistant" side panel on a first visit; close it for the screenshots."""
    button = page.locator("button[aria-label='Close']")
    if button.count():
        with contextlib.suppress(Exception):  # a panel that went away is fine
            button.first.click(timeout=3000)


def _row_texts(page, trial_ids: list[str]) -> dict[str, str]:
    """Each trial's full row: ag-grid splits a row over its pinned and scrolled parts (same row-index)."""
    rows = {}
    for trial_id in trial_ids:
        part = page.locator("[role=row]", has_text=trial_id).first
        index = part.get_attribute("row-index")
        cells = page.locator(f"[role=row][row-index='{index}']").all_inner_texts()
        rows[trial_id] = " | ".join(t.replace("\n", " | ") for t in cells)
    return rows


def look(runs_link: str, chart_links: dict[str, str], trial_ids: list[str], out_dir: Path) -> Seen:
    """Open the sweep's runs link and its parent run's charts as a new visitor; what was visible."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 820})
            page.goto(runs_link)
            for trial_id in trial_ids:
                page.get_by_text(trial_id, exact=True).first.wait_for(timeout=TIMEOUT_MS)
            _close_assistant(page)
            page.wait_for_timeout(1000)
            genai = page.get_by_text("Token usage").count() > 0 or "/overview" in page.url
            rows = _row_texts(page, trial_ids)
            shots.append(out_dir / "runs.png")
            page.screenshot(path=str(shots[-1]))
            sizes = {}
            for name, link in chart_links.items():
                page.goto("about:blank")  # a new hash alone would keep the previous image on screen
                page.goto(link)
                page.get_by_text(name, exact=True).first.wait_for(timeout=TIMEOUT_MS)  # the viewer's title
                image = page.locator("img[src^='blob:']").first
                image.wait_for(timeout=TIMEOUT_MS)
                page.wait_for_function("img => img.complete", arg=image.element_handle(), timeout=TIMEOUT_MS)
                sizes[name] = image.evaluate("img => img.naturalWidth")
                _close_assistant(page)
                shots.append(out_dir / f"parent-{Path(name).stem}.png")
                page.screenshot(path=str(shots[-1]))
        finally:
            browser.close()
    return Seen(rows, genai, sizes, shots)


@contextlib.contextmanager
def serving(workdir: str | Path, printed: Path) -> Iterator[str]:
    """`orchestrator ui` on a free port until the block ends; its base URL. What it prints goes to
    ``printed`` (a file, not a pipe: the server's own lines must never block it)."""
    from tests.conftest import free_port, stop_group, wait_for_http

    port = free_port()
    printed.parent.mkdir(parents=True, exist_ok=True)
    with printed.open("w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("orchestrator")), "ui", "--workdir", str(workdir)]
            + ["--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/health", proc, "orchestrator ui")
        yield base
    finally:
        stop_group(proc)


def main(workdir: str, sweep: str, out_dir: str) -> None:
    """Start ``orchestrator ui`` on ``workdir`` and save the screenshots of ``sweep`` to ``out_dir``."""
    from mlflow.tracking import MlflowClient

    from orchestrator.browse import artifact_url, runs_url

    client = MlflowClient(f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name(sweep)
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("orchestrator.role") == "sweep")
    trials = [
        r.data.tags["orchestrator.trial_id"] for r in runs if r.data.tags.get("orchestrator.role") == "trial"
    ]
    with serving(workdir, Path(out_dir) / "ui.log") as base:
        charts = {
            path: artifact_url(base, exp.experiment_id, parent.info.run_id, path)
            for path in ("charts/slice.png", "charts/parallel_coordinate.png")
        }
        seen = look(runs_url(base, exp.experiment_id), charts, trials[:8], Path(out_dir))
    print("\n".join(str(s) for s in seen.screenshots))


if __name__ == "__main__":
    main(*sys.argv[1:4])
