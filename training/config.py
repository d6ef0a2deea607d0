"""Training configuration: one frozen dataclass, validated on construction, saved into bundle.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["TrainConfig"]

from augment.constants import DEVICES as _DEVICES  # noqa: E402
# Image models jitter their training batches by default below this many images per class (on average). On
# MNIST with 20 images per class it turns synthetic data from a loss (-2.5 accuracy points) into a gain
# (+7 to +8); benchmarks/bench_small_data.py.
JITTER_BELOW = 500
JITTER_MIN_SIDE = 16  # 8x8 digits lose more to resampling than they gain: TSTR 0.935 -> 0.920 with jitter
JITTER_STEPS = 3  # jittered batches never repeat, so the model trains for this many times the steps


@dataclass(frozen=True)
class TrainConfig:
    epochs: int | None = None  # None: chosen from the data size (see resolved_epochs)
    batch_size: int = 512
    latent_dim: int | None = None  # None: 32 for tables, 16 for images
    hidden: int = 256
    # KL weight; None: 0.5 for tables, 0.25 for images. < 1 keeps columns and strokes sharp; the per-class mixture
    # sampler covers the latent gaps. On MNIST 0.25 lowered the detection AUC from 0.944 to 0.928 with TSTR 0.991
    # of TRTR (0.993) and the DCR ratios unchanged; on bank it raised detection (0.584 -> 0.593): docs/benchmarks.md.
    beta: float | None = None
    kl_warmup: float = 0.3  # share of the epochs over which the KL weight rises from 0 to beta
    lr: float = 2e-3
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    patience: int = 8
    # Stop early when training would run past this many seconds (None: no limit). Off by default: a wall-clock
    # limit makes the number of epochs, and so the bundle, depend on the machine's load.
    time_budget_s: float | None = None
    # Latent mixture per class, at most one component per 25 rows. None: tables 100 full components fitted to
    # the posterior means, images 10 full ones fitted to posterior draws (training/mixture.py: measurements).
    mixture_components: int | None = None
    mixture_covariance: str | None = None  # diag | full
    mixture_fit: str | None = None  # samples (posterior draws) | means (posterior means)
    # Share of each component's mean posterior variance added to its covariance in classes of at least
    # training.mixture.INFLATE_MIN_ROWS rows (training/mixture.py). None: 0.5 when the mixture is fitted to the
    # posterior means (tables), 0 when to posterior draws (images), which carry that spread already.
    mixture_inflate: float | None = None
    # Batches drawn with weights count(class) ** -class_balance: 0 = the data's proportions, 1 = balanced classes.
    class_balance: float = 0.0
    # Images: channels of the two stride-2 convolutions (the decoder mirrors them). (16, 32) until 0.3.2: (32, 64)
    # lifted MNIST TSTR from 0.972 to 0.986 of TRTR for about twice the training time (docs/benchmarks.md).
    image_channels: tuple[int, int] = (32, 64)
    # Images: strength of the random affine jitter of each training batch (training/jitter.py); 0 = off.
    # None: 1.0 when the classes hold fewer than JITTER_BELOW images on average and the images are at least
    # JITTER_MIN_SIDE pixels high and wide, else off.
    image_jitter: float | None = None
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True  # bf16 autocast when training on CUDA (no effect on CPU)
    threads: int | None = None  # torch intra-op threads (None: all cores)
    # Columns forced categorical / numeric (by default integers with at most 32 distinct values are categorical)
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()  # identifier columns: generated fresh in their format, never modelled (--id)
    drop: tuple[str, ...] = ()  # columns left out of the model and the output (--drop)
    # Categorical columns whose values get their own latent mixture per class (--condition-on): --where on them
    # draws from it rather than rejecting (augment/batch/where.py)
    condition_on: tuple[str, ...] = ()
    max_categories: int = 1000  # most categories a categorical column may have (after pooling rare values)
    rare_min_rows: int = 5  # a category held by fewer training rows is never written verbatim ...
    keep_rare: bool = False  # ... unless this is set (--keep-rare)

    def __post_init__(self) -> None:
        for name in ("categorical", "numeric", "ids", "drop", "condition_on"):  # lists from JSON or callers
            value = getattr(self, name)  # "a,b" (as on the command line) is two names, not a run of letters
            names = value.split(",") if isinstance(value, str) else value
            object.__setattr__(self, name, tuple(n.strip() for n in names if str(n).strip()))
        channels = self.image_channels.split(",") if isinstance(self.image_channels, str) else self.image_channels
        try:
            channels = tuple(int(c) for c in channels)
        except (TypeError, ValueError):
            raise ValueError(f"image channels must be two positive integers, got {self.image_channels!r}") from None
        object.__setattr__(self, "image_channels", channels)
        checks = [
            (self.epochs is None or self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch size must be >= 2, got {self.batch_size}"),
            (self.latent_dim is None or self.latent_dim >= 1, f"latent dim must be >= 1, got {self.latent_dim}"),
            (self.hidden >= 2, f"hidden must be >= 2, got {self.hidden}"),
            (self.beta is None or self.beta >= 0, f"beta must be >= 0, got {self.beta}"),
            (0 <= self.kl_warmup <= 1, f"kl warm-up must be in [0, 1], got {self.kl_warmup}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (0 < self.val_fraction < 0.5, f"validation fraction must be in (0, 0.5), got {self.val_fraction}"),
            (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
            (0 <= self.class_balance <= 1, f"class balance must be in [0, 1], got {self.class_balance}"),
            (self.image_jitter is None or 0 <= self.image_jitter <= 3,
             f"image jitter must be in [0, 3], got {self.image_jitter}"),
            (self.mixture_components is None or self.mixture_components >= 1,
             f"mixture components must be >= 1, got {self.mixture_components}"),
            (self.mixture_covariance in (None, "diag", "full"),
             f"mixture covariance must be diag or full, got {self.mixture_covariance!r}"),
            (self.mixture_fit in (None, "samples", "means"),
             f"mixture fit must be samples or means, got {self.mixture_fit!r}"),
            (self.mixture_inflate is None or 0 <= self.mixture_inflate <= 4,
             f"mixture inflate must be in [0, 4], got {self.mixture_inflate}"),
            (len(self.image_channels) == 2 and min(self.image_channels) >= 1,
             f"image channels must be two positive integers, got {self.image_channels!r}"),
            (self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
            (self.max_categories >= 1, f"max categories must be >= 1, got {self.max_categories}"),
            (self.rare_min_rows >= 1, f"rare min rows must be >= 1, got {self.rare_min_rows}"),
            (self.device in _DEVICES, f"device must be one of {', '.join(_DEVICES)}, got {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def codec_options(self) -> dict:
        """The keyword arguments of ``Codec.fit`` this config sets."""
        return {"categorical": list(self.categorical), "numeric": list(self.numeric), "ids": list(self.ids),
                "drop": list(self.drop), "max_categories": self.max_categories, "rare_min_rows": self.rare_min_rows,
                "keep_rare": self.keep_rare}

    def resolved_mixture(self, modality: str) -> tuple[int, str, str, float]:
        """(components, covariance, fitted on, inflate) of the per-class latent mixture."""
        image = modality == "image"
        fit_on = self.mixture_fit or ("samples" if image else "means")
        inflate = self.mixture_inflate if self.mixture_inflate is not None else (0.5 if fit_on == "means" else 0.0)
        return (self.mixture_components or (10 if image else 100), self.mixture_covariance or "full", fit_on,
                float(inflate))

    def resolved_beta(self, modality: str) -> float:
        return float(self.beta if self.beta is not None else (0.25 if modality == "image" else 0.5))

    def resolved_latent_dim(self, modality: str) -> int:
        return self.latent_dim or (16 if modality == "image" else 32)

    def resolved_batch_size(self, n_rows: int) -> int:
        """``batch_size``, smaller for small data (at least 16 steps an epoch, batches of at least 32 rows)."""
        return int(max(2, min(self.batch_size, n_rows, max(32, n_rows // 16))))

    def resolved_image_jitter(self, modality: str, n_rows: int, n_classes: int,
                              image_shape: tuple[int, int, int] | None = None) -> float:
        """The jitter strength training uses: ``image_jitter``, or by default 1.0 for few, not tiny, images."""
        if modality != "image":
            return 0.0
        if self.image_jitter is not None:
            return float(self.image_jitter)
        big_enough = image_shape is not None and min(image_shape[1:]) >= JITTER_MIN_SIDE
        return 1.0 if big_enough and n_rows < JITTER_BELOW * max(1, n_classes) else 0.0

    def resolved_epochs(self, n_rows: int, modality: str, pixels: int = 0, jitter: float = 0.0) -> int:
        """Enough optimizer steps for small data, few passes for large, within 10-300 epochs.

        Tables: about 6,000 steps. Images: a step costs about in proportion to the pixels, so about
        1,000 * 64 / pixels steps (1,000 for 8x8 digits, 600 for 28x28 MNIST), at least 600; three times
        as many with jitter.
        """
        if self.epochs is not None:
            return self.epochs
        steps = 6000 if modality != "image" else max(600, 1000 * 64 // max(1, pixels))
        steps *= JITTER_STEPS if jitter > 0 else 1
        steps_per_epoch = max(1, n_rows // self.resolved_batch_size(n_rows))
        return int(min(300, max(10, steps // steps_per_epoch)))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
