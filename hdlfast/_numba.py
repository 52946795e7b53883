"""The dot product every numba kernel sums the same way as the native ones (csrc/cpu: dot8 of
sinkhorn.cpp and pairs.cpp, the squared norm of pairs.cpp's mix)."""
import numba as nb
import numpy as np


@nb.njit(inline="always", cache=True, nogil=True)
def dot8(x, y):
    """sum_j x[j] y[j] in float64 with eight interleaved accumulators summed pairwise (the
    order of the native kernels); float32 entries are widened exactly first."""
    k = x.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    j = 0
    while j + 8 <= k:
        s0 += np.float64(x[j]) * np.float64(y[j])
        s1 += np.float64(x[j + 1]) * np.float64(y[j + 1])
        s2 += np.float64(x[j + 2]) * np.float64(y[j + 2])
        s3 += np.float64(x[j + 3]) * np.float64(y[j + 3])
        s4 += np.float64(x[j + 4]) * np.float64(y[j + 4])
        s5 += np.float64(x[j + 5]) * np.float64(y[j + 5])
        s6 += np.float64(x[j + 6]) * np.float64(y[j + 6])
        s7 += np.float64(x[j + 7]) * np.float64(y[j + 7])
        j += 8
    while j < k:
        s0 += np.float64(x[j]) * np.float64(y[j])
        j += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
