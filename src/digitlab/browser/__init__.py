"""The lab in the browser: what the page needs from the package to train without a server.

- `rules`: TrainConfig's fields, defaults, choices, limits and error sentences as one JSON
  document (`page_document`), generated from `digitlab.config`, so the page checks a setting as
  `digitlab train` does and says the same sentence;
- `mnist_asset`: MNIST as gzip'ed raw uint8 arrays with an index of sizes and SHA-256s, written
  once and read back (`write`, `read`);
- `prng`: the page's seeded generator (xoshiro128**), its glorot-uniform initial weights and
  its Fisher-Yates batch orders, in NumPy, so a browser run can be repeated natively;
- `page_runs`: a run trained in the page turned into an ordinary run folder (`save_page_run`);
- `site`: `digitlab site DIR`, the page, its scripts, the engine and MNIST as static files.
"""
