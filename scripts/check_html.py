"""Render a trackcheck report.html in headless Chromium and check that its figures show.

    python scripts/check_html.py outputs/<date>/<time>/report.html --screenshot shot.png

Two renders of the page, in a real browser:
1. ``--dump-dom`` of a copy with a small probe script added: on the page's ``load`` event
   it writes, for every <img>, whether it decoded and its natural size into a data attribute
   of <html>; we read the attribute back from the dumped DOM. A figure whose base64 is
   broken decodes to naturalWidth 0.
2. ``--screenshot`` of the page itself (the probe is not in the report), checked to be
   neither blank nor a single colour; look at it to judge the layout.

The number of <img> elements must equal the number of figures in report.json next to the
page (when there is one). Exit code 0 when every check holds, 1 otherwise, 2 when no browser
is found (set CHROMIUM=/path/to/chromium; Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# a headless browser with no network, no first-run UI, no background updates
FLAGS = [
    "--headless",
    "--no-sandbox",  # root in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
TIMEOUT_S = 60  # one render of a ~1 MB page takes ~2 s; a hung browser is killed
# report.html only loads data: URIs, but give the load event time to fire after decoding
VIRTUAL_TIME_MS = 5000
PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var info = imgs.map(function (i) {
    return {alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight};
  });
  document.documentElement.setAttribute("data-images", JSON.stringify(info));
});
</script>"""
# a screenshot counts as "not blank" when this share of its pixels is not background white
MIN_INK = 0.01


@dataclass
class Result:
    page: str
    images: list[dict[str, object]] = field(default_factory=list)
    expected_images: int | None = None
    screenshot: str | None = None
    ink: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def find_browser() -> str | None:
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    return None


def _browser(browser: str, args: list[str], profile: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


def probe_images(browser: str, page: Path, work: Path) -> list[dict[str, object]]:
    """Per <img>: decoded? natural size? -- read from the DOM after the load event."""
    text = page.read_text(encoding="utf-8")
    probed = work / "probed.html"
    probed.write_text(text.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
    done = _browser(
        browser,
        [f"--virtual-time-budget={VIRTUAL_TIME_MS}", "--dump-dom", probed.as_uri()],
        str(work / "profile"),
    )
    match = re.search(r'<html[^>]*\sdata-images="([^"]*)"', done.stdout)
    if match is None:
        raise RuntimeError(
            f"the probe script did not report (exit {done.returncode}): "
            f"{done.stderr.strip().splitlines()[-1:] or done.stdout[:200]}"
        )
    return list(json.loads(html.unescape(match.group(1))))


def screenshot(browser: str, page: Path, out: Path, work: Path, height: int) -> float:
    """Render the page to ``out``; return the share of pixels that are not white."""
    _browser(
        browser,
        [f"--screenshot={out}", f"--window-size=1200,{height}", page.as_uri()],
        str(work / "profile"),
    )
    if not out.is_file():
        raise RuntimeError(f"no screenshot written to {out}")
    import matplotlib.image as mpimg
    import numpy as np

    pixels = mpimg.imread(out)[..., :3]  # (H, W, 3) floats in [0, 1]
    return float(np.mean(np.any(pixels < 0.95, axis=-1)))


def expected_figures(page: Path) -> int | None:
    report = page.with_name("report.json")
    if not report.is_file():
        return None
    checks = json.loads(report.read_text())["checks"]
    return sum(len(c.get("figures", {})) for c in checks)


def check(page: Path, shot: Path | None = None, height: int = 3000) -> Result:
    result = Result(page=str(page))
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError(
            "no Chromium found: apt-get install chromium, or set CHROMIUM=/path/to/browser"
        )
    with tempfile.TemporaryDirectory(prefix="check-html-") as d:
        work = Path(d)
        result.images = probe_images(browser, page.resolve(), work)
        result.expected_images = expected_figures(page)
        broken = [i for i in result.images if not i["complete"] or not i["w"] or not i["h"]]
        result.problems += [f"figure {i['alt']!r} did not decode: {i}" for i in broken]
        if result.expected_images is not None and len(result.images) != result.expected_images:
            result.problems.append(
                f"{len(result.images)} <img> on the page, report.json lists "
                f"{result.expected_images} figures"
            )
        if shot is not None:
            result.ink = screenshot(browser, page.resolve(), shot.resolve(), work, height)
            result.screenshot = str(shot)
            if result.ink < MIN_INK:
                result.problems.append(f"screenshot is blank ({result.ink:.2%} non-white)")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path, help="report.html")
    ap.add_argument("--screenshot", type=Path, help="write a PNG of the rendered page here")
    ap.add_argument("--height", type=int, default=3000, help="screenshot height in pixels")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    try:
        result = check(args.page, args.screenshot, args.height)
    except FileNotFoundError as e:
        print(f"check_html: {e}", file=sys.stderr)
        sys.exit(2)
    if args.json:
        print(json.dumps({**asdict(result), "ok": result.ok}))
    else:
        sizes = ", ".join(f"{i['alt']} {i['w']}x{i['h']}" for i in result.images)
        print(f"{len(result.images)} figures decoded ({sizes})")
        if result.screenshot:
            print(f"screenshot {result.screenshot}: {result.ink:.1%} of pixels non-white")
        for p in result.problems:
            print(f"PROBLEM: {p}")
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
