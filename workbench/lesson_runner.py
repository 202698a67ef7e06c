"""``python -m workbench lessons --html DIR``: every lesson run from top to bottom, as a lecturer
would before class, and written as an executed notebook and a stand-alone HTML page.

Full size by default (each lesson's own settings: minutes to an hour each on one core);
``--smoke`` runs them as CI does (the environment variable ``CI`` set, so each lesson's
``SMOKE`` is true, and its tables carry the smoke banner). Lessons are executed with papermill,
rendered with nbconvert. A widget's live view needs a kernel, or JavaScript fetched from the
internet; the HTML page shows instead each widget as it was left by the run: its controls'
values, its tables and its figures, inline, so the page opens offline.
"""
from __future__ import annotations

import html
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def lessons(folder: Path | None = None) -> list[Path]:
    """The lesson notebooks, in their order (their names start with the lesson number)."""
    folder = folder or NOTEBOOKS
    if not folder.is_dir():
        raise FileNotFoundError(f"no lessons folder {folder}: the lessons are in the "
                                "repository's notebooks/ (run from a clone, not an installed wheel)")
    return sorted(folder.glob("[0-9]*.ipynb"))


def chosen(names, folder: Path | None = None) -> list[Path]:
    """The lessons named (a file name, its stem, or its number such as 01a), all when empty."""
    found = lessons(folder)
    if not names:
        return found
    out = []
    for name in names:
        matches = [p for p in found if name in (p.name, p.stem) or p.stem.split("_")[0] == name]
        if len(matches) != 1:
            raise ValueError(f"lessons: no single lesson {name!r}; allowed: "
                             f"{', '.join(p.stem for p in found)}")
        out.append(matches[0])
    return out


@contextmanager
def kernel_environment(smoke: bool):
    """The kernel inherits this process's environment: ``CI`` set for a smoke run, unset for a
    full one (each lesson reads ``SMOKE = "CI" in os.environ``), and no ``MPLBACKEND`` (with
    Agg, as CI sets it, ``plt.show()`` would leave the page without its figures; without it
    the kernel draws them inline)."""
    before = {name: os.environ.get(name) for name in ("CI", "MPLBACKEND")}
    os.environ.pop("MPLBACKEND", None)
    if smoke:
        os.environ["CI"] = "1"
    else:
        os.environ.pop("CI", None)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def execute(lesson: Path, executed: Path, smoke: bool) -> float:
    """Run ``lesson`` into ``executed`` (papermill, from the lessons' folder); seconds taken."""
    import papermill
    start = time.perf_counter()
    with kernel_environment(smoke):
        try:
            papermill.execute_notebook(str(lesson), str(executed), cwd=str(lesson.parent),
                                       kernel_name="python3", progress_bar=False)
        except papermill.PapermillExecutionError as error:
            raise LessonFailed(f"{lesson.name} failed at cell {error.exec_count}: "
                               f"{error.ename}: {error.evalue}; the notebook as far as it ran "
                               f"is {executed}") from None
        except Exception as error:
            # the kernel died, timed out or could not start: the lesson's run, not our bug
            if not type(error).__module__.startswith(("papermill", "nbclient", "jupyter_client")):
                raise
            raise LessonFailed(f"{lesson.name}: the kernel stopped ({type(error).__name__}: "
                               f"{error}); the notebook as far as it ran is {executed}") from None
    return time.perf_counter() - start


class LessonFailed(RuntimeError):
    """A cell of a lesson raised: which lesson, which cell, what, and where the output is."""


def _value(state: dict):
    if "value" in state:
        return state["value"]
    if "index" in state and state.get("_options_labels"):
        index = state["index"]
        return state["_options_labels"][index] if isinstance(index, int) else index
    return None


def widget_html(model_id: str, models: dict) -> str:
    """A static rendering of one widget (and its children) in the state the run left it."""
    model = models.get(model_id)
    if model is None:
        return ""
    name, state = model["model_name"], model["state"]
    if "children" in state:                              # VBox, HBox, Box
        row = name == "HBoxModel"
        inner = "".join(widget_html(c.removeprefix("IPY_MODEL_"), models)
                        for c in state["children"])
        style = "display:flex;gap:1em;align-items:center" if row else ""
        return f'<div style="{style}">{inner}</div>'
    if name == "HTMLModel":
        return state.get("value", "")
    if name == "ImageModel":
        data = next((b["data"] for b in model.get("buffers", []) if b["path"] == ["value"]), "")
        fmt = state.get("format", "png")
        return f'<img src="data:image/{fmt};base64,{data}">' if data else ""
    if name == "OutputModel":
        return "".join(output_html(o) for o in state.get("outputs", []))
    if name in ("FloatProgressModel", "IntProgressModel"):
        return f'<progress value="{state.get("value", 0)}" max="{state.get("max", 100)}">' \
               "</progress>"
    if name == "ButtonModel":
        return f'<button disabled>{html.escape(state.get("description", ""))}</button>'
    value = _value(state)
    label = state.get("description", "")
    if value is None and not label:
        return ""
    return f"<p><b>{html.escape(str(label))}</b> = {html.escape(str(value))}</p>"


def output_html(output: dict) -> str:
    """One output of an Output widget as HTML."""
    if output.get("output_type") == "stream":
        text = output.get("text", "")
        return f"<pre>{html.escape(''.join(text) if isinstance(text, list) else text)}</pre>"
    data = output.get("data", {})
    if "text/html" in data:
        value = data["text/html"]
        return "".join(value) if isinstance(value, list) else value
    if "image/png" in data:
        return f'<img src="data:image/png;base64,{data["image/png"]}">'
    text = data.get("text/plain", "")
    return f"<pre>{html.escape(''.join(text) if isinstance(text, list) else text)}</pre>"


def static_widgets(notebook) -> int:
    """Replace every widget view in ``notebook``'s outputs by its static rendering; the number
    of views replaced."""
    models = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    replaced = 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                continue
            rendered = widget_html(view["model_id"], models)
            output["data"] = {"text/html": rendered or "<p>(a widget: run the notebook to see "
                                                       "it)</p>", "text/plain": "(widget)"}
            replaced += 1
    notebook.metadata.pop("widgets", None)
    return replaced


def render(executed: Path, page: Path) -> int:
    """The executed notebook as a stand-alone HTML page (figures inline); widgets replaced."""
    import nbformat
    from nbconvert import HTMLExporter
    notebook = nbformat.read(str(executed), as_version=4)
    replaced = static_widgets(notebook)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(notebook)
    page.write_text(body, encoding="utf-8")
    return replaced


def main(names, out_dir: str, smoke: bool = False) -> list[dict]:
    """Run the ``names``d lessons (all by default) into ``out_dir``: NAME.ipynb and NAME.html
    each; a row per lesson (seconds, widgets shown statically, the files)."""
    chosen_lessons = chosen(names)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for lesson in chosen_lessons:
        executed, page = out / lesson.name, out / f"{lesson.stem}.html"
        print(f"lessons: running {lesson.name} ({'smoke' if smoke else 'full size'}) ...",
              file=sys.stderr, flush=True)
        seconds = execute(lesson, executed, smoke)
        widgets = render(executed, page)
        rows.append({"lesson": lesson.stem, "mode": "smoke" if smoke else "full",
                     "seconds": round(seconds, 1), "widgets": widgets, "html": str(page),
                     "notebook": str(executed)})
        print(f"lessons: {lesson.name} took {seconds / 60:.1f} min -> {page}", file=sys.stderr,
              flush=True)
    return rows
