"""Calibration: tau for a target FAR on synthetic score distributions with known FAR, and the logistic
P(same | distance) fit, against the analytic truth."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy.stats import norm

from faceid.indexer.calibration import Calibration, calibrate, fit_match_probability
from faceid.indexer.errors import InvalidRequest

SAME, DIFF = (0.80, 0.15), (1.35, 0.12)  # normal distance distributions (mean, sd)


def draw(n_same: int, n_diff: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = np.concatenate([rng.normal(*SAME, n_same), rng.normal(*DIFF, n_diff)])
    return d, np.r_[np.ones(n_same, bool), np.zeros(n_diff, bool)]


@pytest.mark.parametrize("target", [1e-1, 1e-2, 1e-3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tau_hits_target_far_on_synthetic_distributions(target, seed):
    n_diff = 20_000
    d, s = draw(2_000, n_diff, seed)
    cal = calibrate(d, s, target, "m")
    true_far = norm.cdf(cal.tau, *DIFF)  # the population FAR of the chosen tau
    # Binomial sampling error of the k-th order statistic: a few standard errors, plus one pair of rounding.
    tolerance = 4 * math.sqrt(target * (1 - target) / n_diff) + 1 / n_diff
    assert abs(true_far - target) <= tolerance
    assert cal.far <= target and cal.far == pytest.approx((d[~s] <= cal.tau).mean())
    assert cal.tar == pytest.approx((d[s] <= cal.tau).mean())
    assert abs(cal.tar - norm.cdf(cal.tau, *SAME)) <= 4 * math.sqrt(0.25 / 2_000)
    fresh_d, fresh_s = draw(2_000, n_diff, seed + 100)  # and on pairs it has not seen
    assert abs((fresh_d[~fresh_s] <= cal.tau).mean() - target) <= 2 * tolerance
    assert (cal.n_same, cal.n_different, cal.target_far) == (2_000, n_diff, target)


def test_refuses_a_far_the_pairs_cannot_measure():
    d, s = draw(100, 500, 0)
    calibrate(d, s, 1e-2, "m")
    with pytest.raises(InvalidRequest, match="at least 1000 different-person pairs.*has 500"):
        calibrate(d, s, 1e-3, "m")
    with pytest.raises(InvalidRequest, match="both"):
        calibrate(d[~s], s[~s], 1e-2, "m")


def test_logistic_fit_recovers_a_known_curve():
    rng = np.random.default_rng(5)
    a, b = 12.0, -11.0  # P(same | d) = sigmoid(a + b·d): 0.5 at d ≈ 1.09
    d = rng.uniform(0.3, 1.9, 40_000)
    same = rng.random(d.size) < 1 / (1 + np.exp(-(a + b * d)))
    fit = fit_match_probability(d, same)
    # Classes are weighted equally, which for a correct model shifts only the intercept, by log(n_diff / n_same).
    shift = math.log((~same).sum() / same.sum())
    assert fit.slope == pytest.approx(b, rel=0.05)
    assert fit.intercept == pytest.approx(a + shift, abs=0.05 * abs(a))


def test_probability_is_monotone_and_round_trips_as_json():
    d, s = draw(500, 5_000, 3)
    cal = calibrate(d, s, 1e-2, "facenet-20170512-128d")
    p = cal.probability(np.linspace(0.0, 2.0, 50))
    assert np.all(np.diff(p) < 0) and p[0] > 0.99 and p[-1] < 0.01
    midpoint = -cal.intercept / cal.slope  # P = 0.5 between the two distributions' means
    assert SAME[0] < midpoint < DIFF[0]
    assert cal.probability(1e6) == 0.0 and cal.probability(-1e6) == 1.0  # no overflow
    back = Calibration.from_json(cal.to_json())
    assert back == cal
    data = cal.to_dict() | {"version": 99}
    with pytest.raises(InvalidRequest, match="version 99"):
        Calibration.from_dict(data)


@pytest.mark.slow
def test_faceid_calibrate_stores_tau_and_curve_for_the_model(tmp_path):
    """`faceid calibrate` end to end: real photos through the service's detector and embedder, into a real
    SQLite gallery, where the engine reads the calibrated tau and probability curve."""
    from conftest import FACES_DIR, MODELS_DIR

    from faceid.indexer.cli_tools import calibrate_model, eval_identify
    from faceid.indexer.store import create_store

    people = tmp_path / "people"
    for person in sorted(p.name for p in FACES_DIR.iterdir())[:6]:
        (people / person).mkdir(parents=True)
        for photo in sorted((FACES_DIR / person).glob("*.jpg"))[:3]:
            (people / person / photo.name).symlink_to(photo)
    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    out = calibrate_model(people, target_far=0.05, model_dir=MODELS_DIR, device="cpu", database_url=url,
                          progress=False)
    cal, ev = out.calibration, out.evaluation
    assert (cal.n_same, cal.n_different) == (6 * 3, 18 * 17 // 2 - 6 * 3) and not ev.failures
    d, s = ev.distances.distances, ev.distances.same
    assert cal.far <= 0.05 and cal.far == pytest.approx((d[~s] <= cal.tau).mean())
    store = create_store(url)
    try:
        row = store.get_calibration("facenet-20170512-128d")
    finally:
        store.close()
    assert row.threshold == pytest.approx(cal.tau)
    assert (row.logistic_a, row.logistic_b) == (pytest.approx(cal.intercept), pytest.approx(cal.slope))
    assert "FAR" in row.source
    # Identify uses the stored tau by default.
    ident = eval_identify(people, model_dir=MODELS_DIR, device="cpu", database_url=url, stranger_folds=3,
                          gallery_per_identity=2, progress=False)
    assert ident.report.tau == pytest.approx(cal.tau)


@pytest.mark.slow
def test_verify_and_identify_use_the_stored_calibration_over_grpc(tmp_path):
    """A calibration stored for the served model is the default tau of Verify and Identify (a request's threshold
    still wins), and both return P(same | d) = sigmoid(a + b·d) beside the distance, over a real gRPC server."""
    from conftest import person_photos
    from server_harness import served, stub

    from faceid.indexer.store import create_store
    from faceid.v1 import faceid_pb2 as pb

    tau, a, b = 0.9, 20.0, -20.0  # P = 0.5 at d = 1; not the card's tau (1.02), so the source is visible
    db = tmp_path / "g.db"
    store = create_store(f"sqlite:///{db}")
    store.set_calibration(model_id="facenet-20170512-128d", threshold=tau, source="test", logistic_a=a, logistic_b=b)
    store.close()

    def p(d: float) -> float:
        return 1.0 / (1.0 + math.exp(-(a + b * d)))

    obama, biden = person_photos("barack_obama"), person_photos("joe_biden")
    with served(db) as server:
        channel, api = stub(server.address)
        with channel:
            info = api.GetStats(pb.GetStatsRequest(), timeout=60).model
            assert info.threshold_source == "calibration" and info.default_threshold == pytest.approx(tau)
            api.Enroll(pb.EnrollRequest(identity="obama", images=[f.read_bytes() for f in obama[:2]]), timeout=120)

            for other in (obama[2], biden[0]):  # same person, then someone else
                v = api.Verify(pb.VerifyRequest(image_a=obama[3].read_bytes(), image_b=other.read_bytes()), timeout=120)
                assert v.threshold == pytest.approx(tau) and v.decided_by == "distance"
                assert v.match == (v.distance <= v.threshold)
                assert v.HasField("probability") and v.probability == pytest.approx(p(v.distance), abs=1e-4)
            loose = api.Verify(pb.VerifyRequest(image_a=obama[3].read_bytes(), image_b=biden[0].read_bytes(),
                                                threshold=1.9), timeout=120)
            assert loose.threshold == pytest.approx(1.9) and loose.match  # the request's tau wins

            found = api.Identify(pb.IdentifyRequest(image=obama[2].read_bytes()), timeout=120)
            assert found.threshold == pytest.approx(tau)
            face = found.faces[0]
            assert face.identity == "obama" and face.distance <= tau
            assert face.HasField("probability") and face.probability == pytest.approx(p(face.distance), abs=1e-4)
            assert all(c.probability == pytest.approx(p(c.distance), abs=1e-4) for c in face.candidates)
            strict = api.Identify(pb.IdentifyRequest(image=obama[2].read_bytes(), threshold=0.05), timeout=120)
            assert strict.threshold == pytest.approx(0.05) and strict.faces[0].unknown

            # `faceid calibrate` run while the server is up: τ and the probability change together, no restart.
            from faceid.indexer.engine import CALIBRATION_TTL_S

            tau2, a2, b2 = 0.8, 10.0, -12.0
            other = create_store(f"sqlite:///{db}")
            other.set_calibration(model_id="facenet-20170512-128d", threshold=tau2, source="test2",
                                  logistic_a=a2, logistic_b=b2)
            other.close()
            time.sleep(CALIBRATION_TTL_S + 0.2)
            v = api.Verify(pb.VerifyRequest(image_a=obama[3].read_bytes(), image_b=obama[2].read_bytes()), timeout=120)
            assert v.threshold == pytest.approx(tau2)
            assert v.probability == pytest.approx(1.0 / (1.0 + math.exp(-(a2 + b2 * v.distance))), abs=1e-4)
            assert api.GetStats(pb.GetStatsRequest(), timeout=60).model.default_threshold == pytest.approx(tau2)
