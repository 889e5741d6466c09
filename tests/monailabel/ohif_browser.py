"""Open a study in OHIF (served by MONAI Label) in headless Chromium, load its DICOM SEG and take screenshots.

Run with MONAI Label's Python (selenium is installed there, pinned in ``conftest.py``); drives Debian's
``/usr/bin/chromium`` through ``/usr/bin/chromedriver``, with a new empty profile, no network besides 127.0.0.1::

    python ohif_browser.py --server http://127.0.0.1:PORT --study STUDY_UID --reference 'T1 POST GAD' \\
        --image 17 --segment NAME --out DIR

Opens the reference series at image ``--image`` and writes ``DIR/ohif_image.png``; opens the SEG (OHIF asks
whether to, and shows it over its reference series), returns to that image and writes ``DIR/ohif_seg.png``; opens the
segmentation panel and writes ``DIR/ohif_seg_panel.png``; ``DIR/ohif_report.json`` holds what the page listed (the
thumbnails, the segment names in the panel) and each step's time. With ``--panel`` it segments from OHIF's MONAI
Label panel instead (mode ``monai-label``: connect, Run on the series shown) and writes ``DIR/ohif_panel_before.png``,
``DIR/ohif_panel_result.png`` and ``DIR/ohif_panel_report.json``. Exits 0 when every step was done, 1 with the
failing step in the report otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
    # software WebGL (SwiftShader) for OHIF's renderer: Chromium no longer falls back to it by itself
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
)
THUMBNAIL = '[data-cy^="study-browser-thumbnail"]'
#: The MONAI Label panel's notifications after Run (it also says "Connected to MONAI Label - Successful" before).
PANEL_DONE, PANEL_FAILED = "Running Segmentation - Successful", "Failed to Run Segmentation"
KEYS_PER_STEP = 40


def driver(profile: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for(browser: webdriver.Chrome, what: str, condition, timeout_s: float):
    try:
        wait = WebDriverWait(
            browser, timeout_s, poll_frequency=0.5, ignored_exceptions=(StaleElementReferenceException,)
        )
        return wait.until(condition)
    except TimeoutException as err:
        raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}") from err


def page_text(browser: webdriver.Chrome) -> str:
    return browser.find_element(By.TAG_NAME, "body").text


def thumbnails(browser: webdriver.Chrome) -> list[str]:
    return [t.text.replace("\n", " | ") for t in browser.find_elements(By.CSS_SELECTOR, THUMBNAIL)]


def button(browser: webdriver.Chrome, text: str):
    """The displayed button whose text is ``text`` (None when there is none)."""
    found = [b for b in browser.find_elements(By.CSS_SELECTOR, "button") if b.text.strip() == text and b.is_displayed()]
    return found[0] if found else None


def open_series(browser: webdriver.Chrome, name: str, timeout_s: float) -> None:
    """Double-click the study browser's thumbnail of the series described ``name`` (found anew while the study
    browser re-renders)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            matches = [t for t in browser.find_elements(By.CSS_SELECTOR, THUMBNAIL) if name in t.text]
            if matches:
                ActionChains(browser).double_click(matches[0]).perform()
                return
        except StaleElementReferenceException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no thumbnail of '{name}' among {thumbnails(browser)}")
        time.sleep(0.5)


def go_to_image(browser: webdriver.Chrome, number: int, timeout_s: float) -> None:
    """Show image ``number`` (1-based, as the viewport's ``I:`` overlay counts) of the active viewport."""
    viewport = browser.find_element(By.CSS_SELECTOR, '[data-cy="viewport-pane"]')
    ActionChains(browser).move_to_element(viewport).perform()
    deadline = time.monotonic() + timeout_s
    while f"I:{number} (" not in page_text(browser).replace("\n", ""):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the viewport did not reach image {number}: {page_text(browser)[-200:]!r}")
        shown = [int(x) for x in re.findall(r"I:\s*(\d+) \(", page_text(browser).replace("\n", ""))] or [1]
        key = Keys.ARROW_DOWN if shown[-1] < number else Keys.ARROW_UP
        for _ in range(min(abs(number - shown[-1]), KEYS_PER_STEP) or 1):
            ActionChains(browser).send_keys(key).perform()
        time.sleep(0.5)


def show_seg(browser: webdriver.Chrome, args: argparse.Namespace, out: Path, report: dict, step) -> None:
    """The stored SEG in OHIF's viewer: listed, opened over its reference series, its segments named."""
    browser.get(f"{args.server}/ohif/viewer?StudyInstanceUIDs={args.study}")
    wait_for(browser, "the study's thumbnails", lambda b: len(thumbnails(b)) >= args.min_series, args.timeout)
    report["thumbnails"] = thumbnails(browser)
    step("viewer_loaded")
    hide_notice(browser)
    open_series(browser, args.reference, args.timeout)
    wait_for(browser, "the reference series", lambda b: f"{args.reference}\nI:" in page_text(b), args.timeout)
    go_to_image(browser, args.image, args.timeout)
    time.sleep(args.settle)
    browser.save_screenshot(str(out / "ohif_image.png"))
    step("image_screenshot")
    open_series(browser, "SEG", args.timeout)
    wait_for(browser, "OHIF's question to open the SEG", lambda b: button(b, "Yes"), args.timeout).click()
    step("seg_opened")
    wait_for(browser, "the SEG on its reference series", lambda b: button(b, "Yes") is None, args.timeout)
    time.sleep(args.settle)
    go_to_image(browser, args.image, args.timeout)
    time.sleep(args.settle)
    browser.save_screenshot(str(out / "ohif_seg.png"))
    step("seg_screenshot")
    browser.find_element(By.CSS_SELECTOR, '[data-cy="panelSegmentation-btn"]').click()
    report["segments_listed"] = wait_for(
        browser,
        "the segment names in the segmentation panel",
        lambda b: [n for n in args.segment if n.lower() in page_text(b).lower()],
        args.timeout,
    )
    time.sleep(args.settle)
    browser.save_screenshot(str(out / "ohif_seg_panel.png"))
    step("segments_listed")


def run_panel(browser: webdriver.Chrome, args: argparse.Namespace, out: Path, report: dict, step) -> None:
    """Segment from OHIF's MONAI Label panel (mode ``monai-label``): connect the panel to the server, press Run.

    The panel reads the server's address from the cookie ``MONAILABEL_SERVER_URL`` (its default is port 8000 of the
    page's host), so the cookie is set first; the panel segments the series shown in the active viewport.
    """
    browser.get(f"{args.server}/info/")
    cookie = urllib.parse.quote(f"{args.server}/", safe="/")
    browser.add_cookie({"name": "MONAILABEL_SERVER_URL", "value": cookie, "path": "/"})
    browser.get(f"{args.server}/ohif/monai-label?StudyInstanceUIDs={args.study}")
    wait_for(browser, "the study's thumbnails", lambda b: len(thumbnails(b)) >= args.min_series, args.timeout)
    report["thumbnails"] = thumbnails(browser)
    step("panel_mode_loaded")
    hide_notice(browser)
    wait_for(
        browser,
        "the panel's connect button",
        lambda b: b.find_elements(By.CSS_SELECTOR, "button.actionButton"),
        args.timeout,
    )
    browser.find_element(By.CSS_SELECTOR, "button.actionButton").click()
    run = wait_for(browser, "the panel's Run button (the server's models)", lambda b: button(b, "Run"), args.timeout)
    report["panel_text"] = page_text(browser).split("MONAI Label", 1)[-1][:600]
    time.sleep(args.settle)
    browser.save_screenshot(str(out / "ohif_panel_before.png"))
    step("panel_connected")
    run.click()
    outcome = wait_for(
        browser,
        "the panel's segmentation result",
        lambda b: next((w for w in (PANEL_DONE, PANEL_FAILED) if w in page_text(b)), None),
        args.timeout,
    )
    if outcome != PANEL_DONE:
        raise RuntimeError(f"the panel reports: {page_text(browser)[-300:]!r}")
    step("panel_segmented")
    time.sleep(args.settle)
    browser.save_screenshot(str(out / "ohif_panel_result.png"))


def hide_notice(browser: webdriver.Chrome) -> None:
    """Close OHIF's "for investigational use only" notice (it covers the lower part of the viewport)."""
    for notice in browser.find_elements(By.CSS_SELECTOR, '[data-cy="confirm-and-hide-button"]'):
        notice.click()


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"steps": {}, "thumbnails": [], "segments_listed": []}
    begin = time.monotonic()
    name = "ohif_panel" if args.panel else "ohif"

    def step(what: str) -> None:
        report["steps"][what] = round(time.monotonic() - begin, 1)

    with tempfile.TemporaryDirectory(prefix="mckd-chromium-") as profile:
        browser = driver(profile)
        try:
            (run_panel if args.panel else show_seg)(browser, args, out, report, step)
            report["ok"] = True
        except (RuntimeError, WebDriverException) as err:
            report["ok"] = False
            report["error"] = str(err).splitlines()[0]
            browser.save_screenshot(str(out / f"{name}_failure.png"))
        finally:
            report["page_text"] = page_text(browser)[-3000:]
            report["console"] = [e.get("message", "")[:300] for e in browser.get_log("browser")][-40:]
            browser.quit()
    (out / f"{name}_report.json").write_text(json.dumps(report, indent=2))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--panel", action="store_true", help="segment with the MONAI Label panel instead")
    parser.add_argument("--reference", default="", help="SeriesDescription of the SEG's reference series")
    parser.add_argument("--image", type=int, default=1, help="the image (1-based, as OHIF counts) to show")
    parser.add_argument("--segment", action="append", default=[], help="a segment name the page must list")
    parser.add_argument("--min-series", type=int, default=2)
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=90)
    parser.add_argument("--settle", type=float, default=4, help="seconds for rendering before a screenshot")
    report = run(parser.parse_args())
    print(json.dumps({k: v for k, v in report.items() if k != "page_text"}, indent=2))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
