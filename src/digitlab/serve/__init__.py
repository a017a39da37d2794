"""Servers: the page that trains the net in the browser and reads handwriting, its API, and TensorBoard.

- `app`: `digitlab serve [RUN]`, the FastAPI app (`create_app`), the drawing API and the server (`serve`);
- `live`: the runs API: saved runs, and a run `digitlab train` trains now, its epochs as Server-Sent Events;
- `uploads`: what the page trains with (its rules, MNIST) and a run it keeps; `classroom`: a class's runs;
- `bodies`: reading a prediction's body (size guard, JSON pixels, multipart, pictures), each refusal a sentence;
- `networks`: any saved run's network at any recorded epoch (predictions, weight tiles, evaluation);
- `runs_folder`: the runs folder by name: which folders are runs, which a URL opens, why one cannot be;
- `access`: the tokens a server off loopback requires (operator and view-only);
- `openapi`: what /openapi.json says: the error body, every status of each route, the tokens as schemes;
- `static/`: the page (index.html, app.js for the drawing pad, browser.js and train-worker.js for training in
  the browser, live.js for the server's runs, charts.js, style.css);
- `board`: `digitlab tensorboard RUN`, TensorBoard on a run's --tensorboard logs.

Nothing is imported here, so `from digitlab.serve import board` does not load FastAPI or Keras.
"""
