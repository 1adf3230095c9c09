"""tfmaas: Model-as-a-Service for TensorFlow on Kubernetes."""

__version__ = "0.1.0"
