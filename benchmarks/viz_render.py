"""How long ``raykv viz`` takes on a decision log: writing the page (Python) and rendering it in headless
chromium (the browser's clock from navigation start to the page's first full draw, and one scrubber
step with a 10 s window).

    python benchmarks/viz_render.py torture-runs/.../decisions.log [--out page.html] [--screenshot x.png]

Needs Debian's chromium and chromium-driver (``/usr/bin/chromium``, ``/usr/bin/chromedriver``) and
Selenium (the test extra); Selenium Manager is told to stay offline, so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_driver(width: int = 1400, height: int = 1000) -> Any:
    """A headless chromium under Selenium, with the browser's console log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download a browser
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def measure(driver: Any, page: Path) -> dict[str, float]:
    """Open ``page``; the milliseconds to its first full draw, and to one scrubber step (10 s window)."""
    driver.get(page.resolve().as_uri())
    ready = driver.execute_script("return document.body.dataset.ready === '1' ? window.vizRenderMs : null")
    if ready is None:
        raise RuntimeError(f"the page did not finish drawing: {driver.get_log('browser')}")
    step = driver.execute_script(
        "const z = document.getElementById('zoom'); z.value = '10'; z.dispatchEvent(new Event('change'));"
        "const s = document.getElementById('scrub'); const t = performance.now();"
        "s.value = 5000; s.dispatchEvent(new Event('input')); return performance.now() - t;")
    return {"render_ms": float(ready), "step_ms": float(step)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="+", help="decision log files (or directories of *.log)")
    p.add_argument("--out", default="viz-render.html", help="where to write the page")
    p.add_argument("--screenshot", default=None, help="save a screenshot of the page there")
    args = p.parse_args(argv)
    here = Path(__file__).resolve().parent
    # benchmarks/kvraft.py would shadow the kvraft package
    sys.path[:] = [d for d in sys.path if Path(d or ".").resolve() != here]
    from raykv.viz import log_files, write_viz

    files = log_files(args.logs)
    size = sum(f.stat().st_size for f in files)
    lines = sum(f.read_text(errors="replace").count("\n") for f in files)
    t = time.perf_counter()
    page = write_viz(files, args.out)
    write_s = time.perf_counter() - t
    driver = chromium_driver()
    try:
        m = measure(driver, page)
        driver.execute_script("const z = document.getElementById('zoom'); z.value = '0';"
                              "z.dispatchEvent(new Event('change'));"
                              "const s = document.getElementById('scrub'); s.value = 10000;"
                              "s.dispatchEvent(new Event('input'));")
        if args.screenshot:
            driver.save_screenshot(args.screenshot)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    print(f"log: {len(files)} file(s), {size / 1e6:.1f} MB, {lines} lines")
    print(f"page: {page} {page.stat().st_size / 1e6:.1f} MB, written in {write_s:.2f} s")
    print(f"chromium: first full draw {m['render_ms']:.0f} ms after navigation start; one scrubber step "
          f"(10 s window) {m['step_ms']:.0f} ms; console errors: {len(errors)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
