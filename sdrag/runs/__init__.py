"""The run folder a sweep leaves behind, and everything that reads it: the sweep spec it records, its rows,
results table and manifest, and the per-cell metrics. Sweeps write it; reports, `reproduce` and future explorers
read it through `RunFolder` alone."""
