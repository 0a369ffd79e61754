"""Drift counts: accepted values land in the training reference's bins, and reach the metrics on flush."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from model_service.registry import Registry
from preprocessing_service import create_app, drift
from preprocessing_service.drift import DriftRecorder, FeatureBins
from shared.contracts import learn_contract
from tests.preprocessing_service.conftest import make_settings


def _training_frame(rows: int = 997, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "length": rng.normal(40.0, 5.0, rows),  # full precision
            "tiny": rng.uniform(0.0, 2e-6, rows),  # a scale where rounded edges would all collapse
            "count": rng.integers(0, 30, rows),  # deciles over ties
            "doors": rng.choice([2, 4, 5], rows, p=[0.2, 0.7, 0.1]),  # few values: one bin each
            "dose": rng.choice([0.5, 1.0, 2.5], rows),  # few, but fractional: deciles
            "colour": rng.choice(["red", "green", "blue"], rows, p=[0.6, 0.3, 0.1]),
            "flag": rng.random(rows) > 0.5,
        }
    )


def _counts(bins: FeatureBins) -> dict[tuple[str, str], int]:
    return {(feature, label): int(n) for (feature, label, _), n in zip(bins.slots, bins.pending(), strict=True)}


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _psi(bins: FeatureBins, feature: str) -> float:
    """The index as the recording rule computes it (shares floored at 0.0001), over what ``bins`` holds."""
    counts = np.array([n for (f, _, _), n in zip(bins.slots, bins.pending(), strict=True) if f == feature], float)
    expected = np.maximum([share for f, _, share in bins.slots if f == feature], 0.0001)
    actual = np.maximum(counts / counts.sum(), 0.0001)
    return float(((actual - expected) * np.log(actual / expected)).sum())


def test_the_training_data_itself_lands_exactly_in_its_reference_shares() -> None:
    frame = _training_frame()
    contract = learn_contract(frame)
    bins = FeatureBins("unit-shares", 1, contract)
    bins.observe_records(frame.to_dict("records"))
    counts = _counts(bins)
    kinds = {}
    for feature in contract["features"]:
        name, reference = feature["name"], feature.get("reference")
        if feature["type"] == "boolean":
            assert reference is None
            assert not any(f == name for f, _ in counts)
            continue
        kinds[name] = next(key for key in ("edges", "values", "frequencies") if key in reference)
        shares = reference.get("fractions") or list(reference["frequencies"].values())
        seen = np.array([n for (f, label), n in counts.items() if f == name and label != "other"]) / len(frame)
        np.testing.assert_allclose(seen, shares, atol=1e-6, err_msg=name)
        assert counts.get((name, "other"), 0) == 0
        assert _psi(bins, name) < 1e-6, name
    assert kinds == {
        "length": "edges",
        "tiny": "edges",
        "count": "edges",
        "doors": "values",
        "dose": "edges",
        "colour": "frequencies",
    }


def test_real_data_with_ties_and_many_decimals_scores_no_drift_against_itself() -> None:
    # scikit-learn's scaled diabetes data: with edges rounded to six decimals, s4 scored 2.4 against itself.
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).data
    bins = FeatureBins("unit-diabetes", 1, learn_contract(frame))
    bins.observe_matrix(frame.to_numpy(dtype=float))
    assert {name: round(_psi(bins, name), 6) for name in frame.columns} == dict.fromkeys(frame.columns, 0.0)


def test_a_feature_with_few_values_sees_a_shift_between_them_and_values_never_trained_on() -> None:
    frame = pd.DataFrame({"sex": [1] * 53 + [2] * 47, "constant": [3.0] * 100})
    contract = learn_contract(frame)
    assert contract["features"][0]["reference"] == {"values": [1.0, 2.0], "fractions": [0.53, 0.47]}
    bins = FeatureBins("unit-few", 1, contract)
    bins.observe_records([{"sex": 2, "constant": 3.0}] * 90 + [{"sex": 2, "constant": 7.5}] * 10)
    assert _counts(bins) == {
        ("sex", "1"): 0,
        ("sex", "2"): 100,
        ("sex", "other"): 0,
        ("constant", "3.0"): 90,
        ("constant", "other"): 10,
    }
    assert _psi(bins, "sex") > 2  # all on one side: deciles would have put both values in one bin, PSI 0
    assert _psi(bins, "constant") > 0.2


def test_fractional_numbers_with_few_values_keep_deciles() -> None:
    # A measure in half steps: a live value between two of them is not "never seen", as it would be with a
    # bin per value (4% of quarter steps alone scored PSI 0.32 that way).
    half_steps = np.repeat(np.arange(0.0, 10.0, 0.5), 10)
    reference = learn_contract(pd.DataFrame({"depth": half_steps}))["features"][0]["reference"]
    assert "edges" in reference
    assert "values" not in reference


@pytest.mark.parametrize("dtype", ["float32", "Float32"])
def test_float32_training_values_bin_as_clients_send_them(dtype: str) -> None:
    # float32 0.1 widens to 0.10000000149011612; a client sends 0.1, as JSON (and the column) prints it.
    values = pd.array(np.round(np.random.default_rng(3).uniform(0, 1, 500), 1), dtype=dtype)
    contract = learn_contract(pd.DataFrame({"ratio": values}))
    edges = contract["features"][0]["reference"]["edges"]
    assert all(edge == round(edge, 1) for edge in edges), edges
    bins = FeatureBins("unit-float32", 1, contract)
    bins.observe_records([{"ratio": float(str(v))} for v in np.asarray(values, dtype=np.float32)])
    assert _psi(bins, "ratio") < 1e-6


@pytest.mark.parametrize("rows", [4, 200])  # fewer rows than one chunk, and a block of them
def test_both_paths_count_alike_and_values_beyond_training_go_to_the_end_bins(rows: int) -> None:
    frame = _training_frame()[["length", "count", "doors"]]
    contract = learn_contract(frame)
    matrix_bins, record_bins = FeatureBins("unit-paths", 1, contract), FeatureBins("unit-paths", 2, contract)
    live = np.array([[-1e9, 0.0, 2.0], [1e9, 1e6, 3.0], [40.0, 15.0, 4.0], [41.5, 3.0, 9.0]] * (rows // 4))
    matrix_bins.observe_matrix(live)
    record_bins.observe_records([{"length": a, "count": int(b), "doors": int(c)} for a, b, c in live])
    assert _counts(matrix_bins) == _counts(record_bins)
    counts = _counts(matrix_bins)
    last = str(len(contract["features"][0]["reference"]["fractions"]) - 1)
    assert counts[("length", "0")] == rows // 4
    assert counts[("length", last)] == rows // 4
    assert sum(n for (feature, _), n in counts.items() if feature == "length") == rows
    assert counts[("doors", "2")] == counts[("doors", "4")] == rows // 4
    assert counts[("doors", "other")] == rows // 2


def test_values_queued_in_any_grouping_count_as_one_histogram_and_the_queue_stays_bounded() -> None:
    # Requests only queue values; binning happens in bulk, in groups and chunks of rows. Any grouping must
    # give numpy.histogram's counts, and the queue must not grow past its bound between two flushes.
    frame = _training_frame(rows=6000, seed=11)[["length", "count", "doors"]]
    contract = learn_contract(frame)
    bins = FeatureBins("unit-grouping", 1, contract)
    matrix = frame.to_numpy(dtype=float)
    pieces = [matrix[i : i + 1] for i in range(700)] + [matrix[700:5900]]
    pieces += [matrix[i : i + 7] for i in range(5900, 6000, 7)]
    for piece in pieces:
        bins.observe_matrix(piece)
        assert bins._queued_rows <= drift.MAX_QUEUED_ROWS  # the request that passes the bound bins them
    counts = _counts(bins)
    for feature in contract["features"]:
        reference = feature["reference"]
        if "edges" in reference:
            expected, _ = np.histogram(frame[feature["name"]].to_numpy(dtype=float), bins=reference["edges"])
            labels = [str(b) for b in range(len(expected))]
        else:
            values = frame[feature["name"]].to_numpy()
            labels = [str(int(v)) for v in reference["values"]]
            expected = np.array([(values == v).sum() for v in reference["values"]])
        assert [counts[(feature["name"], label)] for label in labels] == expected.tolist(), feature["name"]


def test_missing_and_unknown_values_are_not_counted() -> None:
    contract = learn_contract(_training_frame())
    bins = FeatureBins("unit-missing", 1, contract)
    bins.observe_records([{"length": None, "count": 3, "colour": None, "flag": True}, {"colour": "mauve"}])
    counts = _counts(bins)
    assert sum(n for (feature, _), n in counts.items() if feature == "length") == 0
    assert sum(n for (feature, _), n in counts.items() if feature == "colour") == 0
    assert sum(n for (feature, _), n in counts.items() if feature == "count") == 1


def test_a_padded_training_spelling_counts_as_its_clean_category() -> None:
    frame = pd.DataFrame({"island": [" Dream", " Dream", "Biscoe", "Biscoe", "Biscoe"]})
    contract = learn_contract(frame)
    assert contract["features"][0]["model_values"] == {"Dream": " Dream"}
    bins = FeatureBins("unit-padded", 1, contract)
    bins.observe_records([{"island": " Dream"}, {"island": "Dream"}, {"island": "Biscoe"}])  # as records carry it
    assert _counts(bins) == {("island", "Biscoe"): 1, ("island", "Dream"): 2}


def test_every_bin_exists_at_zero_with_its_reference_and_a_flush_moves_counts_once() -> None:
    contract = learn_contract(_training_frame())
    bins = FeatureBins("unit-flush", 3, contract)
    labels = {"model": "unit-flush", "version": "3"}
    for feature, label, share in bins.slots:
        assert (
            REGISTRY.get_sample_value("modelgate_feature_values_total", dict(labels, feature=feature, bin=label)) == 0
        )
        assert _sample("modelgate_feature_reference_fraction", **labels, feature=feature, bin=label) == share
    bins.observe_records([{"length": 40.0, "count": 1, "colour": "blue"}] * 5)
    assert bins.flush() == 15
    assert bins.flush() == 0  # nothing is counted twice
    assert _sample("modelgate_feature_values_total", **labels, feature="colour", bin="blue") == 5
    assert (
        sum(_sample("modelgate_feature_values_total", **labels, feature="length", bin=str(b)) for b in range(10)) == 5
    )


def test_the_recorder_flushes_on_its_own_and_at_stop() -> None:
    contract = learn_contract(_training_frame()[["colour"]])
    recorder = DriftRecorder(flush_seconds=0.05)
    bins = recorder.bins("unit-recorder", 1, contract)
    assert recorder.bins("unit-recorder", 1, contract) is bins  # a reload keeps counting where it was
    labels = {"model": "unit-recorder", "version": "1", "feature": "colour", "bin": "red"}
    bins.observe_records([{"colour": "red"}] * 4)
    deadline = time.monotonic() + 10
    while _sample("modelgate_feature_values_total", **labels) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _sample("modelgate_feature_values_total", **labels) == 4
    recorder.stop()
    bins.observe_records([{"colour": "red"}] * 2)
    recorder.stop()  # the exit flush, with the thread gone
    assert _sample("modelgate_feature_values_total", **labels) == 6


def test_stop_waits_for_a_flush_the_thread_has_begun() -> None:
    # The thread takes the counts, then writes them: a stop in between must not return before the writes
    # (the worker would exit with them). The writes are slowed so the stop lands in between every time.
    contract = learn_contract(_training_frame()[["colour"]])
    recorder = DriftRecorder(flush_seconds=0.01)
    bins = recorder.bins("unit-stop-race", 1, contract)
    writing = threading.Event()
    for child in bins._children:
        real_inc = child.inc

        def slow_inc(amount: float = 1, _real: Any = real_inc) -> None:
            writing.set()
            time.sleep(0.3)
            _real(amount)

        child.inc = slow_inc  # type: ignore[method-assign]
    bins.observe_records([{"colour": "red"}] * 3 + [{"colour": "blue"}] * 4)
    assert writing.wait(10)
    recorder.stop()
    labels = {"model": "unit-stop-race", "version": "1", "feature": "colour"}
    assert _sample("modelgate_feature_values_total", **labels, bin="red") == 3
    assert _sample("modelgate_feature_values_total", **labels, bin="blue") == 4


def _flushed(model: str, bins: FeatureBins) -> dict[tuple[str, str], float]:
    return {
        (feature, label): _sample(
            "modelgate_feature_values_total", model=model, version="1", feature=feature, bin=label
        )
        for feature, label, _ in bins.slots
    }


def _histogram(frame: pd.DataFrame, contract: dict[str, Any]) -> dict[tuple[str, str], float]:
    """What every row of ``frame`` must add up to: numpy.histogram over the reference edges."""
    expected = {}
    for feature in contract["features"]:
        edges = feature["reference"]["edges"]
        counts, _ = np.histogram(frame[feature["name"]].to_numpy(dtype=float), bins=edges)
        expected.update({(feature["name"], str(b)): float(n) for b, n in enumerate(counts)})
    return expected


def test_requests_flushes_and_a_stop_racing_each_other_count_every_value_once() -> None:
    # Eight request threads queue matrices of 1 to 1500 rows (crossing the queue's bound, so requests bin
    # inline too) while the flush thread runs every millisecond; then the worker stops.
    frame = _training_frame(rows=4000, seed=5)[["length", "tiny", "count"]]
    contract = learn_contract(frame)
    recorder = DriftRecorder(flush_seconds=0.001)
    bins = recorder.bins("unit-race", 1, contract)
    matrix = frame.to_numpy(dtype=float)
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 1500, 200)
    picks = [rng.integers(0, len(matrix), size) for size in sizes]

    def request(rows: np.ndarray) -> None:
        bins.observe_matrix(matrix[rows])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(request, picks))
    recorder.stop()
    assert not bins.pending().any()
    everything = pd.DataFrame(matrix[np.concatenate(picks)], columns=frame.columns)
    assert _flushed("unit-race", bins) == _histogram(everything, contract)


def test_a_stop_waits_for_a_request_binning_the_queue() -> None:
    # The request that passes the queue's bound bins everybody's values; a worker stopping meanwhile must
    # not flush before those are added, or the process would end with them.
    frame = _training_frame(rows=drift.MAX_QUEUED_ROWS + 100, seed=8)[["length"]]
    contract = learn_contract(frame)
    recorder = DriftRecorder(flush_seconds=300)
    bins = recorder.bins("unit-exit-race", 1, contract)
    binning = threading.Event()
    real = bins._numeric_slots

    def slow(columns: np.ndarray) -> np.ndarray:
        binning.set()
        time.sleep(0.3)
        return real(columns)

    bins._numeric_slots = slow  # type: ignore[method-assign]
    matrix = frame.to_numpy(dtype=float)
    request = threading.Thread(target=bins.observe_matrix, args=(matrix,))
    request.start()
    assert binning.wait(10)
    recorder.stop()
    request.join()
    assert _flushed("unit-exit-race", bins) == _histogram(frame, contract)


def test_a_contract_of_categories_only_keeps_its_queue_bounded() -> None:
    contract = learn_contract(_training_frame()[["colour"]])
    bins = FeatureBins("unit-category-queue", 1, contract)
    records = [{"colour": "red"}, {"colour": "blue"}] * 50
    for _ in range(200):
        bins.observe_records(records)
        assert bins._queued_rows <= drift.MAX_QUEUED_ROWS
    assert _counts(bins) == {("colour", "blue"): 10000, ("colour", "green"): 0, ("colour", "red"): 10000}


def test_a_queued_matrix_is_read_only() -> None:
    contract = learn_contract(_training_frame()[["length"]])
    bins = FeatureBins("unit-read-only", 1, contract)
    raw = np.array([[41.0], [39.5]])
    bins.observe_matrix(raw)
    with pytest.raises(ValueError, match="read-only"):
        raw[0, 0] = 0.0


def _transform(client: FlaskClient, name: str, instances: list[dict[str, Any]]) -> Any:
    return client.post(f"/v1/models/{name}/versions/1/transform", json={"instances": instances})


@pytest.mark.parametrize("name", ["diabetes", "penguins"])  # all numbers (the matrix path); with categories
def test_the_service_counts_accepted_instances_only(client: FlaskClient, registry: Registry, name: str) -> None:
    metadata = registry.metadata(name, 1)
    instances = [dict(row) for row in metadata["examples"]]
    feature = next(f for f in metadata["contract"]["features"] if f.get("reference"))
    labels = {"model": name, "version": "1", "feature": feature["name"]}
    recorder = client.application.extensions["modelgate.preprocessors"].drift

    def counted() -> float:
        recorder.flush()
        text = client.get("/metrics").get_data(as_text=True)
        prefix = 'modelgate_feature_values_total{bin="'
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(prefix) and all(f'{k}="{v}"' in line for k, v in labels.items())
        )

    before = counted()
    assert _transform(client, name, instances).status_code == 200
    assert counted() - before == sum(row.get(feature["name"]) is not None for row in instances)
    broken = [dict(instances[0], **{feature["name"]: "not a value"}), *instances]
    assert _transform(client, name, broken).status_code == 422
    assert counted() - before == sum(row.get(feature["name"]) is not None for row in instances)


def test_drift_counting_can_be_switched_off(registry_root: Path, registry: Registry) -> None:
    app = create_app(make_settings(registry_root, drift_metrics=False), warm=False)
    assert app.extensions["modelgate.preprocessors"].drift is None
    instances = registry.metadata("diabetes", 1)["examples"]
    assert (
        app.test_client().post("/v1/models/diabetes/versions/1/transform", json={"instances": instances}).status_code
        == 200
    )
    assert app.extensions["modelgate.preprocessors"].get("diabetes", 1).drift is None
