"""lift: 2D features and masks onto the Gaussians (LUDVIG aggregation, graph diffusion, optional
distillation refinement), lifted-feature files with their manifest, and `omnivision-lift`.
Uses scenes and twod."""
