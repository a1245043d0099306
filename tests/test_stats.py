import numpy as np
import pytest
from scipy import stats as st

from stexture.training.stats import paired_bootstrap, paired_t, seeds_for_power


def test_paired_t_matches_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    base = rng.normal(0.8, 0.02, 7)
    a, b = base + rng.normal(0.01, 0.005, 7), base
    ours = paired_t(a, b, confidence=0.95)
    ref = st.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert ours["diff"] == pytest.approx(np.mean(a - b))
    assert ours["ci_low"] == pytest.approx(ci.low) and ours["ci_high"] == pytest.approx(ci.high)
    assert ours["p_value"] == pytest.approx(ref.pvalue)
    assert ours["n"] == 7
    # pairing matters: the unpaired interval is far wider here
    welch = st.ttest_ind(a, b).confidence_interval(0.95)
    assert welch.high - welch.low > 2 * (ci.high - ci.low)


def test_paired_t_with_one_pair_has_no_interval_and_bad_input_is_an_error():
    assert paired_t([0.5], [0.4])["ci_low"] is None
    with pytest.raises(ValueError, match="one length"):
        paired_t([0.5, 0.6], [0.4])
    with pytest.raises(ValueError, match="finite"):
        paired_t([0.5, float("nan")], [0.4, 0.3])


def test_seeds_for_power_against_simulated_paired_t_tests():
    diff, sd = 0.01, 0.012
    n = seeds_for_power(diff, sd, power=0.8)
    rng = np.random.default_rng(1)

    def simulated_power(seeds):
        d = rng.normal(diff, sd, (40_000, seeds))
        return np.mean(st.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05)

    assert simulated_power(n) >= 0.79
    assert simulated_power(n - 1) < 0.80
    # close to the normal approximation (which slightly underestimates for small n)
    z = st.norm.ppf(0.975) + st.norm.ppf(0.8)
    assert (z * sd / diff) ** 2 <= n <= (z * sd / diff) ** 2 + 3
    assert seeds_for_power(0.0, 0.01) is None
    assert seeds_for_power(0.01, 0.0) == 2


def test_bootstrap_reduces_to_the_seed_bootstrap_when_images_agree():
    rng = np.random.default_rng(2)
    per_seed_a = rng.normal(0.8, 0.02, 8)
    per_seed_b = per_seed_a - rng.normal(0.01, 0.01, 8)
    # every image of a seed scores the seed's value: resampling images changes nothing
    a = np.repeat(per_seed_a[:, None], 50, axis=1)
    b = np.repeat(per_seed_b[:, None], 50, axis=1)
    ours = paired_bootstrap(a, b, resamples=4000, seed=0)
    ref = st.bootstrap((per_seed_a - per_seed_b,), np.mean, n_resamples=4000,
                       method="percentile", random_state=0).confidence_interval
    assert ours["diff"] == pytest.approx(np.mean(per_seed_a - per_seed_b))
    spread = ref.high - ref.low
    assert ours["ci_low"] == pytest.approx(ref.low, abs=0.1 * spread)
    assert ours["ci_high"] == pytest.approx(ref.high, abs=0.1 * spread)


def test_bootstrap_widens_with_image_noise():
    rng = np.random.default_rng(3)
    a = (rng.random((5, 400)) < 0.8).astype(float)
    b = (rng.random((5, 400)) < 0.8).astype(float)
    ours = paired_bootstrap(a, b, resamples=2000)
    # binomial SE of a difference of two means over 2000 images each: ~0.0126
    se = np.sqrt(2 * 0.8 * 0.2 / 2000)
    width = ours["ci_high"] - ours["ci_low"]
    assert 2 * 1.96 * se * 0.8 < width < 2 * 1.96 * se * 2.0
    with pytest.raises(ValueError, match="seeds x images"):
        paired_bootstrap(a, b[:, :10])


def test_power_at_matches_simulation_and_the_seeds_for_power():
    from stexture.training.stats import power_at

    diff, sd = 0.012, 0.018  # the claim's +1.2 points at the sd of ~1.8
    rng = np.random.default_rng(2)
    for n in (3, 6):
        d = rng.normal(diff, sd, (40_000, n))
        simulated = np.mean(st.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05)
        assert power_at(diff, sd, n) == pytest.approx(simulated, abs=0.01)
    n = seeds_for_power(diff, sd)
    assert power_at(diff, sd, n) >= 0.8 > power_at(diff, sd, n - 1)
    assert power_at(diff, sd, 1) is None
    assert power_at(diff, 0.0, 3) == 1.0


@pytest.mark.parametrize("n", [3, 6, 11])
def test_power_is_a_probability_rising_to_one_for_large_effects(n):
    # effects of 1 to 40 sd reach noncentralities where scipy's nct.cdf gives NaN
    from stexture.training.stats import power_at

    powers = [power_at(effect * 1.21, 1.21, n) for effect in np.linspace(0.0, 40.0, 161)]
    assert all(0.0 <= p <= 1.0 for p in powers)
    assert powers == sorted(powers) and powers[-1] == pytest.approx(1.0)
    assert powers[0] == pytest.approx(0.05, abs=1e-6)  # no effect: the test's level


def test_the_sweep_comparison_powers_the_claims_effect_not_the_observed_one():
    from stexture.training.report import TARGET_EFFECT, compare_to_vanilla
    from stexture.training.stats import power_at

    def results(values):
        return [{"seed": s, "metrics": {"clean_acc": v}} for s, v in enumerate(values)]

    vanilla = [0.70, 0.72, 0.74, 0.71]
    for shift in (0.001, 0.05):  # a tiny and a large observed difference, same sd
        arm = [v + shift + e for v, e in zip(vanilla, (0.01, -0.01, 0.02, -0.02), strict=True)]
        comparison = compare_to_vanilla(results(arm), results(vanilla))
        sd = np.std(np.array(arm) - np.array(vanilla), ddof=1)
        assert comparison["seeds_for_80_power"] == seeds_for_power(TARGET_EFFECT, sd)
        assert comparison["power_at_target"] == pytest.approx(power_at(TARGET_EFFECT, sd, 4))
