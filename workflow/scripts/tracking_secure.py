"""The secrets of `tracking_server.py start --secure`: MLflow's basic authentication and a
password on PostgreSQL's superuser.

ROOT then holds, each file 0600: credentials (MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, so `export $(cat ROOT/credentials)` gives a job the login),
basic_auth.ini (MLflow's auth config, through MLFLOW_AUTH_CONFIG_PATH; the users live in the
PostgreSQL database mlflow_auth) and pgpass (libpq's password file, through PGPASSFILE, for the
MLflow server and psql). Generated once, reused by every restart. No password goes on a command
line (every user of the node reads those with `ps`) or to stderr; PostgreSQL receives only the
password's SCRAM verifier, computed here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

ADMIN = "admin"  # MLflow's admin user: it sees and writes every experiment
AUTH_DATABASE = "mlflow_auth"
USERNAME, PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)


def credentials(root: Path) -> Path:
    return root / "credentials"


def pgpass(root: Path) -> Path:
    return root / "pgpass"


def auth_ini(root: Path) -> Path:
    return root / "basic_auth.ini"


def made_secure(root: Path) -> bool:
    return credentials(root).exists() or pgpass(root).exists()


def write_private(path: Path, text: str) -> None:
    """Created 0600, so that no other user reads it even for an instant, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
        out.write(text)


def _read_or_make(path: Path, parse) -> str:
    try:
        return parse(path.read_text())
    except (OSError, ValueError, IndexError):
        return secrets.token_urlsafe(32)  # no ':', '\\' nor '%' to escape in any file


def write_secrets(root: Path, socket_dir: Path, port: int, superuser: str, auth_uri: str) -> str:
    """Write the three files (reusing the passwords they hold); return PostgreSQL's password."""
    login = _read_or_make(
        credentials(root), lambda text: dict(line.split("=", 1) for line in text.split())[PASSWORD]
    )
    pg = _read_or_make(pgpass(root), lambda text: text.strip().rsplit(":", 1)[1])
    write_private(credentials(root), f"{USERNAME}={ADMIN}\n{PASSWORD}={login}\n")
    host = re.sub(r"([:\\])", r"\\\1", str(socket_dir))  # pgpass escapes ':' and '\'
    write_private(pgpass(root), f"{host}:{port}:*:{superuser}:{pg}\n")
    # default_permission: what a user other than the admin may do where nobody granted more.
    write_private(
        auth_ini(root),
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {auth_uri.replace('%', '%%')}\n"  # configparser interpolates '%'
        f"admin_username = {ADMIN}\n"
        f"admin_password = {login}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
    )
    return pg


def server_env(root: Path) -> dict[str, str]:
    """For the MLflow server and psql: where the secrets are, never the secrets themselves,
    but the key that signs the auth app's CSRF tokens (all its workers must share it)."""
    return {
        "PGPASSFILE": str(pgpass(root)),
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini(root)),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
    }


def scram_verifier(password: str) -> str:
    """What PostgreSQL stores for a scram-sha-256 password (RFC 5802 and 7677), so that
    `ALTER ROLE ... PASSWORD` carries no password, whatever the server logs."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    parts = (salt, hashlib.sha256(client_key).digest(), server_key)
    salt64, stored, server = (base64.b64encode(part).decode() for part in parts)
    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{salt64}${stored}:{server}"


def scram_hba(text: str) -> str:
    """pg_hba.conf with each `local ... trust` line asking the password instead."""
    return re.sub(r"^(local\s.*\s)trust[ \t]*$", r"\1scram-sha-256", text, flags=re.MULTILINE)
