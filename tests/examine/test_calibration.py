import json
import math

import numpy as np
import pytest

from eelt.examine import Calibration, calibrate, calibrated_trust_levels, calibration_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PREFACTOR, EXPONENT, SIGMA = 2.0, 1.5, 0.1


@pytest.fixture
def power_law():
    """200 deviations (eV/A) log-uniform in [0.005, 1] and errors 2.0 * devi**1.5 * lognormal(0.1)."""
    rng = np.random.default_rng(42)
    devi = 10.0 ** rng.uniform(np.log10(0.005), 0.0, 200)
    err = PREFACTOR * devi**EXPONENT * rng.lognormal(0.0, SIGMA, devi.size)
    return devi, err


def test_fit_recovers_known_power_law(power_law):
    devi, err = power_law
    cal = calibrate(devi, err, target_force_error_eV_per_A=0.1)
    assert cal.n_frames == 200
    assert cal.spearman > 0.9
    assert cal.slope == pytest.approx(EXPONENT, abs=0.1)
    assert cal.intercept == pytest.approx(math.log10(PREFACTOR), abs=0.05)
    # error = 2 d**1.5 = 0.1  =>  d = 0.05**(1/1.5)
    assert cal.crossing_eV_per_A == pytest.approx(0.05 ** (1 / EXPONENT), rel=0.05)
    assert cal.predicted_error(cal.crossing_eV_per_A) == pytest.approx(0.1, rel=1e-9)


@pytest.mark.parametrize("target", [0.02, 0.1, 0.5])
def test_numbers_match_scipy_and_numpy_computed_here(power_law, target):
    devi, err = power_law
    devi = np.concatenate([devi, [0.0, np.nan, 0.2]])
    err = np.concatenate([err, [0.1, 0.1, -1.0]])
    cal = calibrate(devi, err, target)
    assert_same_calibration(cal.to_dict(), independent_calibration(devi, err, target))
    # on the fitted line at the crossing, the error is the target
    assert cal.intercept + cal.slope * math.log10(cal.crossing_eV_per_A) == pytest.approx(
        math.log10(target), abs=1e-12
    )


def test_no_target_no_crossing(power_law):
    cal = calibrate(*power_law)
    assert cal.target_force_error_eV_per_A is None and cal.crossing_eV_per_A is None
    assert cal.slope is not None


def test_anti_correlated_data_has_no_crossing(power_law):
    devi, err = power_law
    cal = calibrate(devi, 1e-3 / err, target_force_error_eV_per_A=0.1)
    assert cal.slope < 0 and cal.spearman < -0.9
    assert cal.crossing_eV_per_A is None


def test_fewer_than_three_pairs_gives_none():
    cal = calibrate([0.1, 0.2], [0.05, 0.3], target_force_error_eV_per_A=0.1)
    assert cal.n_frames == 2
    assert cal.spearman is cal.slope is cal.intercept is cal.crossing_eV_per_A is None
    assert calibrate([], []).n_frames == 0


def test_constant_input_gives_none():
    cal = calibrate([0.1, 0.1, 0.1, 0.1], [0.01, 0.02, 0.03, 0.04], 0.1)
    assert cal.spearman is None and cal.slope is None and cal.crossing_eV_per_A is None
    flat_err = calibrate([0.1, 0.2, 0.3, 0.4], [0.05] * 4, 0.1)
    assert flat_err.spearman is None
    assert flat_err.slope == pytest.approx(0.0, abs=1e-12)  # a fit, but slope 0: no crossing
    assert flat_err.crossing_eV_per_A is None


def test_bad_pairs_are_dropped(power_law):
    devi, err = power_law
    bad_devi = np.concatenate([devi, [np.nan, 0.1, 0.0, np.inf, -0.2, 0.3]])
    bad_err = np.concatenate([err, [0.1, np.nan, 0.1, 0.1, 0.1, 0.0]])
    cal = calibrate(bad_devi, bad_err, 0.1)
    assert cal.n_frames == 200
    assert cal == calibrate(devi, err, 0.1)


def test_shape_and_target_validation():
    with pytest.raises(ValueError, match="same length"):
        calibrate([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="1-D"):
        calibrate(np.ones((2, 2)), np.ones((2, 2)))
    for target in (0.0, -0.1, np.nan):
        with pytest.raises(ValueError, match="target_force_error"):
            calibrate([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], target)


def test_to_dict_is_strict_json(power_law):
    for cal in (
        calibrate(*power_law, 0.1),
        calibrate([0.1], [0.2], 0.1),
        Calibration(3, float("nan"), float("inf"), 0.0, None, None),
    ):
        d = cal.to_dict()
        text = json.dumps(d, allow_nan=False)
        assert set(json.loads(text)) == {
            "n_frames",
            "spearman",
            "slope",
            "intercept",
            "target_force_error_eV_per_A",
            "crossing_eV_per_A",
        }
    assert Calibration(3, float("nan"), 1.0, 0.0, None, None).to_dict()["spearman"] is None


def test_larger_target_gives_larger_trust_lo(power_law):
    crossings = [calibrate(*power_law, t).crossing_eV_per_A for t in (0.02, 0.05, 0.1, 0.2)]
    assert all(a < b for a, b in zip(crossings, crossings[1:], strict=False))
    los = [calibrated_trust_levels(c, (1e-3, 10.0), 3.0)[0] for c in crossings]
    assert all(a < b for a, b in zip(los, los[1:], strict=False))
    assert los == pytest.approx(crossings, rel=1e-12)  # inside the bounds: not clipped


def test_trust_levels_clip_and_scale():
    assert calibrated_trust_levels(0.08, (0.02, 0.2), 4.0) == pytest.approx((0.08, 0.32))
    assert calibrated_trust_levels(0.001, (0.02, 0.2), 4.0) == pytest.approx((0.02, 0.08))
    assert calibrated_trust_levels(5.0, (0.02, 0.2), 2.5) == pytest.approx((0.2, 0.5))
    assert calibrated_trust_levels(0.3, (0.1, 0.1), 2.0) == pytest.approx((0.1, 0.2))


@pytest.mark.parametrize(
    "bounds, factor, match",
    [
        ((0.2, 0.1), 3.0, "lo_bounds"),
        ((0.0, 0.1), 3.0, "lo_bounds"),
        ((-0.1, 0.1), 3.0, "lo_bounds"),
        ((0.01, 0.1), 1.0, "hi_factor"),
        ((0.01, 0.1), 0.5, "hi_factor"),
    ],
)
def test_trust_levels_validation(bounds, factor, match):
    with pytest.raises(ValueError, match=match):
        calibrated_trust_levels(0.05, bounds, factor)


def test_trust_levels_need_a_crossing():
    with pytest.raises(ValueError, match="crossing"):
        calibrated_trust_levels(None, (0.01, 0.1), 3.0)


def independent_calibration(devi, err, target=None) -> dict:
    """The calibration's numbers computed here, straight from scipy and numpy: Spearman of the
    pairs with both values finite and > 0, least squares of log10(error) on log10(deviation),
    and the deviation where that line reaches ``target`` (eV/A)."""
    from scipy.stats import spearmanr

    devi, err = np.asarray(devi, dtype=float), np.asarray(err, dtype=float)
    keep = np.isfinite(devi) & np.isfinite(err) & (devi > 0) & (err > 0)
    d, e = devi[keep], err[keep]
    out = {"n_frames": int(keep.sum()), "spearman": None, "slope": None, "intercept": None}
    out["crossing_eV_per_A"] = None
    if d.size < 3 or np.ptp(d) == 0:
        return out
    if np.ptp(e) > 0:
        out["spearman"] = float(spearmanr(d, e).statistic)
    slope, intercept = np.polyfit(np.log10(d), np.log10(e), 1)
    out["slope"], out["intercept"] = float(slope), float(intercept)
    if target is not None and slope > 0:
        out["crossing_eV_per_A"] = float(10.0 ** ((np.log10(target) - intercept) / slope))
    return out


def assert_same_calibration(recorded: dict, expected: dict) -> None:
    assert recorded["n_frames"] == expected["n_frames"]
    for key in ("spearman", "slope", "intercept", "crossing_eV_per_A"):
        if expected[key] is None:
            assert recorded[key] is None, key
        else:
            assert recorded[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key


def assert_calibration_record(record: dict) -> None:
    """A calibration.json's numbers against the ones computed here from the frames it lists."""
    devi = [f["max_devi_f"] for f in record["frames"]]
    err = [f["max_force_error_eV_per_A"] for f in record["frames"]]
    cal = record["calibration"]
    expected = independent_calibration(devi, err, cal["target_force_error_eV_per_A"])
    assert_same_calibration(cal, expected)


def colour_pixels(image: np.ndarray, colour: str) -> int:
    """Pixels of an RGB(A) image (0..1) that show ``colour`` opaque or at the scatter's alpha
    0.75 over white, within 3/255."""
    from matplotlib.colors import to_rgb

    rgb = np.round(image[..., :3] * 255.0)
    pure = 255.0 * np.array(to_rgb(colour))
    n = 0
    for shade in (pure, 0.75 * pure + 0.25 * 255.0):
        n += int((np.abs(rgb - shade).max(axis=-1) <= 3).sum())
    return n


def assert_calibration_figure(path, shown=(), not_shown=()) -> np.ndarray:
    """The PNG reads back as the 600 x 550 px figure, not blank; each colour of ``shown``
    covers at least 5 pixels (one marker and its legend entry: 14-26), none of ``not_shown``
    any. Returns the image."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    image = imread(path)
    assert image.shape[:2] == (550, 600) and image.shape[2] in (3, 4)
    rgb = np.round(image[..., :3] * 255.0).astype(int)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50  # text, lines, markers: not blank
    assert (rgb < 250).any(axis=-1).mean() > 0.01
    for colour in shown:
        assert colour_pixels(image, colour) >= 5, colour
    for colour in not_shown:
        assert colour_pixels(image, colour) == 0, colour
    return image


def test_calibration_plot_with_fit(tmp_path, power_law):
    devi, err = power_law
    kinds = ["candidate"] * 150 + ["test"] * 45 + ["extra"] * 5
    devi = np.concatenate([devi, [0.0, np.nan]])
    err = np.concatenate([err, [0.1, 0.1]])
    kinds += ["test", "test"]
    cal = calibrate(devi, err, 0.1)
    path = calibration_plot(devi, err, kinds, 0.05, 0.15, tmp_path / "ex" / "cal.png", cal, "it 3")
    assert path == tmp_path / "ex" / "cal.png"
    # candidates orange, test frames blue, the trust levels green and red, the target line and
    # its crossing purple
    colours = ("tab:orange", "tab:blue", "tab:green", "tab:red", "tab:purple")
    assert_calibration_figure(path, shown=colours)


def test_calibration_plot_without_calibration(tmp_path, power_law):
    devi, err = power_law
    path = calibration_plot(devi, err, ["test"] * devi.size, 0.05, 0.15, tmp_path / "cal.png")
    # no candidates, no target: no orange, no purple
    assert_calibration_figure(
        path, shown=("tab:blue", "tab:green", "tab:red"), not_shown=("tab:orange", "tab:purple")
    )


def test_calibration_plot_zero_points(tmp_path):
    path = calibration_plot([], [], [], 0.05, 0.15, tmp_path / "empty.png")
    no_points = ("tab:orange", "tab:blue", "tab:purple")
    assert_calibration_figure(path, shown=("tab:green", "tab:red"), not_shown=no_points)
    # all points left out, with a calibration that has no fit (the target line is drawn)
    cal = calibrate([0.0, np.nan], [0.1, 0.1], 0.1)
    path = calibration_plot([0.0, np.nan], [0.1, 0.1], ["a", "b"], 0.05, 0.15, path, cal)
    assert_calibration_figure(
        path, shown=("tab:green", "tab:red", "tab:purple"), not_shown=("tab:orange", "tab:blue")
    )


def test_calibration_plot_validates_kinds(tmp_path):
    with pytest.raises(ValueError, match="kinds"):
        calibration_plot([0.1, 0.2], [0.1, 0.2], ["test"], 0.05, 0.15, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
