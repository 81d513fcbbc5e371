"""query: select Gaussians (by phrase relevancy, exemplar, 3D click, SAM 2 prompt or 2D mask) and
edit them (hide, delete, recolor, isolate, extract, duplicate) with undo/redo and export; render
any query's scores as a heatmap; the `omnivision query` command. Uses scenes, twod and lift."""
