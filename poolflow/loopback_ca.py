"""A one-certificate CA file for Prefect's clients of the command's own API server.

Every Prefect client builds a verifying TLS context when it is made, loading the CA file of
``PREFECT_API_SSL_CERT_FILE`` (by default certifi's bundle of ~150 certificates). A command
makes about eight clients after its server answers (the flow's, the event and log workers',
the version check's, the concurrency service's, the crashed-runs check's), each loading the
whole bundle, on the flow process's CPU just when the flow run starts. The server
``poolflow.local_api`` starts speaks plain HTTP on loopback, so no TLS handshake ever
consults that file: while the command uses its own server, the setting names a file holding
one certificate (the first of certifi's bundle), which loads at once. A configured
``PREFECT_API_URL`` keeps the user's settings untouched.
"""

from __future__ import annotations

from pathlib import Path

from poolflow.tasks.atomic import written_atomically

FILE_NAME = ".poolflow-loopback-ca.pem"
_BEGIN = "-----BEGIN CERTIFICATE-----"
_END = "-----END CERTIFICATE-----"


def first_certificate(bundle: str) -> str:
    """The first PEM certificate of ``bundle``, with its closing line and a newline."""
    start = bundle.index(_BEGIN)
    end = bundle.index(_END, start) + len(_END)
    return bundle[start:end] + "\n"


def loopback_ca_file(home: Path) -> Path:
    """``home``'s one-certificate CA file, written on first use."""
    path = home / FILE_NAME
    if not path.is_file():
        import certifi

        with written_atomically(path) as file:
            file.write(first_certificate(Path(certifi.where()).read_text(encoding="ascii")).encode("ascii"))
    return path
