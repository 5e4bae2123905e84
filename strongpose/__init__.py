"""StrongPose: bottom-up multi-person pose estimation and person detection (TensorFlow 2 / Keras 3)."""

__version__ = "0.1.0"
