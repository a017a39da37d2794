"""One self-contained HTML report per run: settings, provenance, figures, per-digit scores.

    from digitlab import report, runs
    path = report.write_report(runs.open_run("runs/x"))      # runs/x/report.html

The page holds the run's configuration, its results, the software versions and
the SHA-256 of the data it was trained on (from metrics.json, checked against
the data the report was made with), the model's layers, the first training
digits, the training curves, the confusion matrix, the gallery of the most
confidently wrong digits, the per-digit precision, recall and F1, and a look
inside the network (its first layer's weights and how it answers one digit). Every
image is embedded as a base64 data URI and the styles are inline, so the one
file opens offline, in any browser, anywhere it is copied.
"""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

from digitlab import atomic, data, evaluation, inside, plots, runs, text

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
.subtitle { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }
th { background: #f4f6f8; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 0.85em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; line-height: 1.2; }
img { max-width: 100%; height: auto; display: block; margin: 0.6em 0; }
.note { color: #555; font-size: 0.92em; }
.ok { color: #1a7f37; } .warn { color: #b35900; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.5em 0.9em; min-width: 9em; }
.card .value { font-size: 1.4em; font-weight: 600; }
.card .label { color: #555; font-size: 0.85em; }
"""


def write_report(run: runs.Run, data_path=None, out_path=None) -> Path:
    """Writes the run's report (default: report.html in the run folder) and returns its path."""
    out_path = Path(out_path) if out_path is not None else run.file(runs.REPORT_FILE)
    check_out_path(out_path)
    atomic.write_text(out_path, render_report(run, data_path))
    return out_path


def render_report(run: runs.Run, data_path=None) -> str:
    """The report's HTML as a string."""
    config = run.config()
    metrics = run.metrics()
    histories = run.histories()
    arrays = data.load_arrays(data_path)
    model = run.load_model()
    result, figures = evaluation.evaluate(run, arrays, "validation", model=model)
    (x_train, y_train), _, _ = data.split(arrays, config.validation, config.train_limit)
    summary_lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: summary_lines.append(line))

    images = {
        "digits": plots.figure_png(plots.digit_grid(x_train, y_train)),
        "curves": plots.figure_png(plots.training_curves(histories, title=f"{config.model} net")),
        "confusion": plots.figure_png(figures["confusion"]),
        "mistakes": plots.figure_png(figures["mistakes"]),
        **{
            name: plots.figure_png(figure, palette=True)
            for name, figure in figures.items()
            if inside.is_inside_figure(name)
        },
    }
    title = f"digitlab run {run.name}"
    sections = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="subtitle">The {escape(config.model)} net, {escape(run.status().get("status", "unknown"))}; '
        f"trained {escape(metrics.get('finished', '?'))}; "
        f"report written {escape(datetime.datetime.now().strftime('%Y-%m-%d %H:%M'))}.</p>",
        _results_section(config, metrics, result),
        "<h2>Configuration</h2>",
        '<p class="note">Re-run it with <code>digitlab train --config '
        f"{escape(str(run.file(runs.CONFIG_FILE)))}</code>.</p>",
        table(["setting", "value"], [(name, text.value_text(value)) for name, value in config.to_dict().items()]),
        "<h2>The network</h2>",
        f"<pre>{escape(chr(10).join(line.rstrip() for line in summary_lines))}</pre>",
        "<h2>The data</h2>",
        f"<p>{escape(_data_sentence(config))}</p>",
        image(images["digits"], "The first 12 training digits with their labels"),
        _data_hash_section(metrics, arrays),
        "<h2>Training curves</h2>",
        image(images["curves"], "Accuracy and loss per epoch, training and validation"),
        "<h2>Where the network errs</h2>",
        f"<p>Evaluated on {escape(result['data'])}: accuracy {result['accuracy']:.4f}, "
        f"loss {result['loss']:.4f}, {result['errors']} errors in {result['images']} images.</p>",
        image(images["confusion"], "Confusion matrix of true and predicted digits"),
        image(images["mistakes"], "The most confidently wrong digits"),
        "<h3>Per digit</h3>",
        _per_digit_table(result),
        _inside_section(images),
        "<h2>Software and machine</h2>",
        table(
            ["", ""],
            [
                ("backend", metrics.get("backend", "?")),
                ("engine", metrics.get("engine", "?")),
                ("machine", metrics.get("machine", "?")),
                *[(name, version) for name, version in (metrics.get("versions") or {}).items()],
            ],
        ),
    ]
    return page(title, sections)


def _results_section(config, metrics: dict, result: dict) -> str:
    cards = [
        ("final val accuracy", f"{metrics.get('final_val_accuracy', float('nan')):.4f}"),
        ("best val accuracy", f"{metrics.get('best_val_accuracy', float('nan')):.4f}"),
        ("book's val accuracy", f"{config.book_val_accuracy:.3f}"),
        ("epochs", str(metrics.get("epochs", "?"))),
        ("wall time", f"{metrics.get('wall_time_s', 0):.1f} s"),
    ]
    if metrics.get("test_accuracy") is not None:
        cards.insert(2, ("test accuracy (final check)", f"{metrics['test_accuracy']:.4f}"))
    if metrics.get("seeds", 1) > 1:
        cards.insert(
            1, (f"mean over {metrics['seeds']} seeds", f"{metrics.get('final_val_accuracy_mean', float('nan')):.4f}")
        )
    items = "".join(
        f'<div class="card"><div class="value">{escape(value)}</div><div class="label">{escape(label)}</div></div>'
        for label, value in cards
    )
    return f'<h2>Results</h2>\n<div class="cards">{items}</div>'


INSIDE_CAPTIONS = {
    "hidden_units": (
        "Each tile is one neuron of the first hidden layer: its 784 weights drawn as a 28×28 image, all on "
        "one colour scale symmetric around 0 (red pixels excite the neuron, blue ones inhibit it). Beside "
        "them, the first validation image, the activations it gives the neurons (placed as the tiles) and "
        "the network's ten output probabilities."
    ),
    "filters": "The first convolution's 3×3 filters, on one colour scale symmetric around 0.",
    "feature_maps": "The maps those filters make of the first validation image, on one colour scale.",
}


def _inside_section(images: dict) -> str:
    parts = [
        f"<p>{escape(caption)}</p>\n{image(images[name], caption)}"
        for name, caption in INSIDE_CAPTIONS.items()
        if name in images
    ]
    return "<h2>A look inside the network</h2>\n" + "\n".join(parts) if parts else ""


def _data_sentence(config) -> str:
    available = 50_000 if config.validation == "holdout" else 60_000
    used = min(config.train_limit or available, available)
    training = (
        f"the first {used:,} of the {available:,} training images"
        if used < available
        else (f"the {available:,} training images")
    )
    if config.validation == "holdout":
        return (
            f"Trained on {training} (MNIST's first 50,000); validated on the last 10,000 training "
            "images, held out; the 10,000 test images were used once, after training."
        )
    return (
        f"Trained on {training} and validated on the 10,000 test images, as the book does "
        "(so there is no untouched test set)."
    )


def _data_hash_section(metrics: dict, arrays: dict) -> str:
    recorded = metrics.get("data_sha256") or {}
    current = data.fingerprint(arrays)
    rows = []
    for key in data.NPZ_KEYS:
        value = recorded.get(key)
        if value is None:
            check = '<span class="warn">not recorded</span>'
        elif value == current[key]:
            check = '<span class="ok">matches the data of this report</span>'
        else:
            check = '<span class="warn">differs from the data of this report</span>'
        rows.append((key, f"<code>{escape(value or '-')}</code>", check))
    return "<h3>SHA-256 of the data the run was trained with</h3>\n" + table(
        ["array", "sha256 (raw bytes)", "check"], rows, escaped=False
    )


def _per_digit_table(result: dict) -> str:
    rows = [
        (
            str(score["digit"]),
            f"{score['precision']:.4f}",
            f"{score['recall']:.4f}",
            f"{score['f1']:.4f}",
            str(score["support"]),
        )
        for score in result["per_digit"]
    ]
    rows.append(
        (
            "mean",
            f"{result['macro_precision']:.4f}",
            f"{result['macro_recall']:.4f}",
            f"{result['macro_f1']:.4f}",
            str(result["images"]),
        )
    )
    return table(["digit", "precision", "recall", "F1", "images"], rows, numbers=True)


def table(header, rows, escaped: bool = True, numbers: bool = False) -> str:
    """An HTML table; `escaped=False` takes the cells as HTML already."""

    def cell(value, tag="td"):
        css = ' class="number"' if numbers and tag == "td" else ""
        return f"<{tag}{css}>{escape(value) if escaped else value}</{tag}>"

    head = "" if not any(header) else "<tr>" + "".join(cell(name, "th") for name in header) + "</tr>"
    body = "".join("<tr>" + "".join(cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def image(png: bytes, alt: str) -> str:
    """A PNG as an inline <img> (a data: URL), so the page needs no other file."""
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{escape(alt)}">'


# serve/class_board.py writes its cells with `report.value_text`: the one way, `digitlab.text`'s.
value_text = text.value_text


def escape(value) -> str:
    """`value` as HTML text, quotes escaped too."""
    return html.escape(str(value), quote=True)


def page(title: str, sections: list[str]) -> str:
    """A whole self-contained HTML page: the title, the inline styles and the sections in order."""
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def check_out_path(out_path: Path) -> None:
    """Refuses a report path that is a folder, or whose folder does not exist or cannot be written."""
    if out_path.is_dir():
        raise runs.RunError(f"{out_path} is a folder; give the report's file name, such as {out_path / 'report.html'}.")
    if not out_path.parent.is_dir():
        raise runs.RunError(f"Cannot write {out_path}: the folder {out_path.parent} does not exist.")
    runs.check_writable(out_path.parent, advice="Give a file you can write with `digitlab report RUN --out FILE`.")
