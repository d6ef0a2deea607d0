"""augment: labeled synthetic data from a conditional VAE.

The generation side (this package) runs on onnxruntime, numpy and pyarrow alone; it never imports torch.
Training lives in the sibling package ``training`` and serving in ``serving``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
