"""One runner for every attack: over a recording (`run.run_attack`) or on the live tap (`live.LiveAttack`).

Modules: `meta` (the typed, checked view of a recorded item), `attacks` (make_attack, the prior,
the one call of a feature attack's reconstruct), `output` (output folder, truth scoring,
config.json and metrics.json), `features` / `gradients` (the two families' paths over a recording),
`live` (the tap). This package file imports nothing, so its modules import each other freely.
"""
