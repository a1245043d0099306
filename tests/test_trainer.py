import itertools
import math

import numpy as np
import pytest
import torch
from shardfactory import class_layers

from stexture.training.models import small_resnet
from stexture.training.trainer import (
    TrainConfig,
    _warmup_cosine,
    balanced_class_weights,
    evaluate,
    fit,
    load_init_weights,
    predict,
)

NUM_CLASSES = 4


# one OpenMP thread per process: see the fixture in conftest.py
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def separable_batches(per_class: int, batch_size: int, seed: int, size: int = 32):
    """Batches (x, one-hot y, info) of the hand-made classes: flat colour + stripes."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for cls in range(NUM_CLASSES):
        for _ in range(per_class):
            images.append(class_layers(cls, size, rng)[0])
            labels.append(cls)
    order = rng.permutation(len(labels))
    x = torch.from_numpy(np.stack(images)[order]).permute(0, 3, 1, 2).float() / 255.0
    x = (x - 0.5) / 0.25
    labels = torch.tensor(labels)[order]
    y = torch.nn.functional.one_hot(labels, NUM_CLASSES).float()
    info = {"structure_cls": labels, "texture_cls": labels,
            "is_conflict": torch.zeros_like(labels, dtype=torch.bool)}
    return [(x[i:i + batch_size], y[i:i + batch_size],
             {k: v[i:i + batch_size] for k, v in info.items()})
            for i in range(0, len(labels), batch_size)]


@pytest.fixture(scope="module")
def data():
    return separable_batches(12, 16, seed=0), separable_batches(6, 16, seed=1)


def test_trainer_reaches_high_accuracy_on_separable_data(data, tmp_path):
    train, val = data
    torch.manual_seed(0)
    model = small_resnet(NUM_CLASSES)
    messages = []
    result = fit(model, train, val, TrainConfig(epochs=6, lr=3e-3, patience=None),
                 checkpoint_path=tmp_path / "best.pt", log=messages.append)
    assert result.status == "completed"
    assert result.best_val_acc > 0.95
    assert evaluate(model, {"clean": val})["clean_acc"] == pytest.approx(result.best_val_acc)
    assert [h["epoch"] for h in result.history] == list(range(1, 7))
    assert len(messages) == 6 and "val_acc" in messages[0]
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    assert saved["epoch"] == result.best_epoch
    assert saved["val_acc"] == pytest.approx(result.best_val_acc)


@pytest.mark.parametrize("strict", [False, True])
def test_same_seed_gives_the_same_model(data, strict):
    train = data[0][:2]
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = small_resnet(NUM_CLASSES)
        fit(model, train, None, TrainConfig(epochs=1, seed=3, deterministic_algorithms=strict))
        assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting is back
        weights.append(torch.nn.utils.parameters_to_vector(model.parameters()))
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)


def test_nan_loss_stops_the_run_with_the_reason(data):
    x, y, _ = data[0][0]
    poisoned = [(x, y), (torch.full_like(x, math.nan), y), (x, y)]
    model = small_resnet(NUM_CLASSES)
    result = fit(model, poisoned, data[1], TrainConfig(epochs=3))
    assert result.status == "diverged"
    assert "nan" in result.stop_reason and "epoch 1" in result.stop_reason
    assert result.epochs_run == 0 and result.best_epoch is None


def test_early_stopping_keeps_the_best_epoch(data):
    train, _ = data
    # validation labels that no model can learn: accuracy stops improving quickly
    rng = np.random.default_rng(5)
    val = [(x, torch.eye(NUM_CLASSES)[rng.integers(0, NUM_CLASSES, len(x))], info)
           for x, _, info in train[:2]]
    torch.manual_seed(0)
    model = small_resnet(NUM_CLASSES)
    result = fit(model, train[:2], val, TrainConfig(epochs=30, patience=2))
    assert result.status == "early_stopped"
    assert result.epochs_run == result.best_epoch + 2
    best = max(h["val_acc"] for h in result.history)
    assert result.best_val_acc == best
    # the model left behind holds the best epoch's weights
    assert evaluate(model, {"clean": val})["clean_acc"] == pytest.approx(best)


def test_learning_rate_warms_up_then_decays_to_zero():
    factor = _warmup_cosine(total_steps=100, warmup_steps=10)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0, abs=1e-12)
    values = [factor(t) for t in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_sgd_with_label_smoothing_and_class_weights_trains(data):
    train = data[0][:2]
    model = small_resnet(NUM_CLASSES)
    config = TrainConfig(epochs=2, optimizer="sgd", lr=0.05, label_smoothing=0.1)
    result = fit(model, train, None, config, class_weights=balanced_class_weights([1, 2, 3, 4]))
    assert result.status == "completed" and result.best_epoch == 2
    assert result.history[-1]["lr"] < result.history[0]["lr"]


def test_balanced_class_weights_equalise_class_totals():
    weights = balanced_class_weights([10, 30, 60])
    torch.testing.assert_close(weights * torch.tensor([10.0, 30.0, 60.0]),
                               torch.full((3,), 100 / 3))
    with pytest.raises(ValueError, match="positive"):
        balanced_class_weights([3, 0])


def test_init_weights_round_trip_and_missing_head(tmp_path):
    source = small_resnet(NUM_CLASSES)
    state = source.state_dict()
    torch.save({"model": state}, tmp_path / "ckpt.pt")
    target = small_resnet(NUM_CLASSES)
    assert load_init_weights(target, tmp_path / "ckpt.pt") == []
    torch.testing.assert_close(target.state_dict(), state)
    headless = {k: v for k, v in state.items() if not k.startswith("fc.")}
    torch.save(headless, tmp_path / "headless.pt")
    assert load_init_weights(small_resnet(9), tmp_path / "headless.pt") == ["fc.bias", "fc.weight"]


def test_init_weights_shape_mismatch_names_the_tensor(tmp_path):
    torch.save(small_resnet(3).state_dict(), tmp_path / "three.pt")
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \(3, 128\)"):
        load_init_weights(small_resnet(5), tmp_path / "three.pt")
    torch.save({"not.a.layer": torch.zeros(1)}, tmp_path / "alien.pt")
    with pytest.raises(ValueError, match="not in the model: not.a.layer"):
        load_init_weights(small_resnet(5), tmp_path / "alien.pt")
    with pytest.raises(FileNotFoundError):
        load_init_weights(small_resnet(5), tmp_path / "missing.pt")


def test_ensemble_prediction_is_the_mean_of_probabilities(data):
    val = data[1][:1]
    torch.manual_seed(1)
    a, b = small_resnet(NUM_CLASSES), small_resnet(NUM_CLASSES)
    for m in (a, b):  # give the zero-initialised heads something to say
        torch.nn.init.normal_(m.fc.weight)
    both = predict([a, b], val)["probs"]
    mean = (predict(a, val)["probs"] + predict(b, val)["probs"]) / 2
    np.testing.assert_allclose(both, mean, rtol=1e-5, atol=1e-6)


def test_evaluate_reports_conflict_metrics(data):
    x, y, _ = data[1][0]
    s = torch.arange(len(x)) % NUM_CLASSES
    t = (s + 1) % NUM_CLASSES
    conflict = [(x, y, {"structure_cls": s, "texture_cls": t,
                        "is_conflict": torch.ones(len(x), dtype=torch.bool)})]
    metrics = evaluate(small_resnet(NUM_CLASSES), {"clean": data[1], "conflict": conflict})
    assert set(metrics) >= {"clean_acc", "per_class_acc", "conflict_structure_acc",
                            "conflict_texture_acc", "shape_bias", "conflict_n"}
    assert metrics["conflict_n"] == len(x)
    assert len(metrics["per_class_acc"]) == NUM_CLASSES


@pytest.mark.parametrize(("field", "value", "message"), [
    ("epochs", 0, "epochs"), ("lr", 0.0, "lr"), ("optimizer", "adam", "unknown optimizer"),
    ("label_smoothing", 1.0, "label_smoothing"), ("patience", 0, "patience"),
    ("warmup_fraction", 1.0, "warmup_fraction"),
])
def test_bad_training_settings_are_value_errors(data, field, value, message):
    config = TrainConfig(**{field: value})
    with pytest.raises(ValueError, match=message):
        fit(small_resnet(NUM_CLASSES), data[0][:1], None, config)


def test_a_loader_without_length_or_batches_is_a_value_error():
    with pytest.raises(ValueError, match="len"):
        fit(small_resnet(NUM_CLASSES), iter([]), None, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="no batches"):
        fit(small_resnet(NUM_CLASSES), [], None, TrainConfig(epochs=1))
