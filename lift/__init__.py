"""Per-view features and masks -> per-Gaussian features (LUDVIG aggregation, graph diffusion). Not built yet."""
