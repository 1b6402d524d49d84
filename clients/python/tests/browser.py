"""Headless Chromium for the dashboard tests: Debian's ``chromium`` driven by Playwright
(``launch(executable_path=…)``: Playwright's own browser downloads are never used). A page
records every console error, uncaught exception, failed request and CSP violation, so a test
can assert there were none.

``KDELTA_CHROMIUM`` overrides the browser path. A missing browser is an error, never a skip.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any, List

# Registered before any page script runs; CSP violations are reported as DOM events.
RECORD_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI}`);
});
"""


def chromium_path() -> str:
    path = os.environ.get("KDELTA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("chromium not found: `apt-get install chromium` (scripts/test-python.sh does) "
                           "or set KDELTA_CHROMIUM")
    return path


@dataclass
class Recorder:
    """What went wrong on a page, as text lines."""

    problems: List[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "assert") else None)
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(
            f"request failed: {r.method} {r.url}: {r.failure}")
            if not _aborted_by_navigation(r) else None)
        page.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.request.method} {r.url}")
                if r.status >= 400 and not _expected_404(r) else None)
        page.add_init_script(RECORD_CSP)

    def all(self, page: Any) -> List[str]:
        csp = page.evaluate("window.__cspViolations || []")
        return self.problems + [f"CSP violation: {v}" for v in csp]


def _aborted_by_navigation(r: Any) -> bool:
    # The event stream is cut when a test closes or reloads the page.
    return "/v1/events" in r.url and "ERR_ABORTED" in str(r.failure)


def _expected_404(r: Any) -> bool:
    # The explorer asks for a key before it exists (a new key) and for as-of points before
    # the first version: the API answers 404 `not_found`, which the page shows as text.
    return r.status == 404 and "/v1/docs/" in r.url or r.status == 404 and "/v1/twins/" in r.url


# Counts the canvas pixels that are not transparent: a drawn line, not an empty element.
INKED_PIXELS = """
(canvas) => {
  const g = canvas.getContext("2d");
  const d = g.getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
  return n;
}
"""
