"""`digitlab explore`: the chapter's first look at MNIST, as text and as the book's figures.

    from digitlab import explore
    summary = explore.explore(out_dir="figures")   # prints, writes four PNGs, returns the facts

Prints the arrays' shapes and dtypes, `y_train[:12]`, the pixel range and the
number of images per digit, then writes:

    digits_grid.png     the first 12 training digits, 3x4, cmap='Greys'
    digit_pixels.png    X_train[0] drawn pixel by pixel with its 0-255 values and a colour bar
    valid_0.png         X_valid[0] with its label (a seven)
    class_counts.png    the number of images of each digit, training and validation
"""

from __future__ import annotations

from pathlib import Path

from digitlab import data, plots, runs


def explore(data_path=None, out_dir: str | Path = "figures", print_fn=print) -> dict:
    """Describes MNIST and writes the book's figures into `out_dir`; returns what it printed."""
    (x_train, y_train), (x_valid, y_valid) = data.load_mnist(data_path)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise runs.RunError(f"Cannot create the figures folder {out_dir} ({error.strerror}).") from None
    train_counts, valid_counts = data.class_counts(y_train), data.class_counts(y_valid)
    summary = {
        "X_train": f"{x_train.shape} {x_train.dtype}",
        "y_train": f"{y_train.shape} {y_train.dtype}",
        "X_valid": f"{x_valid.shape} {x_valid.dtype}",
        "y_valid": f"{y_valid.shape} {y_valid.dtype}",
        "y_train[:12]": " ".join(str(label) for label in y_train[:12]),
        "y_valid[0]": int(y_valid[0]),
        "pixel range": f"{int(x_train.min())} to {int(x_train.max())} (0 = white, 255 = black)",
        "training images per digit": " ".join(str(count) for count in train_counts),
        "validation images per digit": " ".join(str(count) for count in valid_counts),
    }
    width = max(len(name) for name in summary)
    for name, value in summary.items():
        print_fn(f"{name.ljust(width)}  {value}")

    figures = {
        "digits_grid.png": plots.digit_grid(x_train, y_train),
        "digit_pixels.png": plots.digit_pixels(x_train[0], int(y_train[0])),
        "valid_0.png": plots.single_digit(x_valid[0], int(y_valid[0])),
        "class_counts.png": plots.class_counts(train_counts, valid_counts),
    }
    for name, figure in figures.items():
        plots.save_figure(figure, out_dir / name)
    print_fn(f"Wrote {', '.join(figures)} to {out_dir}")
    summary["figures"] = [str(out_dir / name) for name in figures]
    return summary
