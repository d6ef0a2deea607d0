"""The training loop: Adam, a seeded validation split, KL warm-up, early stopping on the validation loss.

Batches are index slices of tensors held in memory (no per-row Python). The best weights by validation loss
are restored at the end. A progress bar shows the epoch, the loss parts and the ETA.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from augment.errors import AugmentError
from training.config import TrainConfig
from training.jitter import random_affine
from training.loss import ReconstructionLoss, kl_divergence, kl_weight

__all__ = ["TrainResult", "fit", "split_indices", "pick_device", "device_note"]


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int
    train_loss: float
    val_loss: float
    val_recon: float
    val_kl: float
    wall_s: float
    rows_per_s: float
    stopped: str  # "epochs", "early_stopping" or "time_budget"
    history: list[dict] = field(default_factory=list)
    device: str = "cpu"
    mixed_precision: bool = False


def pick_device(device: str) -> torch.device:
    """cuda where asked (an error without CUDA) or where ``auto`` finds it; else cpu."""
    if device == "cuda" and not torch.cuda.is_available():
        raise AugmentError("--device cuda: torch sees no CUDA device here (use --device auto or cpu)")
    return torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")


def device_note(device: str) -> str | None:
    """What to tell the user when ``auto`` falls back to the CPU (None otherwise)."""
    if device == "auto" and not torch.cuda.is_available():
        return "--device auto: torch sees no CUDA device here; training on CPU"
    return None


def split_indices(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified split: each class gives ceil-rounded ``val_fraction`` of its rows (at least one)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = min(len(idx) - 1, max(1, int(round(val_fraction * len(idx)))))
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _check_finite(loss: float, where: str, config: TrainConfig) -> None:
    # A NaN loss once trained on silently and a NaN decoder was exported: stop at the first one instead.
    if not math.isfinite(loss):
        raise AugmentError(
            f"training diverged: the loss is {loss} at {where}; nothing was written. Lower --lr (now {config.lr:g}), "
            "or look for extreme values in the data"
        )


def _evaluate(model, recon, x, y, batch_size) -> tuple[float, float]:
    model.eval()
    total_r = total_k = 0.0
    with torch.no_grad():
        for i in range(0, x.shape[0], 4 * batch_size):
            xb, yb = x[i:i + 4 * batch_size], y[i:i + 4 * batch_size]
            mu, logvar = model.encode(xb, yb)
            params = model.decode(mu, yb)  # the posterior mean: a stable, noise-free validation signal
            total_r += recon(params, xb).sum().item()
            total_k += kl_divergence(mu, logvar).sum().item()
    n = x.shape[0]
    return total_r / n, total_k / n


def fit(model: torch.nn.Module, segments, x: np.ndarray, y_onehot: np.ndarray, y_index: np.ndarray,
        config: TrainConfig, epochs: int, *, jitter: float = 0.0, progress: bool = True) -> TrainResult:
    """Train ``model`` in place on (x, y); returns the losses and timings.

    ``jitter`` > 0 (image models): each training batch goes through a random affine map of that strength;
    validation images do not.
    """
    device = pick_device(config.device)
    # bf16 autocast on CUDA: the matmuls run on tensor cores, the losses stay float32 (autocast's own rule for
    # log-softmax and reductions), and bf16's range needs no gradient scaler. CPU training stays float32.
    amp = device.type == "cuda" and config.mixed_precision
    torch.manual_seed(config.seed)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    train_idx, val_idx = split_indices(y_index, config.val_fraction, config.seed)
    xt = torch.from_numpy(x[train_idx]).to(device)
    yt = torch.from_numpy(y_onehot[train_idx]).to(device)
    xv = torch.from_numpy(x[val_idx]).to(device)
    yv = torch.from_numpy(y_onehot[val_idx]).to(device)
    model.to(device)
    recon = ReconstructionLoss(segments).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = xt.shape[0]
    bs = config.resolved_batch_size(n)
    steps = max(1, n // bs)  # drop the ragged last batch: it would add noise and a recompile on GPU
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=epochs * steps, pct_start=0.15)
    warm_epochs = max(1, math.ceil(config.kl_warmup * epochs))
    weights = None
    if config.class_balance > 0:  # rarer classes drawn more often, in proportion count ** -class_balance
        counts = np.bincount(y_index[train_idx])
        weights = torch.from_numpy(counts[y_index[train_idx]].astype(np.float64) ** -config.class_balance).to(device)
    shape = getattr(model, "shape", None) if jitter > 0 else None
    best = (math.inf, -1, None)
    history: list[dict] = []
    stopped = "epochs"
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc="training", unit="epoch", disable=not progress, leave=True, dynamic_ncols=True)
    for epoch in bar:
        model.train()
        w = kl_weight(epoch, epochs, config.beta, config.kl_warmup)
        if weights is None:
            perm = torch.randperm(n, generator=gen, device=device)
        else:
            perm = torch.multinomial(weights, n, replacement=True, generator=gen)
        sum_r = sum_k = 0.0
        for s in range(steps):
            idx = perm[s * bs:(s + 1) * bs]
            xb, yb = xt[idx], yt[idx]
            if shape is not None:
                xb = random_affine(xb, shape, gen, jitter)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                params, mu, logvar = model(xb, yb, gen)
            r = recon(params.float(), xb).mean()
            k = kl_divergence(mu.float(), logvar.float()).mean()
            loss = r + w * k
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            r_val, k_val = r.item(), k.item()
            _check_finite(r_val + w * k_val, f"epoch {epoch + 1}, step {s + 1}", config)
            sum_r += r_val
            sum_k += k_val
        vr, vk = _evaluate(model, recon, xv, yv, bs)
        val = vr + config.beta * vk
        _check_finite(val, f"epoch {epoch + 1} (validation)", config)
        row = {"epoch": epoch + 1, "recon": sum_r / steps, "kl": sum_k / steps, "val_recon": vr, "val_kl": vk, "val": val}
        history.append(row)
        bar.set_postfix(recon=f"{row['recon']:.3f}", kl=f"{row['kl']:.2f}", val=f"{val:.3f}")
        if epoch + 1 >= warm_epochs and val < best[0]:  # compare only at the full KL weight
            best = (val, epoch, copy.deepcopy(model.state_dict()))
        elapsed = time.perf_counter() - start
        if best[1] >= 0 and epoch - best[1] >= config.patience:
            stopped = "early_stopping"
            break
        if config.time_budget_s is not None and elapsed * (epoch + 2) / (epoch + 1) > config.time_budget_s:
            stopped = "time_budget"
            break
    bar.close()
    wall = time.perf_counter() - start
    if best[2] is not None:
        model.load_state_dict(best[2])
    best_row = history[best[1]] if best[1] >= 0 else history[-1]
    model.eval()
    return TrainResult(
        epochs_run=len(history), best_epoch=best_row["epoch"], train_loss=best_row["recon"] + config.beta * best_row["kl"],
        val_loss=best_row["val"], val_recon=best_row["val_recon"], val_kl=best_row["val_kl"], wall_s=wall,
        rows_per_s=len(history) * steps * bs / wall, stopped=stopped, history=history,
        device=device.type, mixed_precision=amp,
    )
