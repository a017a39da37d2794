"""Servers: the page that trains the net live and reads handwriting, its API, and TensorBoard.

- `app`: `digitlab serve [RUN]`, the FastAPI app (`create_app`), the drawing API and the server (`serve`);
- `live`: training from the page: one run at a time in a thread, its epochs as Server-Sent Events;
- `networks`: any saved run's network at any recorded epoch (predictions, weight tiles, evaluation);
- `access`: the tokens a server off loopback requires (operator and view-only);
- `openapi`: what /openapi.json says: the error body, every status of each route, the tokens as schemes;
- `static/`: the page (index.html, app.js for the drawing pad, live.js for training, charts.js, style.css);
- `board`: `digitlab tensorboard RUN`, TensorBoard on a run's --tensorboard logs.

Nothing is imported here, so `from digitlab.serve import board` does not load FastAPI or Keras.
"""
