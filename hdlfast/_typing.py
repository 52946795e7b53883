"""Type aliases of the public signatures."""
from __future__ import annotations

from typing import Any, Literal, Optional

#: An array hdlfast takes: numpy, cupy or torch (CPU or CUDA), or what numpy.asarray takes.
#: Results come back in the caller's kind and on the caller's device.
ArrayLike = Any
#: None: ``HDLFAST_BACKEND``, else chosen by where the data lives (see ``_backend``).
BackendName = Optional[Literal["cuda", "native", "numba"]]
