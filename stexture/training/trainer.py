"""The built-in trainer: soft-target cross-entropy, AdamW (or SGD) with warm-up and cosine
decay, early stopping on clean validation accuracy, best-checkpoint saving.

The loss is the cross-entropy against probability targets,

    L = -1/B * sum_i sum_c w_c * y'_ic * log softmax(z_i)_c,   y' = (1 - eps) * y + eps / C,

with ``y`` the loader's soft label ``k * onehot(s) + (1 - k) * onehot(t)``, ``eps`` the label
smoothing and ``w`` optional class weights (``torch.nn.functional.cross_entropy`` with
probability targets computes exactly this). For ``y`` that weights two classes this equals
Li et al.'s (ICLR 2021) ``k * CE(s) + (1 - k) * CE(t)``. With ``temperature != 1`` or
``hard_weight > 0`` (a student of teachers' targets) it is Hinton et al.'s distillation loss
instead (:func:`stexture.training.losses.distillation_loss`).

The learning rate rises linearly from ``lr / warmup_steps`` to ``lr`` over the first
``warmup_fraction`` of all steps and then follows half a cosine down to 0 (Loshchilov &
Hutter, "SGDR", ICLR 2017, without restarts); it is stepped once per batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.deterministic
from torch import nn

from .._device import DEVICES, CudaUnavailableError
from .aux_bn import has_aux_bn, route
from .losses import check_hard_weight, check_temperature, distillation_loss
from .metrics import accuracy, cue_conflict_metrics, per_class_accuracy

__all__ = [
    "OPTIMIZERS",
    "TrainConfig",
    "TrainResult",
    "balanced_class_weights",
    "evaluate",
    "fit",
    "load_init_weights",
    "predict",
    "resolve_torch_device",
    "seed_everything",
]

OPTIMIZERS = ("adamw", "sgd")
Log = Callable[[str], None]


def resolve_torch_device(device: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` (the GPU when torch sees one) as a torch device."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise CudaUnavailableError(
            "device='cuda' was requested but torch sees no CUDA GPU (torch "
            f"{torch.__version__}). Use device='cpu' or device='auto'."
        )
    return torch.device("cuda")


def seed_everything(seed: int) -> None:
    """Seed torch's CPU and CUDA generators (model initialisation, dropout, ...)."""
    torch.manual_seed(seed)


@contextmanager
def _deterministic_algorithms():
    # process-wide switches: restore them so a library call leaves the caller's settings alone
    previous = torch.are_deterministic_algorithms_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    # filling every new tensor with NaN only helps to find reads of uninitialised memory, a
    # debugging aid that costs a pass over each activation
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill


@dataclass
class TrainConfig:
    """Settings of :func:`fit`; ``patience=None`` turns early stopping off."""

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    momentum: float = 0.9
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.0
    patience: int | None = 3
    seed: int = 0
    # torch.use_deterministic_algorithms during CPU training. The built-in models give the
    # same weights for the same seed without it (tested); it cost 17% of the training
    # throughput here (benchmarks/bench_trainer.py), so it is for models that need it.
    deterministic_algorithms: bool = False
    # distillation (Hinton et al., stexture.training.losses): targets softened at
    # ``temperature`` are compared with softmax(logits / temperature), the term scaled by
    # temperature^2; ``hard_weight`` adds that share of the cross-entropy with the true
    # classes, which batches carry as (x, y, info) with info["label"] (TeacherTargets does)
    temperature: float = 1.0
    hard_weight: float = 0.0

    @property
    def distils(self) -> bool:
        """Whether the loss is the distillation loss (not plain soft-target cross-entropy)."""
        return self.temperature != 1.0 or self.hard_weight > 0.0

    def validate(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}"
            )
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 (or None for no early stopping), "
                             f"got {self.patience}")
        check_temperature(self.temperature)
        check_hard_weight(self.hard_weight)
        if self.distils and self.label_smoothing > 0:
            raise ValueError("label_smoothing applies to the plain cross-entropy, not to the "
                             "distillation loss (temperature != 1 or hard_weight > 0)")


@dataclass
class TrainResult:
    """What :func:`fit` did. ``status`` is ``"completed"``, ``"early_stopped"`` or
    ``"diverged"`` (``stop_reason`` says why); ``history`` has one dict per epoch with
    ``epoch``, ``train_loss``, ``val_acc`` (None without a validation loader), ``lr``
    (at the end of the epoch) and ``seconds``."""

    status: str
    stop_reason: str
    best_epoch: int | None
    best_val_acc: float | None
    epochs_run: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_init_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load weights for transfer learning from ``path`` (a ``state_dict`` or a checkpoint of
    :func:`fit` with a ``"model"`` entry), with ``torch.load(weights_only=True)``.

    Tensors the file lacks keep their fresh initialisation; their names are returned. A tensor
    the model lacks, or one of another shape, is a ``ValueError`` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state_dict")
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise ValueError(f"{path}: tensor(s) not in the model: {', '.join(unexpected[:5])}"
                         + (" ..." if len(unexpected) > 5 else ""))
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ValueError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)} in the file but "
                f"{tuple(own[name].shape)} in the model; remove it from the file to keep it "
                "freshly initialised (e.g. a classifier head for another number of classes)"
            )
    model.load_state_dict(state, strict=False)
    return sorted(set(own) - set(state))


def balanced_class_weights(counts: Sequence[int]) -> torch.Tensor:
    """Class weights ``w_c = n / (C * n_c)`` that give every class the same total weight."""
    counts_array = np.asarray(counts, dtype=np.float64)
    if counts_array.ndim != 1 or (counts_array <= 0).any():
        raise ValueError(f"class counts must be positive, got {list(counts)}")
    return torch.tensor(counts_array.sum() / (len(counts_array) * counts_array),
                        dtype=torch.float32)


def _warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # no weight decay on batch-norm parameters and biases (1-D tensors)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return x.to(device, non_blocking=True, memory_format=torch.channels_last)
    return x.to(device)


def _loader_length(loader: Iterable) -> int:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError("the training loader must have a len() (batches per epoch) to "
                         "schedule the learning rate") from None


def _train_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    weight: torch.Tensor | None,
    config: TrainConfig,
    device: torch.device,
) -> tuple[float, int]:
    """One pass over ``loader``: (sum of the batch losses, steps). Stops early, with a
    non-finite sum, once a loss is NaN or infinite."""
    on_cuda = device.type == "cuda"
    # a finiteness check reads the loss back from the GPU; do it every few steps there
    check_every = 25 if on_cuda else 1
    model.train()
    dual = has_aux_bn(model)
    loss_sum = torch.zeros((), device=device)
    steps = 0
    for batch in loader:
        x, y = _to_device(batch[0], device), batch[1].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_cuda), \
                _routing(model, batch) if dual else nullcontext():
            logits = model(x)
        loss = _batch_loss(logits.float(), y, batch, weight, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach()
        steps += 1
        if steps % check_every == 0 and not torch.isfinite(loss_sum):
            break
    return float(loss_sum), steps


def _batch_loss(logits: torch.Tensor, y: torch.Tensor, batch: Sequence[Any],
                weight: torch.Tensor | None, config: TrainConfig) -> torch.Tensor:
    """The soft-target cross-entropy of the module docstring, or with ``config.distils``
    the distillation loss, its hard term on the batch's ``info["label"]``."""
    if not config.distils:
        return F.cross_entropy(logits, y, weight=weight, label_smoothing=config.label_smoothing)
    labels = None
    if config.hard_weight > 0:
        if len(batch) < 3 or "label" not in batch[2]:
            raise ValueError("hard_weight > 0 needs batches (x, y, info) with the true classes "
                             "in info['label'] (TeacherTargets yields them)")
        labels = batch[2]["label"].to(logits.device)
    return distillation_loss(logits, y, labels, config.temperature, config.hard_weight)


def _routing(model: nn.Module, batch: Sequence[Any]):
    """The :func:`~stexture.training.aux_bn.route` context of a batch: its composites
    (``info["is_conflict"]``) through the auxiliary BatchNorm."""
    if len(batch) < 3 or "is_conflict" not in batch[2]:
        raise ValueError("a model with auxiliary BatchNorm (aux_bn) needs batches (x, y, info) "
                         "with info['is_conflict']: build the loader with with_info=True")
    return route(model, batch[2]["is_conflict"])


def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    config: TrainConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    class_weights: torch.Tensor | None = None,
    checkpoint_path: str | Path | None = None,
    log: Log | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``train_loader`` batches ``(x, y[, info])`` (``y``
    probability targets ``B x C``) and leave it holding the weights of its best epoch.

    After every epoch the clean top-1 accuracy on ``val_loader`` is measured (targets are
    ``argmax(y)``); the best epoch's weights are kept (and written to ``checkpoint_path`` as
    ``{"model", "epoch", "val_acc"}``) and training stops after ``config.patience`` epochs
    without a gain. Without ``val_loader`` the last epoch counts as best. A non-finite loss
    stops training with ``status="diverged"``. A model converted by
    :func:`~stexture.training.aux_bn.aux_bn` trains its composites (``info["is_conflict"]``,
    so the loader needs ``with_info=True``) through the auxiliary BatchNorm and clean images
    through the main one; validation and :func:`predict` use the main one. On CUDA the
    forward pass runs under bf16 autocast with channels_last tensors. On the CPU a seed
    fixes the result (same threads);
    ``config.deterministic_algorithms`` also switches on torch's deterministic algorithms
    for models whose layers need it.
    """
    config = config or TrainConfig()
    config.validate()
    if class_weights is not None and config.distils:
        raise ValueError("class_weights apply to the plain cross-entropy, not to the "
                         "distillation loss (temperature != 1 or hard_weight > 0)")
    device = resolve_torch_device(device) if isinstance(device, str) else device
    log = log or (lambda message: None)
    steps_per_epoch = _loader_length(train_loader)
    if steps_per_epoch < 1:
        raise ValueError("the training loader yields no batches")
    total_steps = config.epochs * steps_per_epoch
    on_cuda = device.type == "cuda"
    seed_everything(config.seed)
    model.to(device)
    if on_cuda:
        model.to(memory_format=torch.channels_last)
    weight = None if class_weights is None else class_weights.to(device, torch.float32)
    optimizer = _make_optimizer(model, config)
    warmup_steps = max(1, round(config.warmup_fraction * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_cosine(total_steps, warmup_steps))
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int | None = None
    best_acc: float | None = None
    epochs_without_gain = 0
    status, reason = "completed", f"ran all {config.epochs} epochs"
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    strict = config.deterministic_algorithms and not on_cuda
    with _deterministic_algorithms() if strict else nullcontext():
        for epoch in range(config.epochs):
            epoch_start = time.perf_counter()
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            loss_sum, steps = _train_epoch(model, train_loader, optimizer, scheduler, weight,
                                           config, device)
            if not math.isfinite(loss_sum):
                status = "diverged"
                reason = (f"training loss became {loss_sum} in epoch {epoch + 1} "
                          f"(by step {steps})")
                log(f"epoch {epoch + 1}/{config.epochs}: stopped, {reason}")
                break
            val_acc = None
            if val_loader is not None:
                val_acc = accuracy(*_argmax_and_target(predict(model, val_loader, device)))
            record = {"epoch": epoch + 1, "train_loss": loss_sum / max(steps, 1),
                      "val_acc": val_acc, "lr": optimizer.param_groups[0]["lr"],
                      "seconds": time.perf_counter() - epoch_start}
            history.append(record)
            val_text = "" if val_acc is None else f" val_acc {val_acc:.4f}"
            log(f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.4f}"
                f"{val_text} lr {record['lr']:.2e} ({record['seconds']:.1f} s)")
            improved = val_acc is None or best_acc is None or val_acc > best_acc
            if improved:
                best_acc, best_epoch, epochs_without_gain = val_acc, epoch + 1, 0
                best_state = {k: v.detach().to("cpu", copy=True)
                              for k, v in model.state_dict().items()}
                if checkpoint_path is not None:
                    _save_checkpoint(checkpoint_path, best_state, best_epoch, best_acc)
            else:
                epochs_without_gain += 1
                if config.patience is not None and epochs_without_gain >= config.patience:
                    status = "early_stopped"
                    reason = (f"no gain in clean validation accuracy for {config.patience} "
                              f"epoch(s) after epoch {best_epoch}")
                    log(f"early stop: {reason}")
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(status, reason, best_epoch, best_acc, len(history),
                       time.perf_counter() - start, history)


def _save_checkpoint(path: str | Path, state: dict[str, torch.Tensor], epoch: int,
                     val_acc: float | None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save({"model": state, "epoch": epoch, "val_acc": val_acc}, partial)
    partial.replace(path)  # atomic: a killed run never leaves a half-written checkpoint


@torch.no_grad()
def predict(
    models: nn.Module | Sequence[nn.Module], loader: Iterable, device: str | torch.device = "cpu"
) -> dict[str, np.ndarray]:
    """Class probabilities of ``models`` on every batch of ``loader`` (the mean of their
    softmax outputs when several models are given: an ensemble).

    Returns ``probs`` (N x C), ``target`` (``argmax(y)``) and, when the loader yields an
    info dict, ``structure_cls``, ``texture_cls`` and ``is_conflict``.
    """
    device = resolve_torch_device(device) if isinstance(device, str) else device
    models = [models] if isinstance(models, nn.Module) else list(models)
    if not models:
        raise ValueError("predict needs at least one model")
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    parts: dict[str, list[np.ndarray]] = {}
    try:
        for batch in loader:
            x = _to_device(batch[0], device)
            with torch.autocast(device.type, dtype=torch.bfloat16,
                                enabled=device.type == "cuda"):
                probs = sum(torch.softmax(m(x).float(), dim=1) for m in models) / len(models)
            parts.setdefault("probs", []).append(probs.cpu().numpy())
            parts.setdefault("target", []).append(batch[1].argmax(dim=1).numpy())
            if len(batch) > 2:
                for key in ("structure_cls", "texture_cls", "is_conflict"):
                    if key in batch[2]:
                        parts.setdefault(key, []).append(np.asarray(batch[2][key]))
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)
    if not parts:
        raise ValueError("the evaluation loader yields no batches")
    return {key: np.concatenate(values) for key, values in parts.items()}


def _argmax_and_target(prediction: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return prediction["probs"].argmax(axis=1), prediction["target"]


def evaluate(
    models: nn.Module | Sequence[nn.Module],
    val_loaders: Mapping[str, Iterable],
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """The sweep's metrics of a model (or the probability-averaging ensemble of several).

    ``val_loaders["clean"]`` gives ``clean_acc``, ``per_class_acc`` (a list, NaN for a
    class without samples) and ``clean_correct`` (1 or 0 per image, in the loader's order:
    for paired comparisons and bootstraps over images); ``val_loaders["conflict"]``
    (batches with an info dict) gives
    ``conflict_structure_acc``, ``conflict_texture_acc``, ``shape_bias`` and ``conflict_n``
    (see :mod:`stexture.training.metrics`).
    """
    metrics: dict[str, Any] = {}
    if "clean" in val_loaders:
        prediction = predict(models, val_loaders["clean"], device)
        pred, target = _argmax_and_target(prediction)
        metrics["clean_acc"] = accuracy(pred, target)
        metrics["per_class_acc"] = per_class_accuracy(pred, target, prediction["probs"].shape[1])
        metrics["clean_correct"] = (pred == target).astype(int).tolist()
    if "conflict" in val_loaders:
        prediction = predict(models, val_loaders["conflict"], device)
        if "structure_cls" not in prediction:
            raise ValueError("the conflict loader must yield (x, y, info) with structure_cls "
                             "and texture_cls")
        keep = prediction.get("is_conflict", np.ones(len(prediction["target"]))).astype(bool)
        metrics.update(cue_conflict_metrics(prediction["probs"].argmax(axis=1)[keep],
                                            prediction["structure_cls"][keep],
                                            prediction["texture_cls"][keep]))
    return metrics
