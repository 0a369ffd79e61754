"""The ``modelgate`` command line, run in-process with real files."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import pytest

from model_service.cli import main
from model_service.training import penguins
from tests.conftest import SIGNING_KEY


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("MODEL_REGISTRY", str(root))
    monkeypatch.setenv("MODEL_SIGNING_KEY", SIGNING_KEY.decode())
    return root


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_train_if_missing_is_idempotent(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--demo", "diabetes", "--if-missing"]) == 0
    assert lines(capsys)[0] == {
        "model": "diabetes",
        "version": 1,
        "deployed": True,
        "task": "regression",
        "r2": pytest.approx(0.331093, abs=1e-3),
        "runtime": "onnx",
    }
    assert main(["train", "--demo", "diabetes", "--if-missing"]) == 0
    assert lines(capsys) == [{"model": "diabetes", "skipped": "already registered"}]
    assert sorted(p.name for p in (env / "diabetes").iterdir()) == ["1", "deployment.json"]


def test_register_deploy_verify(env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame, target, model = penguins()
    model.fit(frame.drop(columns=[target]), frame[target])
    joblib.dump(model, tmp_path / "penguins.joblib")
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.sample(frac=0.3, random_state=1).to_csv(tmp_path / "holdout.csv", index=False)
    args = [
        "register",
        "birds",
        "--artifact",
        str(tmp_path / "penguins.joblib"),
        "--train-data",
        str(tmp_path / "train.csv"),
    ]
    assert main([*args, "--target", "species"]) == 0
    assert lines(capsys)[0]["version"] == 1
    assert main([*args, "--target", "species", "--holdout-data", str(tmp_path / "holdout.csv")]) == 0
    second = lines(capsys)[0]
    assert second["version"] == 2
    assert second["deployed"] is False
    assert main(["deploy", "birds", "2"]) == 0
    assert lines(capsys) == [{"model": "birds", "deployment": {"version": 2}}]
    assert main(["models"]) == 0
    assert lines(capsys) == [{"model": "birds", "versions": [1, 2], "deployment": {"version": 2}}]
    assert main(["verify", "birds"]) == 0
    assert [line["verified"] for line in lines(capsys)] == [True, True]
    artifact = env / "birds" / "1" / "model.joblib"
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"\x00")
    assert main(["verify", "birds"]) == 4
    first, _ = lines(capsys)
    assert first == {
        "model": "birds",
        "version": 1,
        "verified": False,
        "reason": "model.joblib does not match its signed sha256",
    }


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["train", "--demo", "diabetes", "--min-r2", "0.99"], 3, "refused by the quality gate"),
        (["deploy", "diabetes", "1"], 4, "not found"),
        (["deploy", "../x", "1"], 4, "invalid model name"),
        (
            ["register", "x", "--artifact", "/nonexistent.joblib", "--train-data", "/n.csv", "--target", "y"],
            4,
            "no such file",
        ),
    ],
)
def test_failures_exit_non_zero_with_one_line(
    env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_invalid_setting_names_the_variable(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QUALITY_GATE_MIN_ACCURACY", "lots")
    assert main(["models"]) == 2
    assert capsys.readouterr().err.startswith("modelgate: invalid setting QUALITY_GATE_MIN_ACCURACY:")


def test_production_refuses_a_placeholder_key(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODELGATE_ENV", "production")
    monkeypatch.setenv("MODEL_SIGNING_KEY", "changeme")
    assert main(["models"]) == 2
    assert "MODEL_SIGNING_KEY" in capsys.readouterr().err


def test_local_mode_generates_a_key_used_by_later_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODEL_REGISTRY", str(tmp_path / "models"))
    monkeypatch.setenv("MODELGATE_LOCAL_SECRETS", str(tmp_path / "secrets.env"))
    monkeypatch.delenv("MODEL_SIGNING_KEY", raising=False)
    assert main(["train", "--demo", "diabetes"]) == 0
    assert (tmp_path / "secrets.env").stat().st_mode & 0o777 == 0o600
    capsys.readouterr()
    assert main(["verify", "diabetes"]) == 0
    assert lines(capsys)[0]["verified"] is True


def test_register_refuses_a_file_that_is_not_joblib(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "model.joblib").write_bytes(b"not a pickle at all")
    (tmp_path / "train.csv").write_text("a,b\n1,2\n")
    argv = ["register", "x", "--artifact", str(tmp_path / "model.joblib"), "--train-data", str(tmp_path / "train.csv")]
    assert main([*argv, "--target", "b"]) == 4
    assert "is not a model saved with joblib" in capsys.readouterr().err


def test_deploy_refuses_a_version_whose_files_fail_verification(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--demo", "diabetes"]) == 0
    assert main(["train", "--demo", "diabetes"]) == 0
    artifact = env / "diabetes" / "2" / "model.joblib"
    artifact.write_bytes(artifact.read_bytes() + b"\x00")
    capsys.readouterr()
    assert main(["deploy", "diabetes", "2"]) == 4
    assert "does not match its signed sha256" in capsys.readouterr().err
    assert json.loads((env / "diabetes" / "deployment.json").read_text()) == {"version": 1}


def test_an_empty_key_variable_counts_as_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODEL_REGISTRY", str(tmp_path / "models"))
    monkeypatch.setenv("MODELGATE_LOCAL_SECRETS", str(tmp_path / "secrets.env"))
    monkeypatch.setenv("MODEL_SIGNING_KEY", "")
    assert main(["train", "--demo", "diabetes"]) == 0
    capsys.readouterr()
    generated = dict(line.split("=", 1) for line in (tmp_path / "secrets.env").read_text().splitlines() if "=" in line)
    monkeypatch.setenv("MODEL_SIGNING_KEY", generated["MODEL_SIGNING_KEY"])
    assert main(["verify", "diabetes"]) == 0  # signed with the generated key, not with ""
