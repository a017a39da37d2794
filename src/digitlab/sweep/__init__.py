"""`digitlab sweep`: many runs at once, one per configuration and seed, on Ray Tune.

- `runner`: `run_sweep` and `resume_sweep`, the whole sweep from plan to results;
- `plan`: `--grid` and `--sample` parsed and checked, samples drawn, every trial named
  (its errors: `digitlab.errors.SweepError`);
- `state`: the sweep folder and its record, `sweep.json`;
- `trial`: one trial, trained, resumed or skipped by what its run folder holds, in place or in a
  scratch folder mirrored to the driver's machine (no Ray needed);
- `store`: the driver's side of the run files: trials on other machines deliver them there, a
  retried trial gets them back, and every trial's outcome is kept (no Ray needed);
- `results`: one row per configuration from the run folders, and the results files;
- `raytune`: Ray, embedded (on loopback) or a cluster, the store's actor, the Tune trial, its retries
  after a lost machine;
- `progress`: the Tune callback that keeps sweep.json current and prints the progress line;
- `ray_patches`: every patch of Ray's and Tune's private parts, why, and `check()` that each still applies;
- `report`: the sweep's HTML page.

Nothing is imported here, so `from digitlab.sweep import plan` loads neither Ray nor Matplotlib.
"""
