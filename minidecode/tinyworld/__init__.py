"""TinyWorld: the course's synthetic corpus, its training and its evaluation.

- :mod:`~minidecode.tinyworld.corpus`: the document generators (re-exported here, so
  ``from minidecode import tinyworld as tw; tw.retrieval(...)`` works);
- :mod:`~minidecode.tinyworld.needles`: needle-in-a-haystack documents for chapters 8-9;
- :mod:`~minidecode.tinyworld.train`: tokenizer, data packing, the training loop
  (``python -m minidecode.tinyworld.train``);
- :mod:`~minidecode.tinyworld.evaluate`: the held-out measurements of the shipped models
  (``python -m minidecode.tinyworld.evaluate``).
"""

from minidecode.tinyworld.corpus import *  # noqa: F401,F403
from minidecode.tinyworld.corpus import _cap, _Writer  # noqa: F401
