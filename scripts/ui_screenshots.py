"""Screenshots of the Dagster UI on a demo instance, for the README (``make screenshots``; not a test).

Builds a demo instance (``hpo demo --symbols NVDA AAPL``, a few minutes on 2 cores) in its own
``DAGSTER_HOME``/storage/hyperparams folder, starts the real ``dagster-webserver`` on it, opens the
pages a new user looks at in headless Chromium and saves them as PNGs under ``docs/``. Chromium is
driven over its DevTools pipe (standard library only), so each shot waits until the page shows its
data instead of guessing a delay. Needs Chromium: ``apt-get install chromium`` (Debian).

    .venv/bin/python scripts/ui_screenshots.py                 # fresh demo instance, then the shots
    .venv/bin/python scripts/ui_screenshots.py --reuse         # reuse the instance of an earlier run
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOCATION = "toto_kronos_hpo"  # workspace.yaml
DEMO_SYMBOLS = ("NVDA", "AAPL")
SYMBOL = DEMO_SYMBOLS[0]
MARKER = ".hpo-ui-screenshots"  # marks an instance folder this script made (and may wipe)
WINDOW = (1600, 1000)  # CSS pixels; the PNGs have this size
# Runs of `hpo demo` execute in process; the webserver only reads. No telemetry (no network here).
DAGSTER_YAML = "telemetry:\n  enabled: false\n"
# The flags that keep Chromium off the network and working as root in a container.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--remote-debugging-pipe")


# Set in the page before the app starts: the icon-only navigation (more room for the page) and the
# community newsletter dialog already dismissed. Keys from Dagster's UI (`useStateWithStorage`).
UI_SETTINGS = {"dagster-nav-collapsed": True, "communityNux": True}
# The global lineage's asset-group sidebar takes a third of the width: hide it (its button sits by
# "Jump to…"), then double-click the graph's background, which zooms the graph to fit the wider view.
FIT_GLOBAL_LINEAGE = """(() => {
  let row = document.querySelector('input[placeholder^="Jump to"]');
  while (row && !row.querySelector('button')) row = row.parentElement;
  const hide = row && row.querySelector('button');
  const graph = document.querySelector('svg[class*="svgContainer"]');
  if (!hide || !graph) return false;
  hide.click();
  const background = graph.parentElement.parentElement;
  setTimeout(() => background.dispatchEvent(new MouseEvent('dblclick', {bubbles: true})), 500);
  return true;
})()"""


@dataclass(frozen=True)
class Page:
    """One screenshot: where to go, the texts that prove its data has arrived, and a script to ready it."""

    file: str
    path: str
    shows: tuple[str, ...]
    prepare: str = "true"  # JavaScript; polled with the texts until it returns true (it may click things)


PAGES = (
    # The global lineage opens with the asset groups collapsed to boxes (all assets are unreadably small).
    Page("ui-lineage-groups.png", "/asset-groups", ("prices", "sweeps", "metrics", "selection"), FIT_GLOBAL_LINEAGE),
    Page("ui-lineage.png", "/assets/selected_configs?view=lineage&lineageScope=upstream&lineageDepth=99",
         ("price_history", "toto_sweep", "leaderboard", "best_configs")),
    Page("ui-sweep.png", f"/assets/toto_sweep?view=partitions&partition={SYMBOL}", (SYMBOL, "leaderboard")),
    Page("ui-selected-configs.png", f"/assets/selected_configs?view=partitions&partition={SYMBOL}",
         (SYMBOL, "winner_reason")),
)


def say(message: str) -> None:
    print(f"[ui_screenshots] {message}", file=sys.stderr, flush=True)


def instance_env(folder: Path) -> dict[str, str]:
    """The user's environment without their HPO_/DAGSTER_ settings: the embedded data, bundled models."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPO_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(folder / "dagster_home"), HPO_STORAGE_DIR=str(folder / "storage"),
               HPO_HYPERPARAMS_DIR=str(folder / "hyperparams"), HPO_PRICE_SOURCE="embedded", TQDM_DISABLE="1")
    return env


def build_demo(folder: Path, reuse: bool) -> dict[str, str]:
    env = instance_env(folder)
    done = folder / "hyperparams" / "best" / f"{SYMBOL}.json"
    if reuse and done.exists():
        say(f"reusing the demo instance in {folder}")
        return env
    if reuse:
        say(f"--reuse: no finished demo in {folder} ({done} missing); building one")
    if folder.exists() and any(folder.iterdir()):
        if not (folder / MARKER).exists():
            raise SystemExit(f"{folder} is not empty and was not made by this script; pass an empty or new --instance")
        shutil.rmtree(folder)
    (folder / "dagster_home").mkdir(parents=True)
    (folder / MARKER).touch()
    (folder / "dagster_home" / "dagster.yaml").write_text(DAGSTER_YAML)
    say(f"building a demo instance in {folder}: hpo demo --symbols {' '.join(DEMO_SYMBOLS)} (a few minutes)")
    log = folder / "demo.log"
    with log.open("w") as out:
        code = subprocess.call([str(BIN / "hpo"), "demo", "--symbols", *DEMO_SYMBOLS], cwd=REPO, env=env,
                               stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"hpo demo failed (exit {code}); its output is in {log}:\n{log.read_text()[-3000:]}")
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Webserver:
    """``dagster-webserver -w workspace.yaml`` on a free loopback port, in its own process group."""

    def __init__(self, env: dict[str, str], log: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1",
                 "-p", self.url.rsplit(":", 1)[1]],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(f"{self.url}/graphql", data=json.dumps({"query": query}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["data"]

    def wait_until_ready(self, timeout: float = 180) -> None:
        """`/server_info` answers once uvicorn is up; the code location loads after that."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"dagster-webserver exited early:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/server_info", timeout=2).close()
                entries = self.graphql(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
                continue
            entry = next(e for e in entries if e["name"] == LOCATION)
            if entry["loadStatus"] == "LOADED":
                if entry["locationOrLoadError"]["__typename"] != "RepositoryLocation":
                    raise SystemExit(f"code location {LOCATION} failed to load: {entry['locationOrLoadError']}")
                return
            time.sleep(0.5)
        raise SystemExit(f"dagster-webserver not ready in {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM to the group (webserver and its code server), SIGKILL what is left after 30 s."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.25)
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


LOCATION_STATUS = """
query { workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""


def find_chromium(given: str | None) -> str:
    found = given or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not shutil.which(found):
        raise SystemExit("headless Chromium not found: install it (Debian: apt-get install chromium) "
                         "or pass --chromium PATH")
    return found


class Browser:
    """Headless Chromium over ``--remote-debugging-pipe``: NUL-separated JSON on fds 3 (in) and 4 (out)."""

    def __init__(self, executable: str, profile: Path):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes():  # runs in the child: Chromium expects exactly fds 3 and 4
            ends = os.dup(to_browser_r), os.dup(from_browser_w)  # copies first: a pipe may sit on 3 or 4
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        self.proc = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=wire_pipes, pass_fds=(3, 4), start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer, self._next_id, self.in_flight = b"", 0, set()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Network.enable", session=True)
        self.call("Page.enable", session=True)
        settings = "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(json.dumps(v))});"
                           for k, v in UI_SETTINGS.items())
        self.call("Page.addScriptToEvaluateOnNewDocument", session=True, source=settings)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=WINDOW[0], height=WINDOW[1],
                  deviceScaleFactor=1, mobile=False)

    def _read_message(self, timeout: float) -> dict:
        while b"\0" not in self._buffer:
            if not select.select([self._from_browser], [], [], timeout)[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise SystemExit("Chromium exited; run it by hand with the flags in CHROMIUM_FLAGS to see why")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _track(self, message: dict) -> None:
        """Keeps the set of data requests (GraphQL) in flight, for the network-quiet wait.

        Scripts are left out: Chromium reports no end for a chunk already fetched by another tag.
        """
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent" and params.get("type") in ("Fetch", "XHR"):
            self.in_flight.add(params["requestId"])
        elif method in ("Network.loadingFinished", "Network.loadingFailed"):
            self.in_flight.discard(params["requestId"])

    def call(self, method: str, session: bool = False, timeout: float = 60, **params) -> dict:
        self._next_id += 1
        command = {"id": self._next_id, "method": method, "params": params}
        if session:
            command["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(command).encode() + b"\0")
        while True:
            message = self._read_message(timeout)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self._track(message)

    def drain_events(self) -> None:
        try:
            while True:
                self._track(self._read_message(0))
        except TimeoutError:
            pass

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", session=True, expression=expression,
                         returnByValue=True)["result"].get("value")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def load(self, url: str, texts: tuple[str, ...], prepare: str = "true", timeout: float = 120) -> bool:
        """Open ``url``; wait until every text shows and ``prepare`` returns true, then for a quiet network.

        False when the texts did not show within ``timeout`` seconds.
        """
        self.in_flight.clear()
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + timeout
        while not (all(t in self.text() for t in texts) and self.evaluate(prepare)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        self.wait_for_quiet(deadline)
        return True

    def wait_for_quiet(self, deadline: float, quiet_for: float = 2.0) -> None:
        """Until no GraphQL request has been in flight for ``quiet_for`` seconds (the page's data is in)."""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_for and time.monotonic() < deadline:
            time.sleep(0.25)
            self.drain_events()
            if self.in_flight:
                quiet_since = time.monotonic()

    def capture(self, out: Path) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        out.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (TimeoutError, SystemExit, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def shoot(browser: Browser, url: str, page: Page, out: Path, folder: Path) -> None:
    """One PNG under ``out``; a page that never shows its texts is saved in ``folder`` for a look, and fails."""
    say(f"{url} -> {out / page.file}")
    if browser.load(url, page.shows, page.prepare):
        browser.capture(out / page.file)
        return
    failed = folder / f"failed-{page.file}"
    browser.capture(failed)
    raise SystemExit(f"{url} did not show {list(page.shows)} in time; what it showed is in {failed}, its text "
                     f"begins:\n{browser.text()[:1500]}\n(the UI or the asset metadata changed? update PAGES)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instance", type=Path, default=Path(tempfile.gettempdir()) / "hpo-ui-screenshots",
                        help="folder of the demo instance (default: %(default)s)")
    parser.add_argument("--reuse", action="store_true", help="reuse the demo instance already in --instance")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where the PNGs go (default: docs/)")
    parser.add_argument("--chromium", help="the Chromium executable (default: chromium on PATH)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the cleanup below also runs on a kill
    chromium = find_chromium(args.chromium)
    folder = args.instance.resolve()
    env = build_demo(folder, args.reuse)
    args.out.mkdir(parents=True, exist_ok=True)
    server = Webserver(env, folder / "webserver.log")
    try:
        say(f"starting dagster-webserver on {server.url}")
        server.wait_until_ready()
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            browser = Browser(chromium, Path(profile))
            try:
                for page in PAGES:
                    shoot(browser, server.url + page.path, page, args.out, folder)
            finally:
                browser.close()
    finally:
        say("stopping dagster-webserver")
        server.stop()
    say(f"done: {', '.join(p.file for p in PAGES)} in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
