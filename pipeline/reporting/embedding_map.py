"""A 2-D map of an embedding space, for the report: which epochs to show, and
the projection.

The projection is PCA, fitted to each epoch's validation embeddings on its own
(each epoch is another network, so their spaces share no axes), with each axis's
sign fixed so that its largest loading is positive: the same method at every
epoch, no randomness, and milliseconds for 10k x 128. t-SNE and UMAP draw
tighter clusters, but they bend distances, need a seed and a package (scikit-learn,
umap-learn with numba) the pipeline does not otherwise install, and take tens of
seconds for 10k points on two cores, which would be most of the report's time.
PCA shows the large-scale layout truthfully: classes apart on the map are apart
in the embedding; classes that overlap on it may still be apart in the other
dimensions.
"""

from __future__ import annotations

import numpy as np

# Validation queries marked on each map (those with the lowest precision at that epoch):
# at most this many, and at most one in 20, so the marks stay the exceptions.
MARKED_QUERIES = 20


def map_epochs(last: int) -> list[int]:
    """The epochs shown side by side: 0 (the random network), 1, the middle one and the last."""
    return sorted({e for e in (0, 1, last // 2, last) if 0 <= e <= last})


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """``(n, 2)``: ``vectors`` (``(n, d)``) on their first two principal components.

    Deterministic: the SVD of the centred float64 data, each component's sign chosen
    so its largest-magnitude loading is positive. Fewer than two dimensions or rows
    leave the missing coordinates at 0.
    """
    x = np.asarray(vectors, np.float64)
    out = np.zeros((len(x), 2))
    if len(x) < 2 or x.ndim != 2 or x.shape[1] == 0:
        return out
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    components = vt[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    out[:, : len(components)] = x @ components.T
    return out
