"""The playground page (issue 13's targets): its weight, and how soon it is usable after navigation.

A real `gptkit serve` app (a tiny random GPT-2, fine-tuning on) under uvicorn on a loopback port, opened again and
again in Debian's chromium through Playwright, each time in a fresh browser context (no cache, no storage). For each
load: first paint and first contentful paint (the browser's paint timings), DOMContentLoaded, and `usable`, the mark
the page sets once the prompt box is there and the model list has come from /v1/models. Also every file the page
loads, its bytes, and any request outside /v1, /health and the page's own files. No peer: the targets are absolute
(page weight <= 300 KB uncompressed, usable <= 1 s on this machine).

    python benchmarks/bench_playground.py [--loads 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from machine import ROOT, load_average, machine_info, source_state

sys.path.insert(0, str(ROOT / "src"))

TARGETS = {"page_bytes": 300_000, "usable_ms": 1000}
TIMINGS = """() => {
  const paint = Object.fromEntries(performance.getEntriesByType("paint").map(e => [e.name, e.startTime]));
  const nav = performance.getEntriesByType("navigation")[0];
  const usable = performance.getEntriesByName("usable")[0];
  return {first_paint_ms: paint["first-paint"], first_contentful_paint_ms: paint["first-contentful-paint"],
          dom_content_loaded_ms: nav.domContentLoadedEventEnd, usable_ms: usable && usable.startTime};
}"""


def serve(folder: Path) -> tuple[Any, str]:
    """The app in a uvicorn thread on a free loopback port: (server, root URL)."""
    import uvicorn

    from gptkit.models.config import GPTConfig
    from gptkit.models.gpt import GPT
    from gptkit.server.app import create_app
    from gptkit.server.fine_tuning import FineTuningConfig
    from gptkit.server.served import load_served
    from gptkit.text.chat_template import DEFAULT_CHAT_TEMPLATE
    from gptkit.text.tokenizer import Tokenizer

    GPT(GPTConfig.from_name("gpt2-tiny")).save_pretrained(folder / "tiny", tokenizer=Tokenizer.from_pretrained("gpt2"))
    served = load_served(folder / "tiny", chat_template=DEFAULT_CHAT_TEMPLATE)
    served.engine.start()
    app = create_app({"tiny": served}, fine_tuning=FineTuningConfig(folder / "data"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}/"


def load_once(browser: Any, url: str) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    sizes: dict[str, int] = {}
    page.on("response", lambda r: sizes.__setitem__(r.url, len(r.body()) if r.ok and r.request.method == "GET" else 0))
    page.goto(url)
    page.wait_for_selector("#complete-model option", state="attached")
    page.wait_for_load_state("networkidle")
    timings = page.evaluate(TIMINGS)
    context.close()
    return {"timings": timings, "sizes": sizes}


def allowed(url: str, root: str) -> bool:
    parts, home = urlsplit(url), urlsplit(root)
    if parts.scheme == "data":
        return True
    local = (parts.scheme, parts.netloc) == (home.scheme, home.netloc)
    return local and (parts.path in ("/", "/health") or parts.path.startswith(("/v1/", "/playground/")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=int, default=10, help="page loads, each in a fresh browser context")
    parser.add_argument("--chromium", default=shutil.which("chromium"), help="the browser (default: chromium on PATH)")
    args = parser.parse_args()
    if not args.chromium:
        parser.error("no chromium on PATH: apt-get install -y chromium, or give --chromium")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        server, url = serve(Path(folder))
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        load_once(browser, url)  # warm: the server's first requests, the browser's first start
        loads = [load_once(browser, url) for _ in range(args.loads)]
        version = browser.version
        browser.close()
        server.should_exit = True

    api = ("/v1/", "/health")
    files = {urlsplit(u).path: n for u, n in loads[-1]["sizes"].items() if not urlsplit(u).path.startswith(api)}
    usable = [load["timings"]["usable_ms"] for load in loads]
    page_bytes = sum(files.values())
    outside = sorted({u for load in loads for u in load["sizes"] if not allowed(u, url)})
    report = {
        "benchmark": "playground page: weight and time from navigation to a usable prompt box",
        "settings": {"loads": args.loads, "browser": f"chromium {version}, headless", "viewport": "1280x800"},
        "machine": machine_info(),
        "versions": {"source": source_state()},
        "targets": TARGETS,
        "files": files,
        "page_bytes": page_bytes,
        "requests_outside_the_api": outside,
        "median_ms": {
            key: round(statistics.median(load["timings"][key] for load in loads), 1) for key in loads[0]["timings"]
        },
        "max_usable_ms": round(max(usable), 1),
        "met": {"page_bytes": page_bytes <= TARGETS["page_bytes"], "usable_ms": max(usable) <= TARGETS["usable_ms"]},
    }
    report["machine"]["load_average_end"] = load_average()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
