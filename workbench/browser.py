"""A lesson in a real browser: JupyterLab started here, Debian's Chromium driven by Playwright.

Used by ``tests/test_browser.py`` and ``bench widgets_browser``. ``JupyterLab`` starts a server
on a free local port (random token, no browser of its own, a given root directory) and stops
it; ``open_notebook`` / ``run_cells`` open a lesson and run it through JupyterLab's own
commands; ``find_slider`` locates a widget by its slider's label; ``move`` presses a key on the
slider and times key press -> finished plot inside the page (``performance.now``), recording
every moment the figure was missing from the widget's output in between.

Playwright is optional (the ``test`` extra): ``missing()`` says what is absent, ``browser()``
raises a RuntimeError saying how to install it. Playwright's own browser download is not used:
Chromium comes from the system (``WORKBENCH_CHROMIUM``, else ``/usr/bin/chromium``).
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


# What a lesson widget is in the page, and where its figure is: ``widgets.explore`` (a VBox of
# class wb-explore whose figure is an image of class wb-plot), or an ``ipywidgets.interactive``
# that displays its figure in an Output (lesson 06's temperature widget).
WIDGETS = ".wb-explore, .widget-interact"
FIGURES = ".widget-output img, .widget-output canvas, img.wb-plot"
TABLES = ".widget-output table, .wb-table table"


def chromium_path() -> str | None:
    """The system Chromium: ``$WORKBENCH_CHROMIUM``, Debian's ``/usr/bin/chromium``, or PATH."""
    candidates = [os.environ.get("WORKBENCH_CHROMIUM"), *CHROMIUM_PATHS,
                  shutil.which("chromium")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def missing() -> str | None:
    """Why a browser run is impossible here (None: Playwright and Chromium are both present)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return ("no Chromium: install Debian's `chromium` package (apt-get install chromium) "
                "or set WORKBENCH_CHROMIUM")
    return None


@contextlib.contextmanager
def browser(width: int = 1400, height: int = 1000):
    """A headless Chromium page (Playwright sync API), closed on exit."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield chromium.new_page(viewport={"width": width, "height": height})
        finally:
            chromium.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """``with JupyterLab(root, env) as lab:`` a server on 127.0.0.1:``lab.port``; ``lab.url(path)``
    carries the token. A server that does not answer within ``timeout`` seconds (or exits)
    raises RuntimeError with the tail of its log."""

    def __init__(self, root: Path, env: dict | None = None, timeout: float = 60.0):
        self.root, self.timeout = Path(root), timeout
        self.env = {**os.environ, **(env or {})}
        self.env = {k: v for k, v in self.env.items() if v is not None}
        self.token, self.port = secrets.token_hex(16), free_port()
        self.process = None
        self.log_path = None

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path}{sep}token={self.token}"

    def log_tail(self, lines: int = 30) -> str:
        text = Path(self.log_path).read_text(errors="replace") if self.log_path else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self):
        # Runtime files, workspaces and settings of its own: parallel servers (pytest-xdist)
        # neither share a workspace nor read a user's settings.
        self.state = Path(tempfile.mkdtemp(prefix="jupyterlab-"))
        self.log_path = self.state / "server.log"
        # Every cell stays rendered (JupyterLab's default windowing skips cells off screen, and
        # a widget scrolled away would have no figure to look at).
        tracker = self.state / "settings" / "@jupyterlab" / "notebook-extension"
        tracker.mkdir(parents=True)
        (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
        log = open(self.log_path, "w")
        env = {**self.env, "JUPYTER_RUNTIME_DIR": str(self.state / "runtime"),
               "JUPYTERLAB_SETTINGS_DIR": str(self.state / "settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(self.state / "workspaces")}
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
                   f"--port={self.port}", "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
                   # the page reaches JupyterLab's command registry through window.jupyterapp
                   "--LabApp.expose_app_in_browser=True",
                   "--LabApp.news_url=", "--LabApp.check_for_updates_class="
                   "jupyterlab.NeverCheckForUpdate"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")     # CI containers run as root
        self.process = subprocess.Popen(command, cwd=self.root, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.process.returncode}; "
                                   f"its log ends:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url("api/status"), timeout=2) as response:
                    if response.status == 200:
                        return
            time.sleep(0.3)
        raise RuntimeError(f"JupyterLab did not answer on port {self.port} within "
                           f"{self.timeout:.0f} s; its log ends:\n"
                           f"{self.log_tail()}")

    def __exit__(self, *exc):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.state, ignore_errors=True)
        return False


def open_notebook(page, lab: JupyterLab, name: str, timeout: float = 60.0):
    """Open ``name`` (relative to the server's root) and wait for an idle kernel."""
    page.goto(lab.url(f"lab/tree/{name}"), timeout=timeout * 1000)
    page.wait_for_function(
        """() => { const app = window.jupyterapp; if (!app) return false;
                   const panel = app.shell.currentWidget;
                   const kernel = panel && panel.sessionContext && panel.sessionContext.session
                                  && panel.sessionContext.session.kernel;
                   return !!kernel && kernel.status === 'idle'; }""",
        timeout=timeout * 1000, polling=200)


def run_cells(page, through: int | None = None, timeout: float = 300.0) -> list[str]:
    """Run every cell (``through``: only cells 0..through) with JupyterLab's own commands and wait
    for the end; returns the text of the error outputs (empty: no cell raised)."""
    page.evaluate(
        """async (through) => { const app = window.jupyterapp;
             const notebook = app.shell.currentWidget.content;
             if (through === null) { await app.commands.execute('notebook:run-all-cells'); return; }
             notebook.activeCellIndex = through;
             await app.commands.execute('notebook:run-all-above');
             notebook.activeCellIndex = through;
             await app.commands.execute('notebook:run-cell'); }""", through)
    # The commands resolve when the cells are queued or done, depending on the version: wait
    # until no cell is pending and the kernel is idle.
    page.wait_for_function(
        """() => { const panel = window.jupyterapp.shell.currentWidget;
                   const busy = panel.content.widgets.some(c => c.model.type === 'code'
                                && c.promptNode && c.promptNode.textContent.includes('*'));
                   return !busy && panel.sessionContext.session.kernel.status === 'idle'; }""",
        timeout=timeout * 1000, polling=250)
    return page.eval_on_selector_all(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']",
        "nodes => nodes.map(n => n.innerText.slice(-2000))")


def find_slider(page, label: str, timeout: float = 30.0):
    """The first ``interactive`` widget whose slider is labelled ``label``: (widget, handle)
    locators; the handle is the slider's focusable, keyboard-driven part."""
    exact = re.compile(rf"^\s*{re.escape(label)}\s*$")
    widget = page.locator(WIDGETS).filter(
        has=page.locator(".widget-slider .widget-label", has_text=exact)).first
    widget.wait_for(timeout=timeout * 1000)
    slider = widget.locator(".widget-slider").filter(
        has=page.locator(".widget-label", has_text=exact)).first
    handle = slider.locator(".noUi-handle").first
    return widget, handle


def slider_value(handle) -> float:
    """The value the slider shows in its readout (noUiSlider's aria-valuenow lags behind)."""
    readout = handle.locator("xpath=ancestor::*[contains(@class, 'widget-slider')][1]")
    return float(readout.locator(".widget-readout").first.inner_text())


# Installed in the page before a key press: the key's time, and a MutationObserver on the widget
# that notes each moment the output holds no figure (the plot missing while the rest updated).
_WATCH = """([widget, before]) => {
  const state = {key: null, gaps: [], gapStart: null, before, heights: new Set()};
  const figures = () => widget.querySelectorAll(FIGURES);
  const check = () => {
    const now = performance.now(), none = figures().length === 0;
    state.heights.add(Math.round(widget.getBoundingClientRect().height));
    if (none && state.gapStart === null) state.gapStart = now;
    if (!none && state.gapStart !== null) { state.gaps.push(now - state.gapStart); state.gapStart = null; }
  };
  state.observer = new MutationObserver(check);
  state.observer.observe(widget, {childList: true, subtree: true, attributes: true});
  document.addEventListener('keydown', () => { if (state.key === null) state.key = performance.now(); },
                            {capture: true, once: true});
  window.__wbMove = state;
}"""

# Finished: the slider shows the new value and the widget's output holds a loaded figure that
# differs from the one before the key press (an img's src, or a canvas's pixels).
_DONE = """([widget, value]) => {
  const state = window.__wbMove;
  const readout = Number(widget.querySelector('.widget-slider .widget-readout').innerText);
  if (Math.abs(readout - value) > 1e-9) return false;
  const figs = widget.querySelectorAll(FIGURES);
  if (figs.length === 0) return false;
  const fig = figs[figs.length - 1];
  const ident = fig.tagName === 'IMG' ? fig.src : fig.toDataURL();
  if (ident === state.before) return false;
  if (fig.tagName === 'IMG' && !(fig.complete && fig.naturalWidth > 0)) return false;
  state.done = performance.now(); state.observer.disconnect();
  if (state.gapStart !== null) state.gaps.push(state.done - state.gapStart);
  return true;
}"""


_WATCH, _DONE = (js.replace("FIGURES", repr(FIGURES)) for js in (_WATCH, _DONE))


@dataclass
class Move:
    """One key press on a slider: values before/after, key -> finished plot (s), figure gaps."""
    key: str
    before: float
    after: float
    seconds: float
    figure_gaps_s: list[float] = field(default_factory=list)
    widget_heights: list[int] = field(default_factory=list)


def figure_ident(widget) -> str | None:
    """What identifies the widget's current figure: an img's src or a canvas's data URL."""
    return widget.evaluate(
        """w => { const f = w.querySelectorAll(%s);
                  if (!f.length) return null; const x = f[f.length - 1];
                  return x.tagName === 'IMG' ? x.src : x.toDataURL(); }""" % repr(FIGURES))


def move(page, widget, handle, key: str = "ArrowRight", timeout: float = 60.0) -> Move:
    """Focus the slider, press ``key`` and wait for the finished plot; timed in the page."""
    before = slider_value(handle)
    handle.focus()
    page.evaluate(_WATCH, [widget.element_handle(), figure_ident(widget)])
    page.keyboard.press(key)
    page.wait_for_function("() => window.__wbMove.key !== null", timeout=5000, polling=50)
    after = slider_value(handle)
    if after == before:
        raise ValueError(f"move(key={key!r}): the slider stayed at {before} (at its end?); "
                         "allowed is a key that changes the value")
    page.wait_for_function(_DONE, arg=[widget.element_handle(), after], timeout=timeout * 1000,
                           polling="raf")
    state = page.evaluate("() => { const s = window.__wbMove; return {key: s.key, done: s.done,"
                          " gaps: s.gaps, heights: [...s.heights]}; }")
    return Move(key, before, after, (state["done"] - state["key"]) / 1000,
                [g / 1000 for g in state["gaps"]], sorted(state["heights"]))
