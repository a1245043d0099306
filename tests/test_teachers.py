"""The two-teacher student: targets, aligned views, and the sweep's ``student="teachers"``."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from shardfactory import make_shard_dir

from stexture import cli, make_eval_loader, make_loader
from stexture.loader.batch import Normalize
from stexture.shards.format import read_manifest
from stexture.training import build_model, predict
from stexture.training.config import SweepConfig
from stexture.training.runner import sweep
from stexture.training.runs import Run, SweepState
from stexture.training.teachers import TeacherTargets, teacher_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shard_dir(tmp_path_factory.mktemp("shards") / "s", per_class=6,
                          val_per_class=2, size=32, shard_size=4)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k, tau", [(0.0, 1.0), (0.3, 2.0), (0.8, 0.5), (1.0, 4.0)])
def test_targets_are_the_blend_of_the_tempered_softmaxes(k, tau):
    rng = np.random.default_rng(1)
    s, t = rng.normal(0, 3, (5, 4)), rng.normal(0, 3, (5, 4))
    y = teacher_targets(torch.tensor(s), torch.tensor(t), k, tau).numpy()
    expected = k * softmax(s / tau) + (1 - k) * softmax(t / tau)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("k, tau, message", [(1.2, 1.0, "k must lie"), (float("nan"), 1.0,
                                             "k must lie"), (0.5, 0.0, "temperature"),
                                             (0.5, float("inf"), "temperature")])
def test_bad_k_or_temperature_is_a_clear_error(k, tau, message):
    with pytest.raises(ValueError, match=message):
        teacher_targets(torch.zeros(2, 3), torch.zeros(2, 3), k, tau)


def test_logits_of_other_shapes_are_an_error():
    with pytest.raises(ValueError, match="B x C"):
        teacher_targets(torch.zeros(2, 3), torch.zeros(2, 4), 0.5)


def views(shards, workers=0, seed=3, **options):
    common = dict(k=1.0, p_conflict=0.0, batch_size=4, image_size=24, seed=seed,
                  with_info=True, num_workers=workers, **options)
    return [make_loader(shards, view=view, **common) for view in ("image", "structure",
                                                                   "texture")]


def teachers():
    torch.manual_seed(0)
    return build_model("small", 3).eval(), build_model("small", 3).eval()


def test_the_three_views_show_the_same_crops(shards):
    """texture = clip(image - structure + 128) pixel by pixel: only true when the three
    loaders cropped the same sample in the same place."""
    undo = Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).undo
    loaders = views(shards, samples_per_epoch=24)
    for loader in loaders:
        loader.set_epoch(1)
    for (x, _, info), (xs, _, info_s), (xt, _, _) in zip(*loaders, strict=True):
        assert info["key"] == info_s["key"]
        image, structure, texture = (undo(v) * 255 for v in (x, xs, xt))
        np.testing.assert_allclose(texture, (image - structure + 128).clamp(0, 255), atol=0.5)


@pytest.mark.parametrize("workers", [0, 2])
def test_targets_come_from_the_teachers_on_the_layers_of_the_same_crop(shards, workers):
    structure_teacher, texture_teacher = teachers()
    targets = TeacherTargets(*views(shards, workers), structure_teacher, texture_teacher,
                             k=0.7, temperature=2.0)
    targets.set_epoch(2)
    got = list(targets)
    # the independent computation: the teachers on separately built, 0-worker layer loaders
    reference = views(shards, 0)
    for loader in reference:
        loader.set_epoch(2)
    assert len(got) == len(targets) == len(reference[0])
    with torch.no_grad():
        for (x, y, info), (xi, yi, info_i), (xs, _, _), (xt, _, _) in zip(got, *reference,
                                                                         strict=True):
            expected = 0.7 * torch.softmax(structure_teacher(xs) / 2, 1) \
                + 0.3 * torch.softmax(texture_teacher(xt) / 2, 1)
            torch.testing.assert_close(x, xi, rtol=0, atol=0)
            torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)
            # the true classes, for the distillation loss's hard term
            assert info["key"] == info_i["key"]
            assert info["label"].tolist() == yi.argmax(1).tolist()


def test_loaders_that_draw_other_samples_are_refused(shards):
    image, structure, _ = views(shards, seed=3)
    other_seed = views(shards, seed=4)[2]
    with pytest.raises(RuntimeError, match="different samples"):
        list(TeacherTargets(image, structure, other_seed, *teachers(), k=0.5))
    longer = views(shards, samples_per_epoch=40)[2]
    with pytest.raises(ValueError, match="differ in length"):
        TeacherTargets(image, structure, longer, *teachers(), k=0.5)

def test_distillation_loss_against_a_hand_computation():
    """Hinton et al.: (1 - w) T^2 CE(p, softmax(z / T)) + w CE(onehot, softmax(z)), by hand
    for z = (1, 0), p = (0.7, 0.3), T = 2, w = 0.25, class 0."""
    from math import exp, log

    from stexture.training.losses import distillation_loss

    z, p, tau, w = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.7, 0.3]]), 2.0, 0.25
    q = [exp(0.5) / (exp(0.5) + 1), 1 / (exp(0.5) + 1)]  # softmax(z / 2)
    soft = -(0.7 * log(q[0]) + 0.3 * log(q[1]))
    hard = -log(exp(1) / (exp(1) + 1))
    expected = (1 - w) * 4 * soft + w * hard
    got = distillation_loss(z, p, torch.tensor([0]), temperature=tau, hard_weight=w)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # the T^2 factor keeps the soft term's gradient near the same size whatever T
    grads = []
    for tau in (4.0, 8.0):
        logits = torch.tensor([[2.0, -1.0, 0.5]], requires_grad=True)
        target = torch.softmax(torch.tensor([[1.0, 0.0, -1.0]]) / tau, 1)
        distillation_loss(logits, target, temperature=tau).backward()
        grads.append(logits.grad.norm().item())
    assert grads[1] == pytest.approx(grads[0], rel=0.15)
    with pytest.raises(ValueError, match="needs the true labels"):
        distillation_loss(z, p, hard_weight=0.5)
    with pytest.raises(ValueError, match="hard_weight"):
        distillation_loss(z, p, torch.tensor([0]), hard_weight=1.5)


def test_fit_learns_a_teachers_batch_by_hintons_loss(shards):
    """With TrainConfig(temperature=T, hard_weight=w), fit's loss on the teachers' batch is
    (1 - w) T^2 CE(y, softmax(z / T)) + w CE(class, softmax(z)), computed here with numpy from
    the student's logits; at T = 1, w = 0 it is the plain soft-target cross-entropy; a hard
    term without the classes in the batch is a clear error."""
    import copy

    from stexture.training import TrainConfig, fit

    one_batch = views(shards, samples_per_epoch=4)
    batch = next(iter(TeacherTargets(*one_batch, *teachers(), k=0.6, temperature=2.0)))
    x, y, info = batch
    torch.manual_seed(1)
    student = build_model("small", 3)
    with torch.no_grad():  # the logits fit's only step sees: train mode, initial weights
        z = copy.deepcopy(student).train()(x).double().numpy()
    p, labels = y.double().numpy(), info["label"].numpy()
    log_q = np.log(softmax(z / 2.0))
    log_hard = np.log(softmax(z))[np.arange(len(z)), labels]
    expected = {(2.0, 0.3): 0.7 * 4 * -(p * log_q).sum(1).mean() + 0.3 * -log_hard.mean(),
                (1.0, 0.0): -(p * np.log(softmax(z))).sum(1).mean()}
    for (tau, w), want in expected.items():
        config = TrainConfig(epochs=1, patience=None, temperature=tau, hard_weight=w)
        result = fit(copy.deepcopy(student), [batch], None, config)
        assert result.history[0]["train_loss"] == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match=r"info\['label'\]"):
        fit(copy.deepcopy(student), [(x, y)], None,
            TrainConfig(epochs=1, patience=None, hard_weight=0.3))
    for bad, message in (({"temperature": 0.0}, "temperature"),
                         ({"hard_weight": 1.5}, "hard_weight"),
                         ({"temperature": 2.0, "label_smoothing": 0.1}, "label_smoothing")):
        with pytest.raises(ValueError, match=message):
            fit(copy.deepcopy(student), [batch], None, TrainConfig(epochs=1, **bad))
    with pytest.raises(ValueError, match="class_weights"):
        fit(copy.deepcopy(student), [batch], None, TrainConfig(epochs=1, hard_weight=0.3),
            class_weights=torch.ones(3))


class _Constant(torch.nn.Module):
    """A 'teacher' whose logits say which one it is: a large logit on class ``c``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c = c
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        out = torch.zeros(len(x), 3)
        out[:, self.c] = 50.0
        return out


def test_cross_fitted_targets_come_from_the_teachers_of_the_samples_fold(shards):
    from stexture.training.crossfit import assign_folds, training_keys

    manifest = read_manifest(shards)
    rows = [line.split(",") for line in (shards / "index.csv").read_text().splitlines()[1:]]
    header = (shards / "index.csv").read_text().splitlines()[0].split(",")
    key_at, split_at, cls_at = (header.index(n) for n in ("key", "split", "cls"))
    strata = {r[key_at]: (r[split_at], r[cls_at]) for r in rows}
    folds = assign_folds(strata, 2)
    train = [r[key_at] for r in rows if r[split_at] == "train"]
    # each fold's teachers train on the other fold only
    for fold in (0, 1):
        assert not set(training_keys(folds, fold, train)) & {k for k in train
                                                            if folds[k] == fold}
    # fold 0's pair says class 0 (structure) and 1 (texture), fold 1's class 2 and 1
    targets = TeacherTargets(*views(shards), [_Constant(0), _Constant(2)],
                             [_Constant(1), _Constant(1)], k=0.8, folds=folds)
    seen = set()
    labels = views(shards)[0]
    for (_, y, _), (_, _, info) in zip(targets, labels, strict=True):
        for key, row in zip(info["key"], y, strict=True):
            c = 0 if folds[key] == 0 else 2
            expected = torch.zeros(3)
            expected[c] += 0.8
            expected[1] += 0.2
            torch.testing.assert_close(row, expected, rtol=0, atol=1e-6)
            seen.add(folds[key])
    assert seen == {0, 1} and manifest.num_classes == 3
    with pytest.raises(KeyError, match="no fold"):
        list(TeacherTargets(*views(shards), [_Constant(0)] * 2, [_Constant(1)] * 2, k=0.5,
                            folds={train[0]: 0, train[1]: 1}))
    with pytest.raises(ValueError, match="need folds"):
        TeacherTargets(*views(shards), [_Constant(0)] * 2, [_Constant(1)] * 2, k=0.5)


def test_sweep_trains_layer_teachers_then_students_from_them(shards, tmp_path):
    out = tmp_path / "runs"
    code = cli.main(["sweep", str(shards), "--k", "0,1", "--seeds", "1", "--epochs", "1",
                     "--out", str(out), "--device", "cpu", "--image-size", "24",
                     "--batch-size", "4", "--student", "teachers", "--temperature", "2"])
    assert code == 0
    runs = out / "runs"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["student"] == "teachers"
    assert summary["settings"]["temperature"] == 2.0
    for kind in ("structure", "texture"):
        result = json.loads((runs / f"{kind}-seed0" / "result.json").read_text())
        # judged on its own layer of the validation images: recompute it independently
        model = build_model("small", 3)
        model.load_state_dict(torch.load(runs / f"{kind}-seed0" / "best.pt",
                                         weights_only=True)["model"])
        loader = make_eval_loader(shards, kind="clean", split="val", batch_size=4,
                                  image_size=24, view=kind)
        prediction = predict(model, loader)
        accuracy = float((prediction["probs"].argmax(1) == prediction["target"]).mean())
        assert result["metrics"]["clean_acc"] == pytest.approx(accuracy)
        assert "shape_bias" not in result["metrics"]
        assert summary[f"{kind}_layer"]["clean_acc"]["n"] == 1
    for name in ("k0-seed0", "k1-seed0"):
        result = json.loads((runs / name / "result.json").read_text())
        assert result["status"] == "completed" and 0 <= result["metrics"]["clean_acc"] <= 1
    assert summary["ensemble_k0_k1"]["clean_acc"]["n"] == 1
    assert "structure layer (teacher)" in (out / "report.md").read_text()


def test_a_sweep_student_learns_the_blend_of_its_seeds_saved_teachers(shards, tmp_path):
    """The sweep's k run hands its k, the temperature and the checkpoints of its seed's
    cross-fitted layer runs to the targets: its first batch equals the blend computed here,
    each sample from the checkpoints of its own fold's teachers, on separately built layer
    loaders; each fold's teachers trained only on the keys outside that fold."""
    config = SweepConfig(k_values=(0.3,), seeds=1, epochs=1, image_size=24, batch_size=4,
                         student="teachers", temperature=2.0, baseline=False, ensemble=False)
    out = tmp_path / "runs"
    sweep(shards, config, out=out, device="cpu", log=None)
    state = SweepState(read_manifest(shards), None, config, out, "cpu", 0, None,
                       lambda line: None)
    # the students learn by distillation at the sweep's temperature; their teachers do not
    trainers = {kind: config.train_config(0, student=state.is_student(Run(kind, k, 0)))
                for kind, k in (("k", 0.3), ("structure-fold0", None))}
    assert (trainers["k"].temperature, trainers["structure-fold0"].temperature) == (2.0, 1.0)
    assert "hard_weight" not in config.to_settings(shards)  # recorded only when set
    assert replace(config, hard_weight=0.3).to_settings(shards)["hard_weight"] == 0.3
    folds = state.teacher_folds()
    assert sorted(folds) == sorted(k for c in state.shards.keys_by_class("train").values()
                                   for k in c) and set(folds.values()) == {0, 1}
    for fold in (0, 1):
        trained_on = set(state._fold_keys(Run(f"structure-fold{fold}", None, 0)))
        assert trained_on == {key for key, f in folds.items() if f != fold}
    targets = state.train_loader(Run("k", 0.3, 0))
    targets.set_epoch(0)
    x, y, _ = next(iter(targets))
    loaded = {}
    for kind in ("structure", "texture"):
        for fold in (0, 1):
            model = loaded[kind, fold] = build_model("small", 3).eval()
            model.load_state_dict(torch.load(out / "runs" / f"{kind}-fold{fold}-seed0" /
                                             "best.pt", weights_only=True)["model"])
    layers = {view: next(iter(make_loader(shards, k=1.0, p_conflict=0.0, batch_size=4,
                                          image_size=24, seed=0, view=view, with_info=True)))
              for view in ("image", "structure", "texture")}
    with torch.no_grad():
        for i, key in enumerate(layers["image"][2]["key"]):
            f = folds[key]
            expected = 0.3 * torch.softmax(loaded["structure", f](
                layers["structure"][0][i:i + 1]) / 2, 1) + 0.7 * torch.softmax(
                loaded["texture", f](layers["texture"][0][i:i + 1]) / 2, 1)
            torch.testing.assert_close(y[i:i + 1], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x, layers["image"][0], rtol=0, atol=0)


def test_a_student_without_its_teacher_fails_with_the_teachers_name(shards, tmp_path):
    config = SweepConfig(k_values=[1.0], seeds=1, epochs=1, image_size=24, batch_size=4,
                         student="teachers", baseline=False, ensemble=False)
    sweep(shards, config, out=tmp_path / "runs", device="cpu", log=None)
    (tmp_path / "runs" / "runs" / "texture-fold1-seed0" / "best.pt").unlink()
    with pytest.raises(FileNotFoundError, match="texture teacher of fold 1, seed 0"):
        sweep(shards, replace(config, k_values=[0.5]), out=tmp_path / "runs", device="cpu",
              log=None)


@pytest.mark.parametrize("options, message", [
    ({"student": "oracle"}, "unknown student"),
    ({"student": "teachers", "temperature": 0.0}, "temperature"),
    ({"student": "teachers", "aux_bn": True}, "no aux_bn"),
    ({"hard_weight": 0.3}, "with student='teachers'"),
    ({"student": "teachers", "hard_weight": -0.1}, "hard_weight"),
    ({"student": "teachers", "temperature": 4.0, "balance_classes": True}, "balance_classes"),
    ({"student": "teachers", "hard_weight": 0.3, "label_smoothing": 0.1}, "label_smoothing"),
])
def test_bad_student_settings_fail_before_training(shards, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        sweep(shards, SweepConfig(k_values=[0.5], **options), out=tmp_path / "x", log=None)
    assert not (tmp_path / "x").exists()
