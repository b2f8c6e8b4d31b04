"""Type aliases and the dimension legend used in every docstring.

Dimensions: ``n`` samples, ``d`` features, ``k`` components, ``m`` points moved by
mean shift. Shapes are written in docstrings as ``(n, d)``.
"""

import jax
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike | np.ndarray
