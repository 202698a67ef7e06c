"""What the lessons call, so that a notebook narrates and the library computes: one module per
lesson family, every public name re-exported here (``from workbench.lessons import show``,
``wb.lessons.show``).

- ``common``: ``configured(method_id, smoke, **lesson)``, a method at the lesson's settings
  (smoke settings shrink data and epochs, never the compared knobs); ``measured(method, base,
  test, data)``, applied quietly, with one table row; ``show(rows, smoke)``, a table under the
  smoke banner in a smoke run.
- ``tour``: lessons 00 and 03 (one-shot pruning beside Han et al., Deep Compression's stages).
- ``pruning``: lessons 01a and 01b (sensitivity, storage formats and their widget, speed).
- ``quantization``: lessons 02a and 02b (rounding noise, k-means starts, int8 by hand, ONNX
  Runtime speed).
- ``binarization``: lesson 04 (operations by precision, ``explore_binary``, the estimator, scale and
  XNOR widgets).
- ``factorization``: lesson 05 (``explore_rank``, a layer's spectrum and the rank kept).
- ``distillation``: lesson 06 (temperature, loss weighting, students by width, hints and FSP).
- ``architectures``: lesson 07 (costs by layer kind, the zoo's Pareto front,
  ``explore_architecture``).
- ``search``: lesson 08 (the space of knobs, ``explore_trials`` drawing the trials as they come
  in, ``explore_budget``, ``explore_sram`` and the energy bill, two workers on one study, the
  search beside Deep Compression's table).
"""
from __future__ import annotations

from .common import *  # noqa: F401,F403
from .tour import *  # noqa: F401,F403
from .pruning import *  # noqa: F401,F403
from .quantization import *  # noqa: F401,F403
from .binarization import *  # noqa: F401,F403
from .factorization import *  # noqa: F401,F403
from .distillation import *  # noqa: F401,F403
from .architectures import *  # noqa: F401,F403
from .search import *  # noqa: F401,F403
