"""The ``modelgate`` command line: train the demo models, register your own, list, deploy and verify.

Deployments: ``deploy NAME VERSION``, ``canary NAME VERSION --weight W``, ``promote NAME``, ``rollback NAME``.

It reads the same environment variables as the services (``MODEL_REGISTRY``, ``MODEL_SIGNING_KEY``,
``QUALITY_GATE_MIN_ACCURACY``, ``QUALITY_GATE_MIN_R2``; in local mode the generated secrets file).
Exit status: 0 done, 2 bad usage or settings, 3 refused by the quality gate, 4 any other refusal.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
from pathlib import Path
from typing import Any

from model_service.config import ModelServiceSettings
from model_service.registry import Registry
from model_service.training import DEMOS, QualityGate, QualityGateFailed, register_model, train_demo
from shared import artifacts
from shared.config import SettingsError, load_settings
from shared.errors import ModelgateError
from shared.tokens import SCOPES, TokenSettings, hash_secret, issue_token

CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelgate", description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a demo model on data bundled with its package and register it")
    train.add_argument("--demo", required=True, choices=[*DEMOS, "all"], help="which demo model, or all")
    train.add_argument("--if-missing", action="store_true", help="skip a demo that already has a version")
    _registration_options(train)

    register = commands.add_parser("register", help="register your own fitted estimator or Pipeline")
    register.add_argument("name", help="model name (lowercase letters, digits, hyphens)")
    register.add_argument("--artifact", required=True, type=Path, help="your fitted model, saved with joblib.dump")
    register.add_argument("--train-data", required=True, type=Path, help="CSV the model was trained on")
    register.add_argument("--target", required=True, help="the target column of the CSV")
    register.add_argument("--holdout-data", type=Path, help="CSV of held-out rows to score on (else 20%% split)")
    _registration_options(register)

    commands.add_parser("models", help="list models, versions and deployments")

    deploy = commands.add_parser("deploy", help="make VERSION serve NAME (any canary is removed)")
    deploy.add_argument("name")
    deploy.add_argument("version")

    canary = commands.add_parser("canary", help="send a share of NAME's traffic to VERSION")
    canary.add_argument("name")
    canary.add_argument("version")
    canary.add_argument("--weight", required=True, type=float, help="percent of traffic, in (0, 100]; 0 removes it")

    promote = commands.add_parser("promote", help="make NAME's canary its deployed version")
    promote.add_argument("name")

    rollback = commands.add_parser("rollback", help="deploy NAME's previously deployed version again")
    rollback.add_argument("name")

    verify = commands.add_parser("verify", help="check signatures and hashes of a model's versions")
    verify.add_argument("name")
    verify.add_argument("version", nargs="?")

    token = commands.add_parser("token", help="print a signed JWT for the gateway (HS256 with JWT_SECRET)")
    token.add_argument(
        "--sub", default="local-user", help="the token's subject: who is calling (rate limits count per sub)"
    )
    token.add_argument("--scope", default="predict", help='space-separated scopes, e.g. "predict admin"')
    token.add_argument("--tier", help="rate-limit tier (RATE_LIMIT_TIERS on the gateway)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")

    client = commands.add_parser("client-secret", help="make a client secret and its clients-file entry")
    client.add_argument("client_id")
    client.add_argument("--scope", default="predict", help='space-separated scopes, e.g. "predict admin"')
    client.add_argument("--tier", default="default")
    return parser


def _registration_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--deploy", action="store_true", help="deploy the new version (the first one always is)")
    parser.add_argument("--min-accuracy", type=float, help="quality gate for classifiers (QUALITY_GATE_MIN_ACCURACY)")
    parser.add_argument("--min-r2", type=float, help="quality gate for regressors (QUALITY_GATE_MIN_R2)")


def _gate(args: argparse.Namespace, settings: ModelServiceSettings) -> QualityGate:
    return QualityGate(
        min_accuracy=settings.quality_gate_min_accuracy if args.min_accuracy is None else args.min_accuracy,
        min_r2=settings.quality_gate_min_r2 if args.min_r2 is None else args.min_r2,
    )


def _summary(metadata: dict[str, Any]) -> dict[str, Any]:
    metrics = metadata["metrics"]
    return {
        "model": metadata["name"],
        "version": metadata["version"],
        "deployed": bool(metadata.get("deployed")),
        "task": metadata["task"],
        metrics["primary"]: metrics[metrics["primary"]],
        "runtime": metadata["onnx"]["runtime"],
    }


def _routing(record: dict[str, Any]) -> dict[str, Any]:
    """What a deployment record routes to, as ``models`` shows it; the rollback history stays in the file."""
    return {k: v for k, v in record.items() if k != "history"}


def _read_csv(path: Path) -> Any:
    import pandas as pd

    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ModelgateError(f"cannot read {path}: {exc}") from None


def run(args: argparse.Namespace, settings: ModelServiceSettings) -> int:
    """Carry out one parsed command; prints JSON lines on stdout."""
    registry = Registry(settings.model_registry, settings.signing_key())
    if args.command == "train":
        names = list(DEMOS) if args.demo == "all" else [args.demo]
        for name in names:
            if args.if_missing and artifacts.list_versions(registry.root, name):
                print(json.dumps({"model": name, "skipped": "already registered"}))
                continue
            print(json.dumps(_summary(train_demo(registry, name, gate=_gate(args, settings), deploy=args.deploy))))
        return 0
    if args.command == "register":
        import joblib

        artifacts.validate_name(args.name)
        # The user's own file, loaded on the user's own machine by the user's command.
        try:
            estimator = joblib.load(args.artifact)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a bad file raises, the answer is the same
            raise ModelgateError(f"{args.artifact} is not a model saved with joblib ({type(exc).__name__})") from None
        holdout = _read_csv(args.holdout_data) if args.holdout_data else None
        metadata = register_model(
            registry,
            args.name,
            estimator,
            _read_csv(args.train_data),
            args.target,
            holdout=holdout,
            gate=_gate(args, settings),
            deploy=args.deploy,
        )
        print(json.dumps(_summary(metadata)))
        return 0
    if args.command == "models":
        for name in registry.models():
            print(
                json.dumps(
                    {
                        "model": name,
                        "versions": registry.versions(name),
                        "deployment": registry.deployment(name),
                    }
                )
            )
        return 0
    if args.command in ("deploy", "canary", "promote", "rollback"):
        if args.command == "deploy":
            record = registry.deploy(args.name, artifacts.validate_version(args.version))
        elif args.command == "canary":
            record = registry.set_canary(args.name, artifacts.validate_version(args.version), args.weight)
        elif args.command == "promote":
            record = registry.promote(args.name)
        else:
            record = registry.rollback(args.name)
        print(json.dumps({"model": args.name, "deployment": _routing(record)}))
        return 0
    if args.command == "verify":
        versions = [artifacts.validate_version(args.version)] if args.version else registry.versions(args.name)
        failed = 0
        for version in versions:
            try:
                registry.load(args.name, version, use_onnx=False)
                print(json.dumps({"model": args.name, "version": version, "verified": True}))
            except ModelgateError as exc:
                failed += 1
                print(json.dumps({"model": args.name, "version": version, "verified": False, "reason": exc.detail}))
        return 4 if failed else 0
    raise AssertionError(args.command)  # pragma: no cover - argparse rejects unknown commands


def _credentials(args: argparse.Namespace) -> int:
    """``token`` and ``client-secret``: they need the gateway's settings, not the registry's."""
    scopes = args.scope.split()
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ModelgateError(f"unknown scope(s) {' '.join(unknown) or '(none)'}; choose from {', '.join(SCOPES)}")
    if args.command == "token":
        if not 1 <= args.ttl <= 30 * 86400:
            raise ModelgateError("--ttl must be between 1 second and 30 days")
        settings = load_settings(TokenSettings)
        print(
            issue_token(
                secret=settings.secret(),
                subject=args.sub,
                scopes=scopes,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                ttl_seconds=args.ttl,
                tier=args.tier,
            )
        )
        return 0
    if not CLIENT_ID.fullmatch(args.client_id):
        raise ModelgateError(f"client id must match {CLIENT_ID.pattern}")
    secret = secrets.token_urlsafe(32)
    entry = {"client_id": args.client_id, "secret_hash": hash_secret(secret), "scopes": scopes, "tier": args.tier}
    print(json.dumps({"client_secret": secret, "clients_file_entry": entry}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``modelgate`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command in ("token", "client-secret"):
            return _credentials(args)
        settings = load_settings(ModelServiceSettings)
        return run(args, settings)
    except SettingsError:  # its one line is already on stderr
        return 2
    except QualityGateFailed as exc:
        print(f"modelgate: refused by the quality gate: {exc.detail}", file=sys.stderr)
        return 3
    except ModelgateError as exc:
        print(f"modelgate: {exc.detail}", file=sys.stderr)
        return 4
    except FileNotFoundError as exc:
        print(f"modelgate: no such file: {exc.filename}", file=sys.stderr)
        return 4


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
