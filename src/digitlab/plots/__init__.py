"""Figures, each a Matplotlib `Figure` built without pyplot (headless, in a server thread, inline in Jupyter).

- `figures` (its functions are this package's own names): the book's views of the digits, a
  run's curves, the confusion matrix, the confident mistakes, comparisons; PNG writing;
- `inside`: a look inside the network (hidden units, filters, feature maps);
- `sweep`: a sweep's curves and heatmap.

    from digitlab import plots
    plots.save_figure(plots.digit_grid(X_train, y_train), "digits.png")   # the book's 3x4 grid
"""

from digitlab.plots.figures import (
    class_counts,
    compare_curves,
    confusion_matrix,
    digit_grid,
    digit_pixels,
    figure_png,
    mistakes_gallery,
    save_figure,
    single_digit,
    training_curves,
)

__all__ = [
    "class_counts",
    "compare_curves",
    "confusion_matrix",
    "digit_grid",
    "digit_pixels",
    "figure_png",
    "mistakes_gallery",
    "save_figure",
    "single_digit",
    "training_curves",
]
