"""tfgan_rec: GAN-augmented two-stage TensorFlow Recommenders.

Importing the package selects Keras 2 (``tf_keras``) for ``tf.keras``, which
TensorFlow Recommenders needs; this has to happen before TensorFlow is first
imported, so it is done here rather than left to every user.
"""
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's pooling CPU allocator: with the default one, every tensor above
# malloc's mmap threshold is mapped and unmapped per op, and large batches
# spend more time page-faulting than computing (benchmarks/README.md).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

if "tensorflow" in sys.modules and os.environ["TF_USE_LEGACY_KERAS"] != "1":
  raise ImportError(
      "tfgan_rec needs Keras 2: import tfgan_rec before tensorflow, or set "
      "TF_USE_LEGACY_KERAS=1 in the environment.")

__version__ = "0.1.0"
