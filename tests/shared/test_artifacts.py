"""The signed artifact format: round trip, tamper detection before unpickling, names, listings, deployments."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from shared import artifacts
from shared.artifacts import (
    ARTIFACT_FILE,
    DEPLOYMENT_FILE,
    METADATA_FILE,
    ONNX_FILE,
    list_models,
    list_versions,
    load_version,
    read_deployment,
    read_metadata,
    sha256_hex,
    sign,
    validate_name,
    validate_version,
    version_dir,
    write_deployment,
    write_version,
)
from shared.errors import ArtifactError, HashMismatch, InvalidName, SignatureMismatch

KEY = b"artifact-test-key-0123456789abcdef"
OTHER_KEY = b"artifact-test-key-0123456789abcdeF"
ONNX_BYTES = b"\x08\x07not-really-onnx-but-bytes"
METADATA = {"task": "classification", "classes": [0, 1], "metrics": {"accuracy": 0.9, "f1": 0.875}}
X = np.array([[0.0, 1.0], [1.0, 0.5], [2.0, 2.5], [3.0, 1.0], [4.0, 3.5], [5.0, 2.0], [6.0, 4.5], [7.0, 3.0]])
y = np.array([0, 0, 0, 0, 1, 1, 1, 1])


class CreatesMarker:
    """A pickle whose mere loading creates a folder: proof of whether unpickling happened."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.path,))


@pytest.fixture
def estimator() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def written(root: Path, estimator: Pipeline) -> Path:
    """Version 1 of model ``demo``, with an ONNX file, signed under KEY."""
    write_version(root, "demo", 1, estimator, METADATA, KEY, onnx=ONNX_BYTES)
    return root / "demo" / "1"


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def rewrite_metadata(directory: Path, change: Any, key: bytes | None = KEY) -> None:
    """Apply ``change`` to metadata.json, then re-sign it under ``key`` (None: keep the old signature)."""
    metadata = read_json(directory / METADATA_FILE)
    change(metadata)
    if key is not None:
        metadata["signature"] = sign(metadata, key)
    (directory / METADATA_FILE).write_text(json.dumps(metadata))


def test_write_then_load_round_trips(written: Path, estimator: Pipeline) -> None:
    verified = load_version(written, KEY)
    assert np.array_equal(verified.estimator.predict_proba(X), estimator.predict_proba(X))
    assert verified.onnx == ONNX_BYTES
    metadata = verified.metadata
    assert metadata["metrics"] == METADATA["metrics"]
    assert metadata["name"] == "demo"
    assert metadata["version"] == 1
    assert metadata["format"] == artifacts.FORMAT_VERSION
    assert metadata["files"] == {
        ARTIFACT_FILE: sha256_hex((written / ARTIFACT_FILE).read_bytes()),
        ONNX_FILE: sha256_hex(ONNX_BYTES),
    }
    assert metadata["signature"] == sign(metadata, KEY)
    assert metadata == read_json(written / METADATA_FILE)


def test_write_version_returns_what_it_wrote_and_leaves_nothing_else(root: Path, estimator: Pipeline) -> None:
    signed = write_version(root, "demo", 3, estimator, dict(METADATA, signature="stale"), KEY)
    directory = root / "demo" / "3"
    assert signed == read_json(directory / METADATA_FILE)
    assert signed["signature"] == sign(signed, KEY)
    assert sorted(p.name for p in directory.iterdir()) == [METADATA_FILE, ARTIFACT_FILE]
    assert sorted(p.name for p in (root / "demo").iterdir()) == ["3"]  # no staging folder left behind
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert load_version(directory, KEY).onnx is None


def test_write_version_refuses_an_existing_version(written: Path, estimator: Pipeline) -> None:
    before = {p.name: p.read_bytes() for p in written.iterdir()}
    other = make_pipeline(StandardScaler(), LogisticRegression(C=0.01)).fit(X, y)
    with pytest.raises(ArtifactError, match="already exists"):
        write_version(written.parent.parent, "demo", 1, other, {"task": "other"}, KEY)
    assert {p.name: p.read_bytes() for p in written.iterdir()} == before


def test_write_version_refuses_metadata_that_cannot_be_signed(root: Path, estimator: Pipeline) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_version(root, "demo", 1, estimator, {"metrics": {"auc": float("nan")}}, KEY)
    assert list_versions(root, "demo") == []
    assert not (root / "demo" / "1").exists()


@pytest.mark.parametrize("filename", [ARTIFACT_FILE, ONNX_FILE])
@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_one_flipped_byte_is_a_hash_mismatch(written: Path, filename: str, where: float) -> None:
    path = written / filename
    data = bytearray(path.read_bytes())
    data[round(where * (len(data) - 1))] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(HashMismatch, match=filename):
        load_version(written, KEY)


def test_tampered_pickle_is_never_unpickled(written: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (written / ARTIFACT_FILE).write_bytes(pickle.dumps(CreatesMarker(marker)))
    with pytest.raises(HashMismatch):
        load_version(written, KEY)
    assert not marker.exists()


def test_forged_hash_without_the_key_is_never_unpickled(written: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(CreatesMarker(marker))
    (written / ARTIFACT_FILE).write_bytes(payload)
    rewrite_metadata(written, lambda m: m["files"].update({ARTIFACT_FILE: sha256_hex(payload)}), key=OTHER_KEY)
    with pytest.raises(SignatureMismatch):
        load_version(written, KEY)
    assert not marker.exists()


def test_the_marker_payload_does_run_once_properly_signed(written: Path, tmp_path: Path) -> None:
    """The control for the two tests above: the same payload, correctly signed, is loaded (and runs)."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps(CreatesMarker(marker))
    (written / ARTIFACT_FILE).write_bytes(payload)
    rewrite_metadata(written, lambda m: m["files"].update({ARTIFACT_FILE: sha256_hex(payload)}))
    load_version(written, KEY)
    assert marker.is_dir()


def test_wrong_key_is_a_signature_mismatch(written: Path) -> None:
    with pytest.raises(SignatureMismatch):
        load_version(written, OTHER_KEY)
    with pytest.raises(SignatureMismatch):
        read_metadata(written, OTHER_KEY)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: m["metrics"].update(accuracy=0.99), id="better-metric"),
        pytest.param(lambda m: m.update(version=2), id="other-version"),
        pytest.param(lambda m: m.update(name="other"), id="other-name"),
        pytest.param(lambda m: m.update(extra="added"), id="added-member"),
        pytest.param(lambda m: m.pop("classes"), id="removed-member"),
        pytest.param(lambda m: m["files"].pop(ONNX_FILE), id="dropped-file"),
        pytest.param(lambda m: m.update(signature=m["signature"].upper()), id="signature-case"),
        pytest.param(lambda m: m.update(signature=""), id="empty-signature"),
    ],
)
def test_edited_metadata_is_a_signature_mismatch(written: Path, change: Any) -> None:
    rewrite_metadata(written, change, key=None)
    with pytest.raises(SignatureMismatch):
        load_version(written, KEY)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b'{"signature": NaN}', id="nan-literal"),
        pytest.param(b'{"metrics": {"auc": Infinity}, "signature": "00"}', id="infinity-literal"),
    ],
)
def test_unparseable_metadata_is_an_artifact_error(written: Path, content: bytes) -> None:
    (written / METADATA_FILE).write_bytes(content)
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_version(written, KEY)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param({"task": "x"}, id="no-signature"),
        pytest.param({"task": "x", "signature": 12}, id="signature-not-a-string"),
        pytest.param([1, 2], id="not-an-object"),
    ],
)
def test_metadata_without_a_signature_is_a_signature_mismatch(written: Path, content: Any) -> None:
    (written / METADATA_FILE).write_text(json.dumps(content))
    with pytest.raises(SignatureMismatch, match="no signature"):
        load_version(written, KEY)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(lambda m: m["files"].update({"../../etc/passwd": "0" * 64}), "unexpected file", id="traversal"),
        pytest.param(lambda m: m["files"].update({"model.pkl": "0" * 64}), "unexpected file", id="other-file"),
        pytest.param(lambda m: m["files"].pop(ARTIFACT_FILE), "lists no model file", id="no-model-file"),
        pytest.param(lambda m: m.update(files=[ARTIFACT_FILE]), "lists no model file", id="files-not-a-map"),
    ],
)
def test_signed_metadata_may_only_name_the_known_files(written: Path, change: Any, message: str) -> None:
    rewrite_metadata(written, change)
    with pytest.raises(ArtifactError, match=message):
        load_version(written, KEY)


@pytest.mark.parametrize("filename", [ARTIFACT_FILE, METADATA_FILE, ONNX_FILE])
def test_a_symlinked_file_is_refused_even_with_identical_bytes(written: Path, tmp_path: Path, filename: str) -> None:
    elsewhere = tmp_path / f"elsewhere-{filename}"
    elsewhere.write_bytes((written / filename).read_bytes())
    (written / filename).unlink()
    (written / filename).symlink_to(elsewhere)
    with pytest.raises(ArtifactError, match="cannot be opened") as caught:
        load_version(written, KEY)
    assert type(caught.value) is ArtifactError


def test_missing_or_irregular_files_are_artifact_errors(written: Path) -> None:
    (written / ONNX_FILE).unlink()
    with pytest.raises(ArtifactError, match=f"{ONNX_FILE} is missing"):
        load_version(written, KEY)
    (written / ONNX_FILE).mkdir()
    with pytest.raises(ArtifactError, match=f"{ONNX_FILE} is not a regular file"):
        load_version(written, KEY)
    (written / ONNX_FILE).rmdir()
    os.mkfifo(written / ONNX_FILE)  # opening a FIFO must not wait for a writer
    with pytest.raises(ArtifactError, match=f"{ONNX_FILE} is not a regular file"):
        load_version(written, KEY)


@pytest.mark.parametrize("filename", [ARTIFACT_FILE, METADATA_FILE])
def test_a_folder_in_place_of_a_file_is_an_artifact_error(written: Path, filename: str) -> None:
    (written / filename).unlink()
    (written / filename).mkdir()
    with pytest.raises(ArtifactError, match=f"{filename} is not a regular file"):
        load_version(written, KEY)


def test_an_unloadable_pickle_with_good_hashes_is_an_artifact_error(written: Path) -> None:
    garbage = b"\x80\x05this is not a pickle"
    (written / ARTIFACT_FILE).write_bytes(garbage)
    rewrite_metadata(written, lambda m: m["files"].update({ARTIFACT_FILE: sha256_hex(garbage)}))
    with pytest.raises(ArtifactError, match="could not be loaded"):
        load_version(written, KEY)


def test_the_signature_covers_everything_but_itself() -> None:
    metadata = {"b": 1, "a": {"y": [1, 2], "x": "é"}}
    signature = sign(metadata, KEY)
    assert sign(dict(metadata, signature="anything"), KEY) == signature
    assert sign({"a": {"x": "é", "y": [1, 2]}, "b": 1}, KEY) == signature  # key order does not matter
    assert sign(dict(metadata, b=2), KEY) != signature
    assert sign(metadata, OTHER_KEY) != signature
    assert artifacts.canonical_json(metadata) == '{"a":{"x":"é","y":[1,2]},"b":1}'.encode()


GOOD_NAMES = ["a", "0", "iris", "breast-cancer", "a1-b2-c3", "a--b", "x" * 63]
BAD_NAMES = [
    "",
    "A",
    "Iris",
    "-a",
    "a-",
    "x" * 64,
    "../x",
    "a/b",
    "a\\b",
    ".",
    "..",
    ".hidden",
    "a_b",
    "a.b",
    " a",
    "a ",
    "iris\n",
    "\u0456ris",  # Cyrillic small i
    "ir\u0456s",
    "\uff41",  # fullwidth a
    "a\u200bb",  # zero-width space
    "caf\u00e9",
    "a\x00b",
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_are_accepted(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName) as caught:
        validate_name(name)
    assert caught.value.status == 404  # no model can have this name: the contract's 404


@pytest.mark.parametrize("name", [None, 1, b"iris", ["iris"]])
def test_names_must_be_strings(name: Any) -> None:
    with pytest.raises(InvalidName):
        validate_name(name)


@pytest.mark.parametrize(
    ("version", "expected"),
    [(1, 1), ("1", 1), ("42", 42), (10, 10), ("999999999", 999_999_999), (999_999_999, 999_999_999)],
)
def test_good_versions_are_accepted(version: str | int, expected: int) -> None:
    assert validate_version(version) == expected


@pytest.mark.parametrize(
    "version",
    [
        "0",
        0,
        "01",
        "007",
        -1,
        "-1",
        "+1",
        "1e3",
        " 1",
        "1 ",
        "1\n",
        "",
        "1.0",
        1.0,
        "1_000",
        "x",
        "../1",
        "1/2",
        "1234567890",
        10**9,
        True,
        False,
        "\u0661",  # Arabic-Indic digit one
        "\uff11",  # fullwidth digit one
        "\u00b9",  # superscript one
    ],
)
def test_bad_versions_are_refused(version: Any) -> None:
    with pytest.raises(InvalidName):
        validate_version(version)


@pytest.mark.parametrize(("name", "version"), [("../etc", 1), ("demo", "../1"), ("demo", "1/../../x")])
def test_version_dir_only_builds_paths_from_valid_parts(root: Path, name: str, version: str | int) -> None:
    with pytest.raises(InvalidName):
        version_dir(root, name, version)
    assert version_dir(root, "demo", "7") == root / "demo" / "7"


def test_list_versions_is_numeric_and_ignores_junk(root: Path, estimator: Pipeline) -> None:
    for version in (10, 2, 9):
        write_version(root, "demo", version, estimator, METADATA, KEY)
    base = root / "demo"
    for junk in ("01", "0", "abc", ".5-staging", "-3", "1e3", "1234567890"):
        (base / junk).mkdir()
        (base / junk / METADATA_FILE).write_text("{}")
    (base / "7").mkdir()  # a version folder without metadata (an interrupted copy)
    (base / "8").write_text("a file, not a folder")
    write_deployment(root, "demo", {"version": 2})
    assert list_versions(root, "demo") == [2, 9, 10]
    assert list_versions(root, "absent") == []
    with pytest.raises(InvalidName):
        list_versions(root, "../demo")


def test_list_models_ignores_junk(root: Path, estimator: Pipeline) -> None:
    assert list_models(root) == []  # no registry folder yet
    write_version(root, "beta", 1, estimator, METADATA, KEY)
    write_version(root, "alpha", 1, estimator, METADATA, KEY)
    for junk in ("Upper", ".cache", "bad_name", "-x"):
        (root / junk).mkdir()
    (root / "notes").write_text("a file")
    assert list_models(root) == ["alpha", "beta"]


@pytest.mark.parametrize(
    "record",
    [{"version": 1}, {"version": 2, "canary": {"version": 3, "weight": 10}}],
)
def test_deployment_round_trip(root: Path, record: dict[str, Any]) -> None:
    assert read_deployment(root, "demo") is None
    write_deployment(root, "demo", record)
    assert read_deployment(root, "demo") == record
    path = root / "demo" / DEPLOYMENT_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in (root / "demo").iterdir()] == [DEPLOYMENT_FILE]  # no temporary file left


def test_write_deployment_replaces_the_record(root: Path) -> None:
    write_deployment(root, "demo", {"version": 1, "canary": {"version": 2, "weight": 5}})
    write_deployment(root, "demo", {"version": 2})
    assert read_deployment(root, "demo") == {"version": 2}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "unreadable"),
        (b"", "unreadable"),
        (b"\xff\xfe\x00", "unreadable"),
        (b"[1, 2]", "names no version"),
        (b'{"canary": {"version": 2, "weight": 5}}', "names no version"),
        (b'{"version": "2"}', "names no version"),
        (b'{"version": null}', "names no version"),
    ],
)
def test_unreadable_deployment_is_an_artifact_error(root: Path, content: bytes, message: str) -> None:
    (root / "demo").mkdir(parents=True)
    (root / "demo" / DEPLOYMENT_FILE).write_bytes(content)
    with pytest.raises(ArtifactError, match=message):
        read_deployment(root, "demo")


def test_deployment_that_is_a_folder_is_an_artifact_error(root: Path) -> None:
    (root / "demo" / DEPLOYMENT_FILE).mkdir(parents=True)
    with pytest.raises(ArtifactError, match="unreadable"):
        read_deployment(root, "demo")


@pytest.mark.parametrize("name", ["../demo", "Demo", ""])
def test_deployment_names_are_validated(root: Path, name: str) -> None:
    with pytest.raises(InvalidName):
        write_deployment(root, name, {"version": 1})
    with pytest.raises(InvalidName):
        read_deployment(root, name)
    assert not root.exists()


def test_a_boolean_deployment_version_is_refused(tmp_path: Path) -> None:
    import json

    from shared.artifacts import read_deployment
    from shared.errors import ArtifactError

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "deployment.json").write_text(json.dumps({"version": True}))
    with pytest.raises(ArtifactError):
        read_deployment(tmp_path, "m")
