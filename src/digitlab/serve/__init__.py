"""Servers on a trained run: the drawing page and its API, and TensorBoard.

- `app`: `digitlab serve RUN`, the FastAPI app (`create_app`) and its server (`serve`);
- `static/`: the drawing page (index.html, app.js, style.css);
- `board`: `digitlab tensorboard RUN`, TensorBoard on a run's --tensorboard logs.

Nothing is imported here, so `from digitlab.serve import board` does not load FastAPI or Keras.
"""
