"""Open a study in OHIF (served by MONAI Label) in headless Chromium, load its DICOM SEG and take screenshots.

Run with MONAI Label's Python (selenium is installed there, pinned in ``conftest.py``); drives Debian's
``/usr/bin/chromium`` through ``/usr/bin/chromedriver``, with a new empty profile, no network besides 127.0.0.1::

    python ohif_browser.py --server http://127.0.0.1:PORT --study STUDY_UID --segment NAME --out DIR

Writes ``DIR/ohif_image.png`` (the study's reference series, before the SEG is loaded), ``DIR/ohif_seg.png`` (after)
and ``DIR/ohif_report.json`` (what the page listed: the SEG thumbnail, the segment names in the segmentation panel,
each step's time). Exits 0 when every step was done, 1 with the failing step in the report otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
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
)
THUMBNAIL = '[data-cy="study-browser-thumbnail"]'


def driver(profile: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for(browser: webdriver.Chrome, what: str, condition, timeout_s: float):
    try:
        return WebDriverWait(browser, timeout_s, poll_frequency=0.5).until(condition)
    except TimeoutException as err:
        raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}") from err


def thumbnails(browser: webdriver.Chrome) -> list[str]:
    return [t.text.replace("\n", " | ") for t in browser.find_elements(By.CSS_SELECTOR, THUMBNAIL)]


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"steps": {}, "thumbnails": [], "segments_listed": []}
    begin = time.monotonic()

    def step(name: str) -> None:
        report["steps"][name] = round(time.monotonic() - begin, 1)

    with tempfile.TemporaryDirectory(prefix="mckd-chromium-") as profile:
        browser = driver(profile)
        try:
            browser.get(f"{args.server}/ohif/viewer?StudyInstanceUIDs={args.study}")
            wait_for(browser, "the study's thumbnails", lambda b: len(thumbnails(b)) >= args.min_series, args.timeout)
            report["thumbnails"] = thumbnails(browser)
            step("viewer_loaded")
            wait_for(browser, "a rendered viewport", lambda b: b.find_elements(By.CSS_SELECTOR, "canvas"), args.timeout)
            time.sleep(args.settle)
            browser.save_screenshot(str(out / "ohif_image.png"))
            step("image_screenshot")
            seg = [t for t in browser.find_elements(By.CSS_SELECTOR, THUMBNAIL) if "SEG" in t.text]
            if not seg:
                raise RuntimeError(f"no SEG thumbnail among {report['thumbnails']}")
            ActionChains(browser).double_click(seg[0]).perform()
            step("seg_opened")
            loaded = wait_for(
                browser, "the SEG's segments in the page", lambda b: _listed(b, args.segment), args.timeout
            )
            report["segments_listed"] = loaded
            time.sleep(args.settle)
            browser.save_screenshot(str(out / "ohif_seg.png"))
            step("seg_screenshot")
            report["ok"] = True
        except (RuntimeError, WebDriverException) as err:
            report["ok"] = False
            report["error"] = str(err).splitlines()[0]
            browser.save_screenshot(str(out / "ohif_failure.png"))
        finally:
            report["page_text"] = browser.find_element(By.TAG_NAME, "body").text[-3000:]
            report["console"] = [e.get("message", "")[:300] for e in browser.get_log("browser")][-40:]
            browser.quit()
    (out / "ohif_report.json").write_text(json.dumps(report, indent=2))
    return report


def _listed(browser: webdriver.Chrome, names: list[str]) -> list[str]:
    """The segment names the page shows; confirms OHIF's question whether to load the SEG while there are none."""
    text = browser.find_element(By.TAG_NAME, "body").text.lower()
    return [name for name in names if name.lower() in text] or _click_load(browser)


def _click_load(browser: webdriver.Chrome) -> list:
    """Confirm OHIF's question whether to load the segmentation (its "Yes"/"Load" button), when it asks."""
    for button in browser.find_elements(By.CSS_SELECTOR, "button, [role=button]"):
        if button.text.strip().lower() in ("yes", "load") and button.is_displayed():
            button.click()
            break
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--study", required=True)
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
