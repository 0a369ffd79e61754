"""OAuth2 client-credentials clients: who may ask ``POST /v1/auth/token`` for a token, with which scopes.

The clients file (``CLIENTS_FILE``) is JSON::

    {"clients": [{"client_id": "ci-bot", "secret_hash": "scrypt:16384:8:1:<salt>:<hash>",
                  "scopes": ["predict"], "tier": "default"}]}

Secrets are stored only as scrypt hashes (``modelgate client-secret`` makes one) and compared in constant
time; an unknown client id costs the same scrypt run as a known one, so timing does not reveal which ids
exist. No Flask here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from shared.tokens import SCOPES, check_secret_hash, hash_secret

CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: Compared against when the client id is unknown, so both paths cost one scrypt.
_DUMMY_HASH = hash_secret("modelgate-dummy-secret", salt=b"0123456789abcdef")


@dataclass(frozen=True)
class Client:
    """A registered client."""

    client_id: str
    secret_hash: str
    scopes: tuple[str, ...]
    tier: str


class ClientsFileError(ValueError):
    """The clients file is malformed; the message says where."""


def load_clients(path: Path) -> dict[str, Client]:
    """Parse and validate the clients file."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ClientsFileError(f"{path}: {exc}") from None
    entries = document.get("clients") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ClientsFileError(f"{path}: expected {{'clients': [...]}}")
    clients: dict[str, Client] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: clients[{index}]"
        if not isinstance(entry, dict):
            raise ClientsFileError(f"{where} is not an object")
        client_id, secret_hash = entry.get("client_id"), entry.get("secret_hash")
        scopes, tier = entry.get("scopes", ["predict"]), entry.get("tier", "default")
        if not isinstance(client_id, str) or not CLIENT_ID.fullmatch(client_id):
            raise ClientsFileError(f"{where}: client_id must match {CLIENT_ID.pattern}")
        if not isinstance(secret_hash, str) or not secret_hash.startswith("scrypt:"):
            raise ClientsFileError(f"{where}: secret_hash must be a scrypt hash (modelgate client-secret)")
        if not isinstance(scopes, list) or not all(s in SCOPES for s in scopes):
            raise ClientsFileError(f"{where}: scopes must be a list drawn from {', '.join(SCOPES)}")
        if not isinstance(tier, str):
            raise ClientsFileError(f"{where}: tier must be a string")
        if client_id in clients:
            raise ClientsFileError(f"{where}: duplicate client_id {client_id!r}")
        clients[client_id] = Client(client_id, secret_hash, tuple(scopes), tier)
    return clients


class ClientRegistry:
    """Checks client credentials."""

    def __init__(self, clients: dict[str, Client]) -> None:
        self.clients = clients

    def authenticate(self, client_id: str, secret: str) -> Client | None:
        """The client, if the secret is right; None otherwise (same cost either way)."""
        client = self.clients.get(client_id)
        ok = check_secret_hash(secret, client.secret_hash if client else _DUMMY_HASH)
        return client if client is not None and ok else None
