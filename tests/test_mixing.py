"""CueConflictMix: soft targets, composition, conflict fraction, pairing, argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from stexture.mixing import CueConflictMix, compose, compose_uint8, soft_targets


def make_batch(labels: list[int], size: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    structure = torch.rand(n, 3, size, size, generator=g)
    texture = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    return structure, texture, torch.tensor(labels, dtype=torch.int64)


def mixed(labels, seed=0, **options):
    options = {"num_classes": 4, "k": 0.7, **options}
    mix = CueConflictMix(**options, generator=torch.Generator().manual_seed(seed))
    structure, texture, y_labels = make_batch(labels, seed=seed)
    x, y, info = mix(structure, texture, y_labels, return_info=True)
    return mix, structure, texture, x, y, info


@pytest.mark.parametrize("k", [0.0, 0.3, 0.8, 1.0])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_rows_sum_to_one(k, label_smoothing):
    _, _, _, _, y, _ = mixed([0, 1, 2, 3, 0, 1, 2, 3], k=k, label_smoothing=label_smoothing)
    assert y.dtype == torch.float32 and y.shape == (8, 4)
    torch.testing.assert_close(y.sum(dim=1), torch.ones(8), rtol=0, atol=1e-6)


@pytest.mark.parametrize("k", [0.0, 0.25, 0.7, 1.0])
def test_conflict_rows_hold_k_and_one_minus_k(k):
    labels = [0, 1, 2, 3, 0, 1, 2, 3, 1, 2]
    _, _, _, _, y, info = mixed(labels, k=k, p_conflict=1.0)
    for i in range(len(labels)):
        a, b = int(info["structure_cls"][i]), int(info["texture_cls"][i])
        assert a != b  # different-class pairing with several classes in the batch
        expected = torch.zeros(4)
        expected[a] = torch.tensor(k, dtype=torch.float32)
        expected[b] = torch.tensor(1 - k, dtype=torch.float32)
        assert torch.equal(y[i], expected)


def test_same_class_pairs_give_one_hot_rows_and_are_counted():
    mix, _, _, _, y, info = mixed([2] * 6, k=0.3, p_conflict=0.5)
    assert int(info["is_conflict"].sum()) == 3
    assert torch.equal(y, torch.nn.functional.one_hot(torch.full((6,), 2), 4).float())
    assert mix.same_class_pairs == 3 and mix.conflict_pairs == 3
    # the donor is still another sample, not the sample itself
    conflict = info["is_conflict"]
    assert (info["texture_index"][conflict] != torch.arange(6)[conflict]).all()


def test_originals_are_one_hot_and_their_own_image():
    _, structure, texture, x, y, info = mixed([0, 1, 2, 3, 0, 1, 2, 3], p_conflict=0.5)
    original = ~info["is_conflict"]
    assert torch.equal(info["texture_index"][original], torch.arange(8)[original])
    assert torch.equal(y[original],
                       torch.nn.functional.one_hot(info["structure_cls"][original], 4).float())
    torch.testing.assert_close(x[original], (structure + texture).clamp(0, 1)[original])


@pytest.mark.parametrize("texture_scale", [1.0, 0.5])
def test_x_is_structure_a_plus_texture_b_clipped(texture_scale):
    _, structure, texture, x, _, info = mixed([0, 1, 2, 3] * 3, p_conflict=0.5,
                                              texture_scale=texture_scale)
    for i in range(12):
        j = int(info["texture_index"][i])
        scale = texture_scale if info["is_conflict"][i] else 1.0
        expected = torch.clamp(structure[i] + scale * texture[j], 0.0, 1.0)
        torch.testing.assert_close(x[i], expected, rtol=0, atol=1e-6)
        assert int(info["texture_cls"][i]) == int(info["structure_cls"][j])
    assert x.min() >= 0 and x.max() <= 1


@pytest.mark.parametrize(("p", "batch"), [(0.0, 8), (0.5, 8), (0.25, 12), (1.0, 5), (0.3, 10)])
def test_conflict_count_is_p_times_batch_when_whole(p, batch):
    for seed in range(5):
        mix = CueConflictMix(4, 0.5, p_conflict=p, generator=torch.Generator().manual_seed(seed))
        s, t, labels = make_batch([i % 4 for i in range(batch)], seed=seed)
        _, _, info = mix(s, t, labels, return_info=True)
        assert int(info["is_conflict"].sum()) == round(p * batch)


def test_conflict_fraction_is_p_on_average_when_p_times_batch_is_fractional():
    mix = CueConflictMix(4, 0.5, p_conflict=0.3, generator=torch.Generator().manual_seed(1))
    s, t, labels = make_batch([0, 1, 2, 3, 0, 1, 2], seed=0)  # 0.3 * 7 = 2.1
    counts = [int(mix(s, t, labels, return_info=True)[2]["is_conflict"].sum())
              for _ in range(2000)]
    assert set(counts) == {2, 3}
    # mean of 2000 draws: sd of one draw is 0.3, so the mean is 2.1 +- 0.007 (1 sd)
    assert abs(sum(counts) / len(counts) - 2.1) < 0.03
    assert mix.conflict_pairs == sum(counts)


def test_different_class_pairing_never_pairs_one_class_when_it_can():
    for seed in range(30):
        mix, _, _, _, _, info = mixed([0, 0, 0, 0, 0, 1, 1, 0], seed=seed, p_conflict=1.0)
        assert (info["structure_cls"] != info["texture_cls"]).all()
        assert mix.same_class_pairs == 0


@pytest.mark.parametrize("pairing", ["different-class", "random"])
def test_donors_are_cue_conflict_samples_when_one_qualifies(pairing):
    for seed in range(20):
        _, _, _, _, _, info = mixed([0, 1, 2, 3] * 4, seed=seed, p_conflict=0.5,
                                    pairing=pairing)
        conflict = info["is_conflict"]
        assert conflict[info["texture_index"][conflict]].all()
    # one cue-conflict sample alone has no other: its donor comes from the whole batch
    _, _, _, _, _, info = mixed([0, 1, 2, 3], seed=0, p_conflict=0.25, pairing=pairing)
    i = int(torch.nonzero(info["is_conflict"])[0])
    assert int(info["texture_index"][i]) != i


def test_donors_are_uniform_over_the_other_class_samples_of_the_batch():
    hits = torch.zeros(6)
    for seed in range(600):
        _, _, _, _, _, info = mixed([0, 1, 1, 2, 2, 2], seed=seed, p_conflict=0.5)
        if info["is_conflict"][0]:
            hits[info["texture_index"][0]] += 1
    share = hits[1:] / hits.sum()
    # about 300 draws: sd of a share is 0.023, the bound is 3 sd (the seeds are fixed)
    assert hits[0] == 0 and (abs(share - 0.2) < 0.07).all(), share


def test_random_pairing_allows_same_class_donors_and_counts_them():
    same = total = 0
    for seed in range(30):
        mix, _, _, _, _, info = mixed([0, 0, 0, 1, 1, 1], seed=seed, p_conflict=1.0,
                                      pairing="random")
        assert (info["texture_index"] != torch.arange(6)).all()
        assert mix.same_class_pairs == int((info["structure_cls"] == info["texture_cls"]).sum())
        same, total = same + mix.same_class_pairs, total + mix.conflict_pairs
    # a donor of the same class has probability 2/5
    assert 0.25 < same / total < 0.55


def test_label_smoothing_matches_timm_convention():
    ls = 0.1
    _, _, _, _, y, info = mixed([0, 1, 2, 3], k=1.0, p_conflict=0.0, label_smoothing=ls)
    expected = torch.full((4, 4), ls / 4)
    expected[torch.arange(4), info["structure_cls"]] = 1 - ls + ls / 4
    torch.testing.assert_close(y, expected)


def test_same_generator_seed_gives_the_same_batch():
    a = mixed([0, 1, 2, 3, 1, 2], seed=3)
    b = mixed([0, 1, 2, 3, 1, 2], seed=3)
    assert torch.equal(a[3], b[3]) and torch.equal(a[4], b[4])


def test_soft_targets_and_compose_helpers():
    y = soft_targets(torch.tensor([0, 1]), torch.tensor([2, 1]), 0.6, 3)
    torch.testing.assert_close(y, torch.tensor([[0.6, 0.0, 0.4], [0.0, 1.0, 0.0]]))
    x = compose(torch.tensor([0.9, 0.1, 0.5]), torch.tensor([0.3, -0.4, 0.2]))
    torch.testing.assert_close(x, torch.tensor([1.0, 0.0, 0.7]))


def test_uint8_composition_equals_the_float_one():
    g = torch.Generator().manual_seed(5)
    s, i_b, s_b = (torch.randint(0, 256, (2, 3, 5, 5), generator=g, dtype=torch.uint8)
                   for _ in range(3))
    x = compose_uint8(s, i_b, s_b)
    assert x.dtype == torch.uint8
    reference = compose(s.float() / 255, (i_b.float() - s_b.float()) / 255)
    torch.testing.assert_close(x.float() / 255, reference, rtol=0, atol=1e-6)
    assert torch.equal(compose_uint8(s_b, i_b, s_b), i_b)  # own texture: the image


def test_without_info_returns_two_tensors():
    mix = CueConflictMix(4, 0.5)
    out = mix(*make_batch([0, 1, 2, 3]))
    assert len(out) == 2


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"k": -0.1}, "k"),
        ({"k": 1.5}, "k"),
        ({"k": math.nan}, "k"),
        ({"p_conflict": 1.2}, "p_conflict"),
        ({"p_conflict": -0.5}, "p_conflict"),
        ({"pairing": "nearest"}, "pairing"),
        ({"num_classes": 1}, "num_classes"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"texture_scale": -1.0}, "texture_scale"),
    ],
)
def test_bad_arguments_are_value_errors_naming_them(options, name):
    with pytest.raises(ValueError, match=name):
        CueConflictMix(**{"num_classes": 4, "k": 0.5, **options})


def test_bad_batches_are_value_errors():
    mix = CueConflictMix(4, 0.5)
    s, t, labels = make_batch([0, 1, 2, 3])
    with pytest.raises(ValueError, match="labels must lie"):
        mix(s, t, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="texture shape"):
        mix(s, t[:, :, :2], labels)
    with pytest.raises(ValueError, match="int64"):
        mix(s, t, labels.int())
    with pytest.raises(ValueError, match="float"):
        mix((s * 255).byte(), t, labels)
