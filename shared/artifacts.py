"""The model artifact format: one folder per model version, verified before anything in it is unpickled.

    MODEL_REGISTRY/<name>/<version>/
        model.joblib     the fitted estimator or Pipeline (joblib, i.e. pickle: runs code when loaded)
        model.onnx       the final estimator compiled by skl2onnx, when conversion and parity succeeded
        metadata.json    task, classes, feature contract, metrics, library versions, file hashes, signature
    MODEL_REGISTRY/<name>/deployment.json   which version serves (and an optional canary)

``metadata.json`` lists the sha256 of every file and is signed with HMAC-SHA256 under
``MODEL_SIGNING_KEY`` over its canonical JSON (sorted keys, no whitespace, the ``signature`` member left
out). ``load_version`` checks the signature, then each file's hash on the very bytes it then loads, and
only then calls ``joblib.load``: a flipped byte, a swapped file or a forged metadata file is refused
before any of its code can run. Names and versions must match strict patterns and are the only client
text that ever becomes part of a path.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import ArtifactError, HashMismatch, InvalidName, SignatureMismatch

FORMAT_VERSION = 1
ARTIFACT_FILE = "model.joblib"
ONNX_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
DEPLOYMENT_FILE = "deployment.json"

NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
VERSION_PATTERN = r"^[1-9][0-9]{0,8}$"
_NAME = re.compile(NAME_PATTERN)
_VERSION = re.compile(VERSION_PATTERN)
#: Largest artifact file read into memory for verification.
MAX_ARTIFACT_BYTES = 2 * 1024 * 1024 * 1024


def validate_name(name: str) -> str:
    """A model name: lowercase letters, digits and inner hyphens, 1 to 63 characters (a DNS label)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidName("model name", str(name), NAME_PATTERN)
    return name


def validate_version(version: str | int) -> int:
    """A version: a positive integer without leading zeros, at most nine digits."""
    text = str(version)
    if isinstance(version, bool) or not _VERSION.fullmatch(text):
        raise InvalidName("model version", text, VERSION_PATTERN)
    return int(text)


def canonical_json(value: Any) -> bytes:
    """The byte form that is signed: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sign(metadata: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA256 (hex) of the metadata without its ``signature`` member."""
    unsigned = {k: v for k, v in metadata.items() if k != "signature"}
    return hmac.new(key, canonical_json(unsigned), hashlib.sha256).hexdigest()


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def version_dir(root: Path, name: str, version: str | int) -> Path:
    """The folder of one version, from validated parts only."""
    return Path(root) / validate_name(name) / str(validate_version(version))


def _read_regular_file(path: Path, limit: int = MAX_ARTIFACT_BYTES) -> bytes:
    """Read a file that must be a regular file, not a link (a link could point anywhere)."""
    try:
        # O_NONBLOCK: opening a FIFO planted in the registry would otherwise wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ArtifactError(f"{path.name} is missing") from None
    except OSError as exc:
        raise ArtifactError(f"{path.name} cannot be opened: {exc.strerror}") from None
    # Checked before fdopen, which raises IsADirectoryError (not ours) for a folder.
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ArtifactError(f"{path.name} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ArtifactError(f"{path.name} is larger than {limit} bytes")
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_metadata(directory: Path, key: bytes) -> dict[str, Any]:
    """The version's metadata, after its signature is checked."""
    raw = _read_regular_file(directory / METADATA_FILE, limit=64 * 1024 * 1024)
    try:
        # NaN and Infinity are refused here: they are not JSON, and ``sign`` could not canonicalise them.
        metadata = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError included
        raise ArtifactError("metadata.json is not valid JSON") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("signature"), str):
        raise SignatureMismatch("metadata.json carries no signature")
    if not hmac.compare_digest(sign(metadata, key), metadata["signature"]):
        raise SignatureMismatch("metadata.json signature does not match MODEL_SIGNING_KEY")
    return metadata


@dataclass(frozen=True)
class VerifiedArtifact:
    """A version whose files matched their signed hashes; ``estimator`` is safe to use."""

    metadata: dict[str, Any]
    estimator: Any
    onnx: bytes | None


def verify_files(directory: Path, key: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Check the signature, then every listed file against its signed sha256; returns metadata and bytes."""
    metadata = read_metadata(directory, key)
    files = metadata.get("files")
    if not isinstance(files, dict) or ARTIFACT_FILE not in files:
        raise ArtifactError("metadata.json lists no model file")
    contents: dict[str, bytes] = {}
    for filename, expected in files.items():
        if filename not in (ARTIFACT_FILE, ONNX_FILE):
            raise ArtifactError(f"metadata.json lists an unexpected file {filename!r}")
        data = _read_regular_file(directory / filename)
        if not hmac.compare_digest(sha256_hex(data), str(expected)):
            raise HashMismatch(f"{filename} does not match its signed sha256")
        contents[filename] = data
    return metadata, contents


def check_identity(name: str, version: int, metadata: dict[str, Any]) -> None:
    """Signed metadata that belongs in this folder (not a copy of another version), with a feature contract
    matching its fingerprint. Both services call it on every version they load."""
    from shared.contracts import fingerprint

    if metadata.get("name") != name or metadata.get("version") != version:
        raise ArtifactError("metadata names another model or version (a copied folder?)")
    contract = metadata.get("contract")
    if not isinstance(contract, dict) or fingerprint(contract) != metadata.get("contract_fingerprint"):
        raise ArtifactError("feature contract does not match its fingerprint")


def load_version(directory: Path, key: bytes) -> VerifiedArtifact:
    """Verify signature and hashes, then unpickle. Raises ``ArtifactError`` (or a subclass) otherwise."""
    import joblib

    metadata, contents = verify_files(directory, key)
    # Loaded from the bytes that were hashed, never from the path again: no window for a swap.
    try:
        estimator = joblib.load(io.BytesIO(contents[ARTIFACT_FILE]))
    except Exception as exc:
        raise ArtifactError(f"model.joblib could not be loaded: {type(exc).__name__}") from exc
    return VerifiedArtifact(metadata=metadata, estimator=estimator, onnx=contents.get(ONNX_FILE))


def write_version(
    root: Path,
    name: str,
    version: int,
    estimator: Any,
    metadata: dict[str, Any],
    key: bytes,
    onnx: bytes | None = None,
) -> dict[str, Any]:
    """Write a new version atomically (a temporary folder renamed into place); returns the signed metadata."""
    import joblib

    final = version_dir(root, name, version)
    if final.exists():
        raise ArtifactError(f"version {version} of model {name!r} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer, compress=3)
    blobs = {ARTIFACT_FILE: buffer.getvalue()}
    if onnx is not None:
        blobs[ONNX_FILE] = onnx
    signed = dict(metadata, format=FORMAT_VERSION, name=name, version=version)
    signed["files"] = {filename: sha256_hex(data) for filename, data in blobs.items()}
    signed.pop("signature", None)
    signed["signature"] = sign(signed, key)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=final.parent))
    try:
        for filename, data in blobs.items():
            (staging / filename).write_bytes(data)
        (staging / METADATA_FILE).write_text(json.dumps(signed, indent=2, sort_keys=True, allow_nan=False) + "\n")
        os.chmod(staging, 0o755)  # noqa: S103 - services run as another user and only read models
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return signed


def list_versions(root: Path, name: str) -> list[int]:
    """The versions of a model present on disk, ascending (folders with valid version names only)."""
    base = Path(root) / validate_name(name)
    if not base.is_dir():
        return []
    versions = []
    for entry in base.iterdir():
        if entry.is_dir() and _VERSION.fullmatch(entry.name) and (entry / METADATA_FILE).is_file():
            versions.append(int(entry.name))
    return sorted(versions)


def list_models(root: Path) -> list[str]:
    """Model names present in the registry, sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(entry.name for entry in root.iterdir() if entry.is_dir() and _NAME.fullmatch(entry.name))


def read_deployment(root: Path, name: str) -> dict[str, Any] | None:
    """The deployment record of a model (``{"version": 2, "canary": {"version": 3, "weight": 10}}``)."""
    path = Path(root) / validate_name(name) / DEPLOYMENT_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise ArtifactError(f"{DEPLOYMENT_FILE} of model {name!r} is unreadable") from None
    version = record.get("version") if isinstance(record, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArtifactError(f"{DEPLOYMENT_FILE} of model {name!r} names no version")
    return dict(record)


def write_deployment(root: Path, name: str, record: dict[str, Any]) -> None:
    """Replace a model's deployment record atomically."""
    base = Path(root) / validate_name(name)
    base.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".deployment-", dir=base)
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, base / DEPLOYMENT_FILE)
