"""query: select Gaussians (by phrase relevancy, exemplar, 3D click, mask/SAM prompt) and edit them
(hide, delete, recolor, isolate, extract, duplicate) with undo/redo and export. Uses scenes, twod
and lift. In progress: the `omnivision query` command."""
