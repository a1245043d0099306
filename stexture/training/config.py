"""The sweep's settings in one frozen, validated object: :class:`SweepConfig`.

A :class:`SweepConfig` holds what decides a sweep's results: which runs it has (the *run grid*:
the k grid, the seeds, the baseline, compute-matched and ensemble arms) and how each is
trained (model, optimiser, loader and mixing settings, the training subset, the student).
Where and how fast it runs (device, engine, worker processes, logging) are arguments of
:func:`stexture.training.runner.sweep` instead, so a sweep can be resumed on another machine.

Every field carries its command-line help in ``field(metadata=...)``: ``stexture sweep``
generates its options from them (:mod:`stexture.commands.sweep`), so a new setting is one
field here. The metadata keys are ``help``, and where the option differs from the plain
``--field-name`` of the field's type: ``flag``, ``type`` (what argparse parses),
``choices`` and ``from_cli`` (turns the parsed value into the field's value).

``sweep.json`` records the training settings (:meth:`SweepConfig.to_settings`, every field
but the run grid's, with the shard folder and the kind of trainer); a sweep restarted into the
same folder must have the same ones. The run grid is left out so that a finished sweep can be
extended with more seeds or k values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..loader.crops import check_min_scale
from ..loader.dataloader import LABEL_KINDS
from ..mixing import MixConfig
from .losses import check_hard_weight, check_temperature
from .models import MODELS
from .trainer import OPTIMIZERS, TrainConfig

__all__ = ["DEFAULT_K_VALUES", "RUN_GRID", "STUDENTS", "SweepConfig", "check_train_fraction",
           "parse_k_values"]

STUDENTS = ("cue-conflict", "teachers")
DEFAULT_K_VALUES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# the fields that say which runs a sweep has, not how one is trained: not in sweep.json
RUN_GRID = ("k_values", "seeds", "matched_baseline", "baseline", "ensemble")
# fields added after sweep.json existed, with their defaults: recorded only when they differ,
# and read as the default when absent, so that a sweep folder of an earlier version resumes
_RECORDED_WHEN_SET = {"labels": "hard", "label_set": None, "hard_weight": 0.0}
_TEACHERS_TRAIN_BUILTIN = ("student='teachers' trains its students and their teachers with "
                           "the built-in trainer on clean images: no aux_bn, no train_fn")


def parse_k_values(k_values: Iterable[float] | str) -> list[float]:
    """Check a k grid (or parse ``"0,0.5,1"``): non-empty, numbers in [0, 1], no repeats."""
    if isinstance(k_values, str):
        parts = [p.strip() for p in k_values.split(",") if p.strip()]
        try:
            k_values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"k values {k_values!r} are not comma-separated numbers") from None
    values = [float(k) for k in k_values]
    if not values:
        raise ValueError("the k grid is empty; give at least one k in [0, 1]")
    outside = [k for k in values if not 0.0 <= k <= 1.0]  # NaN fails this test too
    if outside:
        raise ValueError(f"k values must lie in [0, 1]; got {outside}")
    if len({round(k, 6) for k in values}) != len(values):
        raise ValueError(f"the k grid repeats a value: {values}")
    return values


def check_train_fraction(fraction: float) -> None:
    """A ``ValueError`` unless ``fraction`` lies in (0, 1]."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train fraction must lie in (0, 1], got {fraction}")


def _seeds(seeds: int | Sequence[int]) -> int | tuple[int, ...]:
    """A seed count (checked) or the distinct seeds as a tuple."""
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1 (the number of seeds per k), got {seeds}")
        return seeds
    seed_list = tuple(int(s) for s in seeds)
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ValueError(f"seeds must be a count >= 1 or distinct integers, got {seeds!r}")
    return seed_list


def _zero_is_none(value: int) -> int | None:
    return value or None


def _setting(default: Any, help: str, **cli: Any) -> Any:
    """A field with its command-line help (and option details, see the module docstring)."""
    return field(default=default, metadata={"help": help, **cli})


def _mix_setting(name: str) -> Any:
    """The field of :class:`~stexture.mixing.MixConfig` ``name``: its default and its help,
    defined once there."""
    setting = MixConfig.__dataclass_fields__[name]
    return field(default=setting.default, metadata=setting.metadata)


@dataclass(frozen=True)
class SweepConfig:
    """Every setting that decides a sweep's runs and results, checked when it is made.

    Build it with keywords (``SweepConfig(k_values=[0, 1], epochs=20, mode="add")``) and
    change it with :func:`dataclasses.replace`; bad values raise ``ValueError`` naming the
    setting. ``k_values`` may be given as ``"0,0.5,1"``; it is kept as a tuple of floats.

    Attributes
    ----------
    k_values : the grid of label weights k in [0, 1].
    seeds : how many seeds per k (0 .. seeds-1), or the seeds themselves.
    train_fraction : the share of each class of the training split to train on, a
        deterministic stratified subset (:func:`stexture.training.stratified_subset`).
    epochs, lr, weight_decay, optimizer, warmup_fraction, label_smoothing, patience : the
        built-in trainer's settings, as in :class:`stexture.training.TrainConfig`
        (``patience=None``: no early stopping).
    model, image_size, batch_size : the built-in model (:data:`stexture.training.MODELS`),
        the side of the square crops and the images per batch.
    p_conflict, pairing : the share of each batch that becomes composites and how their
        texture donors are drawn (:class:`stexture.mixing.CueConflictMix`).
    min_scale : the smallest share of an image's area the training crop covers (the
        random-resized crop of :func:`stexture.make_loader`; 1 crops only to change the
        aspect ratio). Raise it when objects fill only part of the frame, so that crops
        keep them.
    mode, alpha, texture_layout, tile_size : how composites are made and batched, as in
        :class:`stexture.mixing.CueConflictMix`: ``mode="add"`` keeps every original and
        appends ``round(p_conflict * batch_size)`` composites (Li et al.), ``alpha`` is the
        share of the donor's texture, ``texture_layout="shuffled"`` rearranges the donor's
        texture in ``tile_size`` tiles.
    aux_bn : the built-in trainer's models get auxiliary BatchNorm layers
        (:func:`stexture.training.aux_bn`) for the composites; evaluation uses the main
        ones. With a ``train_fn``, convert and route in it (see
        :mod:`stexture.training.aux_bn`).
    student : ``"cue-conflict"`` (the k runs train on cue-conflict batches) or ``"teachers"``
        (each seed also trains a structure-layer and a texture-layer model, and the k runs
        train students on the original images against the two models' blended predictions;
        see :mod:`stexture.training.runs`). The teachers' student takes no composites:
        ``p_conflict``, ``mode``, ``alpha``, ``texture_layout``, ``tile_size`` and
        ``aux_bn`` do not apply.
    temperature : the teachers' softmax temperature ``tau`` (> 0) for ``student="teachers"``.
    labels : ``"hard"`` (the k runs' labels come from the classes, or from the teachers with
        ``student="teachers"``) or ``"soft"``: the k runs train on the original images with
        ``y = k * s + (1 - k) * t`` from the stored label maps of ``stexture label``, pooled
        over each crop (``make_loader(labels="soft")``): the teachers' student without
        teachers at training time. Like the teachers' student it takes no composites
        (``p_conflict``, ``mode``, ``alpha``, ``texture_layout``, ``tile_size``, ``aux_bn``
        do not apply) and needs the built-in trainer or a ``train_fn`` alike.
    label_set : the label set of ``labels="soft"`` (``SHARDS/labels-NAME``); None: the
        shards' only one.
    match_steps : with ``train_fraction < 1``, give every run as many optimiser steps per
        epoch as the full training split (see :mod:`stexture.training.runs`); False: one
        pass over the subset per epoch.
    balance_classes : weight the loss by ``n / (C * n_c)`` per class.
    init_weights : a ``state_dict`` file every run of the built-in trainer starts from.
    matched_baseline : also train ``vanilla-matched`` per seed: vanilla shown as many
        images as a ``mode="add"`` run (epochs ``1 + round(p_conflict * B) / B`` times
        longer in samples), so that a gain of the add-mode runs is not just more compute.
    baseline : also train the vanilla baseline per seed (original images, one-hot labels).
    ensemble : with 0 and 1 in the grid and the built-in trainer, also judge the ensemble of
        the k=0 and k=1 models per seed (their averaged probabilities).
    """

    k_values: tuple[float, ...] = _setting(
        DEFAULT_K_VALUES, "comma-separated grid of k in [0, 1]", flag="--k", type=str)
    seeds: int | tuple[int, ...] = _setting(3, "seeds per k")
    train_fraction: float = _setting(
        1.0, "stratified share of the training split to train on, in (0, 1]; runs on a share "
        "get as many optimiser steps as on the full split (the share is gone over again) "
        "unless --no-match-steps")
    epochs: int = _setting(10, "most epochs per run")
    model: str = _setting(
        "small", "small: a 3-stage ResNet of 0.3 M parameters for 32-96 px images; resnet18: "
        "the ImageNet ResNet-18 (11 M)", choices=tuple(sorted(MODELS)))
    image_size: int = _setting(64, "side of the square crops")
    batch_size: int = _setting(64, "images per training batch")
    lr: float = _setting(1e-3, "peak learning rate (after warm-up, before cosine decay)")
    weight_decay: float = _setting(
        0.05, "weight decay of the weights (not of biases and batch norms): decoupled with "
        "adamw, an L2 term with sgd")
    optimizer: str = _setting("adamw", "adamw, or sgd with Nesterov momentum 0.9",
                              choices=OPTIMIZERS)
    warmup_fraction: float = _setting(
        0.05, "share of all optimiser steps over which the learning rate rises linearly to "
        "--lr, in [0, 1)")
    label_smoothing: float = _setting(
        0.0, "eps: each target becomes (1 - eps) * y + eps / classes")
    patience: int | None = _setting(
        3, "stop a run after this many epochs without a gain in clean validation accuracy "
        "(0: never)", from_cli=_zero_is_none)
    p_conflict: float = _mix_setting("p_conflict")
    pairing: str = _mix_setting("pairing")
    min_scale: float = _setting(
        0.35, "smallest share of the image area a training crop covers")
    mode: str = _mix_setting("mode")
    alpha: float = _mix_setting("alpha")
    texture_layout: str = _mix_setting("texture_layout")
    tile_size: int = _mix_setting("tile_size")
    aux_bn: bool = _setting(
        False, "composites through auxiliary BatchNorm statistics, evaluation with the main "
        "ones (Li et al.'s MixBN)")
    student: str = _setting(
        "cue-conflict", "cue-conflict: the k runs train on cue-conflict batches; teachers: "
        "each seed also trains a structure-layer and a texture-layer model, and the k runs "
        "distil k * teacher_s + (1 - k) * teacher_t into a model of the original images",
        choices=STUDENTS)
    temperature: float = _setting(
        1.0, "softmax temperature of the teachers (--student teachers); the students "
        "learn as Hinton et al. distil: softmax(z / T) against the targets, times T^2")
    hard_weight: float = _setting(
        0.0, "with --student teachers: the weight w of the students' hard-label term, "
        "(1 - w) T^2 CE(teachers, softmax(z / T)) + w CE(class, softmax(z))")
    labels: str = _setting(
        "hard", "soft: the k runs train on originals against k * s + (1 - k) * t from the "
        "label maps `stexture label` stored beside the shards", choices=LABEL_KINDS)
    label_set: str | None = _setting(
        None, "with --labels soft: the label set's name (default: the shards' only one)",
        type=str)
    match_steps: bool = _setting(
        True, "with --train-fraction < 1: as many optimiser steps per epoch as the full "
        "split; --no-match-steps: one pass over the share per epoch (fewer steps)")
    balance_classes: bool = _setting(False, "weight the loss by n / (C * n_c) per class")
    init_weights: Path | None = _setting(
        None, "state_dict to start from (transfer learning)", type=Path)
    matched_baseline: bool = _setting(
        False, "with --mode add: also train vanilla on as many images as the add-mode runs "
        "see (compute-matched)")
    baseline: bool = _setting(True, "train the vanilla baseline per seed")
    ensemble: bool = _setting(
        True, "judge the ensemble of the k=0 and k=1 models per seed (with 0 and 1 in --k)")

    def __post_init__(self) -> None:
        # normalised so that equal settings compare (and hash) equal
        object.__setattr__(self, "k_values", tuple(parse_k_values(self.k_values)))
        object.__setattr__(self, "seeds", _seeds(self.seeds))
        if self.init_weights is not None:
            object.__setattr__(self, "init_weights", Path(self.init_weights))
        self._check()

    def _check(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; expected one of "
                             f"{', '.join(MODELS)}")
        if self.batch_size < 1 or self.image_size < 8:
            raise ValueError(f"batch_size must be >= 1 and image_size >= 8, got "
                             f"{self.batch_size}, {self.image_size}")
        if self.student not in STUDENTS:
            raise ValueError(f"unknown student {self.student!r}; expected one of "
                             f"{', '.join(STUDENTS)}")
        check_temperature(self.temperature)
        check_hard_weight(self.hard_weight)
        if self.hard_weight > 0 and self.student != "teachers":
            raise ValueError("hard_weight is the teachers' students' hard-label term: use it "
                             "with student='teachers'")
        student = self.train_config(seed=0, student=self.student == "teachers")
        if student.distils and self.balance_classes:
            raise ValueError("balance_classes weights the plain cross-entropy, not the "
                             "students' distillation loss (temperature != 1 or hard_weight > 0)")
        if self.labels not in LABEL_KINDS:
            raise ValueError(f"unknown labels {self.labels!r}; expected one of "
                             f"{', '.join(LABEL_KINDS)}")
        if self.labels == "soft" and self.student == "teachers":
            raise ValueError("labels='soft' is the teachers' student from stored labels: use "
                             "it with student='cue-conflict' (the default), not 'teachers'")
        if self.labels == "soft" and self.aux_bn:
            raise ValueError("labels='soft' trains on original images only: aux_bn does not "
                             "apply")
        if self.student == "teachers" and self.aux_bn:
            raise ValueError(_TEACHERS_TRAIN_BUILTIN)
        if self.matched_baseline and self.mode != "add":
            raise ValueError("matched_baseline needs mode='add' (in replace mode vanilla "
                             "already sees as many images as the cue-conflict runs)")
        student.validate()
        check_train_fraction(self.train_fraction)
        _ = self.mix  # the loader's mixing settings, checked where they are defined
        check_min_scale(self.min_scale)

    def check_train_fn(self, given: bool) -> None:
        """The settings that need the built-in trainer are an error with a ``train_fn``."""
        if not given:
            return
        if self.aux_bn:
            raise ValueError("aux_bn is for the built-in trainer; with a train_fn, call "
                             "stexture.training.aux_bn and route the composites in it")
        if self.student == "teachers":
            raise ValueError(_TEACHERS_TRAIN_BUILTIN)
        if self.init_weights is not None:
            raise ValueError("init_weights is for the built-in trainer; with a train_fn, "
                             "load the weights inside it")

    @property
    def mix(self) -> MixConfig:
        """The mixing settings of the k runs, as the loader takes them (``make_loader(mix=)``);
        the trainer, not the loader, smooths the labels (``label_smoothing``)."""
        return MixConfig(p_conflict=self.p_conflict, pairing=self.pairing, mode=self.mode,
                         alpha=self.alpha, texture_layout=self.texture_layout,
                         tile_size=self.tile_size)

    @property
    def seed_list(self) -> list[int]:
        """The seeds: ``0 .. seeds-1`` for a count, else the seeds given."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def train_config(self, seed: int, student: bool = False) -> TrainConfig:
        """The built-in trainer's settings for a run of ``seed``; ``student``: a k run of
        ``student="teachers"``, which learns by distillation (``temperature``,
        ``hard_weight``)."""
        distil = dict(temperature=self.temperature, hard_weight=self.hard_weight) if student \
            else {}
        return TrainConfig(epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay,
                           optimizer=self.optimizer, warmup_fraction=self.warmup_fraction,
                           label_smoothing=self.label_smoothing, patience=self.patience,
                           seed=seed, **distil)

    def run_grid(self) -> dict[str, Any]:
        """The run-grid fields (:data:`RUN_GRID`) with their values."""
        return {name: getattr(self, name) for name in RUN_GRID}

    def to_settings(self, shards: str | Path, trainer: str = "builtin") -> dict[str, Any]:
        """The ``sweep.json`` record: every field but the run grid's, the shard folder and the
        init weights as absolute paths, and ``trainer`` (``"builtin"`` or ``"train_fn"``).
        ``labels`` and ``label_set`` are recorded only when they are not the defaults, so
        that sweep folders written before them resume."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUN_GRID
                  and _RECORDED_WHEN_SET.get(f.name, ...) != getattr(self, f.name)}
        if self.init_weights is not None:
            values["init_weights"] = str(self.init_weights.resolve())
        return {"shards": str(Path(shards).resolve()),
                "train_fraction": values.pop("train_fraction"), "trainer": trainer, **values}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **run_grid: Any) -> SweepConfig:
        """The config recorded in a ``sweep.json`` (``settings``), with the run-grid fields from
        ``run_grid`` (their defaults where not given). Missing or unknown settings are a
        ``ValueError``."""
        names = [f.name for f in fields(cls) if f.name not in RUN_GRID]
        settings = {**_RECORDED_WHEN_SET, **settings}
        missing = [name for name in names if name not in settings]
        unknown = sorted(set(settings) - set(names) - {"shards", "trainer"})
        if missing or unknown:
            raise ValueError(f"not the settings of a sweep: missing {missing or 'none'}, "
                             f"unknown {unknown or 'none'}")
        return cls(**{name: settings[name] for name in names}, **run_grid)
