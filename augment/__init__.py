"""augment: labeled synthetic data from a conditional VAE.

    import augment
    synth = augment.Synthesizer(label="y").fit(df)       # needs the train extra (torch)
    df_syn = synth.sample(per_class=1000, seed=7)        # torch-free: onnxruntime, numpy, pyarrow

The generation side (this package) runs on onnxruntime, numpy and pyarrow alone; it never imports torch.
Training lives in the sibling package ``training`` and serving in ``serving``. ``import augment`` itself loads
nothing heavy: ``Synthesizer`` is imported on first use.
"""

__version__ = "0.3.2"

__all__ = ["__version__", "Synthesizer"]


def __getattr__(name: str):
    if name == "Synthesizer":
        from augment.api import Synthesizer

        return Synthesizer
    raise AttributeError(f"module 'augment' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
