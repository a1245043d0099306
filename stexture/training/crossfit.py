"""Cross-fitting folds: which models may label (or teach) which sample.

A soft label made by a model that trained on the same sample is what that model memorised,
not what it predicts: on the training split it is close to the one-hot label, while on new
images it is not. Cross-fitting (as in cross-validation) avoids that: the samples are split
into ``folds`` parts, a model is trained per fold on every training sample *outside* it, and
each sample is labelled by the models of its own fold, which never saw it.

The assignment is written once here so that everything that cross-fits (``stexture label``,
a sweep's teachers) agrees on it. It depends only on the keys and their classes, never on
the shard layout or a random generator:

- within each stratum (a class, or a split and class: what the caller groups by), the keys
  are ordered by the SHA-1 digest of ``"{salt}{key}"`` (a
  stable pseudo-random order; the salt gives an independent assignment);
- the ``i``-th key of a stratum in that order goes to fold ``i mod folds``.

So every fold holds ``floor`` or ``ceil`` of ``n / folds`` samples of each stratum, and
adding samples moves only the samples that sort after them in their stratum.
Samples of every split get a fold; only the training split's are trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping

__all__ = ["DEFAULT_FOLDS", "FOLD_RULE", "assign_folds", "check_folds", "training_keys"]

DEFAULT_FOLDS = 2
#: How :func:`assign_folds` places a key, in words (recorded with the labels it made).
FOLD_RULE = ("per (split, class), keys ordered by sha1(salt + key) hex digest; the i-th goes "
             "to fold i mod folds")


def check_folds(folds: int) -> int:
    """``folds`` if it is an integer >= 2 (one fold would label samples with models that
    trained on none); ``ValueError`` otherwise."""
    if isinstance(folds, bool) or int(folds) != folds or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    return int(folds)


def _order(key: str, salt: str) -> str:
    return hashlib.sha1(f"{salt}{key}".encode()).hexdigest()


def assign_folds(strata: Mapping[str, Hashable], folds: int = DEFAULT_FOLDS, *,
                 salt: str = "") -> dict[str, int]:
    """The fold (``0 .. folds-1``) of every key of ``strata`` (key -> its stratum).

    Parameters
    ----------
    strata : mapping of str to a hashable
        Every sample's key and stratum: ``(split, class)`` from the rows of ``index.csv``
        (what ``stexture label`` uses), or just the class.
    folds : int
        The number of folds, >= 2.
    salt : str
        Prefixed to each key before hashing: another salt, another (equally balanced)
        assignment.

    Returns
    -------
    dict of str to int
        key -> fold, stratified (see the module docstring for the rule).
    """
    folds = check_folds(folds)
    by_stratum: dict[Hashable, list[str]] = {}
    for key, stratum in strata.items():
        by_stratum.setdefault(stratum, []).append(key)
    assignment = {}
    for keys in by_stratum.values():
        for i, key in enumerate(sorted(keys, key=lambda k: _order(k, salt))):
            assignment[key] = i % folds
    return assignment


def training_keys(assignment: Mapping[str, int], fold: int, train_keys: Iterable[str]
                  ) -> list[str]:
    """The keys of ``train_keys`` a model of ``fold`` trains on: those outside ``fold``.

    ``ValueError`` for a fold the assignment does not have, a training key it does not
    place, or a fold that would leave its model no training sample.
    """
    folds = set(assignment.values())
    if fold not in folds:
        raise ValueError(f"fold {fold} is not one of the assignment's folds {sorted(folds)}")
    keys = list(train_keys)
    unplaced = [key for key in keys if key not in assignment]
    if unplaced:
        raise ValueError(f"{len(unplaced)} training key(s) have no fold (e.g. {unplaced[0]!r})")
    kept = [key for key in keys if assignment[key] != fold]
    if not kept:
        raise ValueError(f"every training sample is in fold {fold}: its model would train on "
                         "nothing (too few samples for the number of folds?)")
    return kept
