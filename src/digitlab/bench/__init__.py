"""`digitlab bench`: Keras `fit` against digitlab's engine, every row measured side by side in one run.

- `runner`: `run_bench` (the shallow net, per epoch) and `run_lenet_bench` (LeNet's steps per
  backend): each row in its own process, the ratios against the limits and the `fit` rows;
- `arithmetic`: the machine's matrix-multiply speed and an epoch's floating-point operations;
- `markdown`: the line printed per row and bench.md's tables;
- `worker`: one row in its own process (`python -m digitlab.bench.worker --worker JSON`);
- `rows`: the TypedDicts of what crosses them (a worker's spec and result, a table row, bench.json).
"""
