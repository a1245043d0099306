import math

import numpy as np
import pytest

from stexture.training.metrics import (
    accuracy,
    cue_conflict_metrics,
    per_class_accuracy,
    shape_bias,
)


def test_shape_bias_on_hand_made_predictions():
    structure = [0, 0, 1, 1, 2, 2, 1]
    texture = [1, 2, 0, 2, 0, 1, 1]  # the last pair's classes coincide: left out
    pred = [0, 2, 1, 2, 1, 0, 1]
    # differing pairs: pred==s at 0, 2; pred==t at 1, 3; neither at 4, 5
    assert shape_bias(pred, structure, texture) == pytest.approx(2 / 4)
    metrics = cue_conflict_metrics(pred, structure, texture)
    assert metrics["conflict_n"] == 6
    assert metrics["conflict_structure_acc"] == pytest.approx(2 / 6)
    assert metrics["conflict_texture_acc"] == pytest.approx(2 / 6)


def test_shape_bias_extremes_and_undefined_case():
    s, t = np.array([0, 1, 2]), np.array([1, 2, 0])
    assert shape_bias(s, s, t) == 1.0
    assert shape_bias(t, s, t) == 0.0
    # no prediction names either class, and same-class pairs only: undefined
    assert math.isnan(shape_bias([2, 0, 1], s, t))
    assert math.isnan(shape_bias([0, 1], [0, 1], [0, 1]))


def test_accuracy_and_per_class_accuracy():
    pred = [0, 1, 1, 2, 0]
    target = [0, 1, 0, 2, 2]
    assert accuracy(pred, target) == pytest.approx(3 / 5)
    per_class = per_class_accuracy(pred, target, num_classes=4)
    assert per_class[:3] == pytest.approx([1 / 2, 1.0, 1 / 2])
    assert math.isnan(per_class[3])


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="differ in length"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="integer class indices"):
        shape_bias([0.5], [0], [1])
    with pytest.raises(ValueError, match="1-D"):
        accuracy([[0]], [[0]])
    with pytest.raises(ValueError, match="outside"):
        per_class_accuracy([0], [3], num_classes=3)
