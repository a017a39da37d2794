"""digitlab: the Shallow Net in Keras of Deep Learning Illustrated (chapter 5), made real.

Importing the package chooses Keras's JAX backend unless `KERAS_BACKEND` says
otherwise (TensorFlow and PyTorch stay selectable), and quiets TensorFlow's
start-up logging when TensorFlow happens to be installed.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
