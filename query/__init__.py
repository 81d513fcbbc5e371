"""Select and edit Gaussians by phrase, exemplar, click and SAM prompt. Not built yet."""
