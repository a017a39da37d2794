"""digitlab: the Shallow Net in Keras of Deep Learning Illustrated (chapter 5), made real.

Importing the package chooses Keras's JAX backend unless `KERAS_BACKEND` says
otherwise, and quiets TensorFlow's start-up logging when TensorFlow is imported
later. `digitlab train` then picks the fastest backend per net before Keras is
imported (LeNet on TensorFlow): see `digitlab.backends`.
"""

from digitlab import backends

backends.set_default()

__version__ = "0.1.0"
