"""OmniVision: make 3D Gaussian Splatting scenes searchable and editable with 2D foundation models.

Subpackages: `omnivision.scenes` (load, render, write 3DGS scenes), `omnivision.twod`,
`omnivision.lift`, `omnivision.query`, `omnivision.viewer`, `omnivision.eval`.
"""

__version__ = "0.1.0"
