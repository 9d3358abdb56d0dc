"""Modified Gram-Schmidt on the columns of a matrix (csrc/ops/orthonormalize.h), in float64."""
import numpy as np


def orthonormalize_columns(p: np.ndarray) -> np.ndarray:
    """Columns in order: subtract the projections on the earlier ones, then divide by the
    norm; a column of norm zero stays zero."""
    a = p.astype(np.float64, copy=True)
    for j in range(a.shape[1]):
        for i in range(j):
            a[:, j] -= (a[:, i] @ a[:, j]) * a[:, i]
        nrm = np.sqrt(a[:, j] @ a[:, j])
        if nrm > 0:
            a[:, j] /= nrm
    return a
