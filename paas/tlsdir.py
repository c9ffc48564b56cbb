"""The server's TLS folder (`<state>/tls`, mode 0700), made once before its first start by
`paas up` or `paas host install --role server`, and kept across restarts:

- `ca.pem`: the cluster CA's certificate, which clients trust (`curl --cacert`); mode 0644;
- `ca.key`: its key, read by the controller, which issues each app its certificate; 0600;
- `seal.key`: the seal key (paas.sealing) the controller seals the apps' keys with for Consul
  KV and the router opens them with; 0600;
- `gossip.key`: Consul's gossip encryption key (32 random bytes, base64), which every Consul
  agent of the cluster is given and without which an agent cannot join; 0600.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from paas.sealing import create_key_file
from paas.tlscerts import make_ca
from paas.tokenfile import write_private


def ensure(folder: Path, cluster: str) -> Path:
    """Make what is missing in `folder`; return the CA certificate's path."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_cert, ca_key = folder / "ca.pem", folder / "ca.key"
    if not (ca_cert.exists() and ca_key.exists()):
        cert, key = make_ca(f"paas {cluster} cluster CA")
        write_private(ca_key, key)
        ca_cert.write_text(cert)
        ca_cert.chmod(0o644)
    create_key_file(folder / "seal.key")
    gossip = folder / "gossip.key"
    if not gossip.exists():
        write_private(gossip, base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    return ca_cert


def gossip_key(folder: Path) -> str:
    """The cluster's Consul gossip key ("" when the folder has none)."""
    try:
        return (folder / "gossip.key").read_text().strip()
    except FileNotFoundError:
        return ""
