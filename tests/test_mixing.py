"""CueConflictMix: soft targets, composition, conflict fraction, pairing, argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stexture.mixing import (
    CueConflictMix,
    MixPlan,
    compose,
    compose_normalized,
    soft_targets,
)


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


def test_soft_targets_and_a_clipped_composite():
    y = soft_targets(torch.tensor([0, 1]), torch.tensor([2, 1]), 0.6, 3)
    torch.testing.assert_close(y, torch.tensor([[0.6, 0.0, 0.4], [0.0, 1.0, 0.0]]))
    s = torch.tensor([0.9, 0.1, 0.5]).view(1, 3, 1, 1).repeat(2, 1, 1, 1)
    t = torch.tensor([[0.3, -0.4, 0.2], [0.0, 0.0, 0.0]]).view(2, 3, 1, 1)
    plan = MixPlan(torch.tensor([1]), torch.tensor([0]), torch.tensor([True]))
    x = compose(s, t, plan)  # s_1 + t_0, clipped
    torch.testing.assert_close(x.flatten(), torch.tensor([1.0, 0.0, 0.7]))


def reference_composite(images, structures, plan, alpha, texture_scale):
    """Row by row, pixel by pixel, in float64: the composite's definition."""
    images, structures = images.astype(np.float64), structures.astype(np.float64)
    rows = []
    for r in range(len(plan)):
        a, b = int(plan.structure_index[r]), int(plan.texture_index[r])
        if not plan.is_conflict[r]:
            rows.append(images[a])
            continue
        t_b = images[b] - structures[b]
        if plan.tiles is not None:
            t, moved = plan.tile_size, t_b.copy()
            nx = images.shape[2] // t
            for j, src in enumerate(plan.tiles[r].tolist()):
                ty, tx, sy, sx = j // nx, j % nx, src // nx, src % nx
                moved[ty * t:(ty + 1) * t, tx * t:(tx + 1) * t] = \
                    t_b[sy * t:(sy + 1) * t, sx * t:(sx + 1) * t]
            t_b = moved
        t_a = images[a] - structures[a]
        rows.append(np.clip(structures[a] + (1 - alpha) * t_a + alpha * texture_scale * t_b,
                            0, 255))
    return np.stack(rows)


@pytest.mark.parametrize("mode", ["replace", "add"])
@pytest.mark.parametrize("layout", ["aligned", "shuffled"])
@pytest.mark.parametrize(("alpha", "texture_scale"), [(1.0, 1.0), (0.5, 1.0), (0.7, 0.5)])
def test_uint8_kernel_and_float_path_both_equal_the_definition(mode, layout, alpha,
                                                              texture_scale):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (6, 9, 8, 3), dtype=np.uint8)  # 9 x 8: a strip past the tiles
    structures = rng.integers(0, 256, (6, 9, 8, 3), dtype=np.uint8)
    mix = CueConflictMix(3, 0.5, p_conflict=0.5, mode=mode, alpha=alpha,
                         texture_scale=texture_scale, texture_layout=layout, tile_size=4,
                         generator=torch.Generator().manual_seed(1))
    plan = mix.draw(torch.tensor([0, 1, 2, 0, 1, 2]), (9, 8))
    assert len(plan) == (9 if mode == "add" else 6)
    expected = reference_composite(images, structures, plan, alpha, texture_scale)
    scale, shift = np.array([0.5, 2.0, 1.0], np.float32), np.array([0.1, -1.0, 0.0], np.float32)
    fast = compose_normalized(images, structures, plan, alpha=alpha,
                              texture_scale=texture_scale, scale=scale, shift=shift)
    wanted = expected.transpose(0, 3, 1, 2) * scale[:, None, None] + shift[:, None, None]
    np.testing.assert_allclose(fast, wanted, rtol=1e-6, atol=1e-4)
    out = np.full(fast.shape, np.nan, np.float32)  # a worker's shared batch, say
    assert compose_normalized(images, structures, plan, alpha=alpha, texture_scale=texture_scale,
                              scale=scale, shift=shift, out=out) is out
    assert np.array_equal(out, fast)
    with pytest.raises(ValueError, match="out must be C-contiguous float32"):
        compose_normalized(images, structures, plan, scale=scale, shift=shift, out=out[1:])
    chw = [torch.from_numpy(a).permute(0, 3, 1, 2).double() / 255 for a in (images, structures)]
    slow = compose(chw[1], chw[0] - chw[1], plan, alpha=alpha, texture_scale=texture_scale)
    np.testing.assert_allclose(slow.numpy() * 255, expected.transpose(0, 3, 1, 2), atol=1e-9)
    if alpha == texture_scale == 1.0:  # the exact integer composite clip(s_a + i_b - s_b)
        ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
        exact = compose_normalized(images, structures, plan, scale=ones, shift=zeros)
        assert np.array_equal(exact, expected.transpose(0, 3, 1, 2))


def test_add_mode_keeps_every_original_and_appends_the_composites():
    labels = [0, 1, 2, 3, 0, 1, 2, 3]
    mix, structure, texture, x, y, info = mixed(labels, p_conflict=0.5, mode="add")
    assert x.shape[0] == y.shape[0] == 12
    assert torch.equal(info["structure_index"][:8], torch.arange(8))
    assert not info["is_conflict"][:8].any() and info["is_conflict"][8:].all()
    torch.testing.assert_close(x[:8], (structure + texture).clamp(0, 1))
    assert torch.equal(y[:8], torch.nn.functional.one_hot(torch.tensor(labels), 4).float())
    chosen = info["structure_index"][8:]
    assert len(set(chosen.tolist())) == 4 and (info["texture_index"][8:] != chosen).all()
    assert mix.conflict_pairs == 4


def test_shuffled_layout_permutes_whole_tiles_of_the_donor_texture():
    mix = CueConflictMix(2, 0.5, p_conflict=1.0, texture_layout="shuffled", tile_size=2,
                         generator=torch.Generator().manual_seed(0))
    plan = mix.draw(torch.tensor([0, 1]), (4, 4))
    assert plan.tiles.shape == (2, 4)
    assert all(sorted(row.tolist()) == [0, 1, 2, 3] for row in plan.tiles)
    with pytest.raises(ValueError, match="fewer than 2 tiles"):
        mix.draw(torch.tensor([0, 1]), (3, 3))


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
        ({"mode": "concat"}, "mode"),
        ({"alpha": 1.5}, "alpha"),
        ({"texture_layout": "tiled"}, "texture_layout"),
        ({"tile_size": 0}, "tile_size"),
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
