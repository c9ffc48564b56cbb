"""The server's TLS folder (`<state>/tls`, mode 0700), made once before its first start by
`paas up` or `paas host install --role server`, and kept across restarts:

- `ca.pem`: the cluster CA's certificate, which clients trust (`curl --cacert`); mode 0644;
- `ca.key`: its key, read by the controller, which issues each app its certificate; 0600;
- `seal.key`: the seal key (paas.sealing) the controller seals the apps' keys with for Consul
  KV and the router opens them with; 0600.
"""

from __future__ import annotations

import os
from pathlib import Path

from paas.sealing import create_key_file
from paas.tlscerts import make_ca


def ensure(folder: Path, cluster: str) -> Path:
    """Make what is missing in `folder`; return the CA certificate's path."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_cert, ca_key = folder / "ca.pem", folder / "ca.key"
    if not (ca_cert.exists() and ca_key.exists()):
        cert, key = make_ca(f"paas {cluster} cluster CA")
        fd = os.open(ca_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        ca_cert.write_text(cert)
        ca_cert.chmod(0o644)
    create_key_file(folder / "seal.key")
    return ca_cert
