"""Certificates: the cluster's CA and what it issues, and the checks a user's pair must pass.

Pure functions over PEM text (the `cryptography` package; nothing is written here). Keys are
ECDSA P-256: small, fast to sign with, and served by every TLS client in use.

- `make_ca` makes the cluster's CA (`paas up`); `issue` signs a certificate for host names
  with it. The router's fallback certificate, served to a name no app has, is `self_signed`.
- `check_pair` is what `paas certs add` runs on a user's certificate and key: each refusal is
  one `CertError` sentence (the key does not match, a host name is not covered, expired, the
  chain is out of order).
- A wildcard covers one label (`*.example.com` covers `a.example.com`, not `example.com` nor
  `a.b.example.com`), as TLS clients match. OpenSSL, so curl and Python, refuses a wildcard
  straight under a single label (`*.localhost`): the cluster CA issues each app its own name.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 90
_BACKDATE = datetime.timedelta(minutes=5)  # clocks of clients a little behind still accept


class CertError(ValueError):
    """A certificate or key that cannot be used; the message is one sentence saying why."""


@dataclass(frozen=True)
class CertInfo:
    """What a certificate says, as the API and `paas certs` show it."""

    hostnames: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    fingerprint: str  # SHA-256 of the leaf's DER, hex
    issuer: str

    def as_json(self) -> dict[str, object]:
        return {"hostnames": list(self.hostnames), "not_before": self.not_before.isoformat(),
                "not_after": self.not_after.isoformat(), "fingerprint": self.fingerprint,
                "issuer": self.issuer}


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             days: int, now: datetime.datetime | None) -> x509.CertificateBuilder:
    start = (now or utcnow()) - _BACKDATE
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days)))


def make_ca(common_name: str, *, days: int = CA_DAYS,
            now: datetime.datetime | None = None) -> tuple[str, str]:
    """A new CA: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(_name(common_name), _name(common_name), key.public_key(), days, now)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return _cert_pem(cert), _key_pem(key)


def _san(name: str) -> x509.GeneralName:
    """A DNS name, or an IP address (a service reached by its address, such as an ACME CA's)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _leaf(builder: x509.CertificateBuilder, hostnames: Sequence[str]) -> x509.CertificateBuilder:
    return (builder
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hostnames]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False))


def issue(ca_cert_pem: str, ca_key_pem: str, hostnames: Sequence[str], *,
          days: int = LEAF_DAYS, now: datetime.datetime | None = None) -> tuple[str, str]:
    """A certificate for `hostnames` signed by the CA: (certificate PEM, key PEM)."""
    if not hostnames:
        raise CertError("a certificate needs at least one host name")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertError("the cluster CA's key is not an ECDSA key")
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _leaf(_builder(_name(hostnames[0]), ca_cert.subject, key.public_key(), days, now),
                    hostnames)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    return _cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key)


def self_signed(hostnames: Sequence[str], *, days: int = CA_DAYS) -> tuple[str, str]:
    """A certificate that signs itself, for `hostnames`: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _leaf(_builder(_name(hostnames[0]), _name(hostnames[0]), key.public_key(), days,
                          None), hostnames).sign(key, hashes.SHA256())
    return _cert_pem(cert), _key_pem(key)


def load_chain(pem: str) -> list[x509.Certificate]:
    """The certificates of a PEM text, the server's first; CertError when there is none."""
    try:
        chain = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        chain = []
    if not chain:
        raise CertError("the certificate file holds no PEM certificate")
    return chain


def _hostnames(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.DNSName))


def info(pem: str) -> CertInfo:
    """What the first certificate of `pem` says."""
    cert = load_chain(pem)[0]
    return CertInfo(hostnames=_hostnames(cert), not_before=cert.not_valid_before_utc,
                    not_after=cert.not_valid_after_utc,
                    fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
                    issuer=cert.issuer.rfc4514_string())


def covers(pattern: str, hostname: str) -> bool:
    """Whether a certificate name (`a.example.com`, `*.example.com`) covers `hostname`."""
    pattern, hostname = pattern.lower().rstrip("."), hostname.lower().rstrip(".")
    if pattern == hostname:
        return True
    if not pattern.startswith("*."):
        return False
    first, _, rest = hostname.partition(".")
    return bool(first) and rest == pattern[2:]


def _load_key(key_pem: str) -> object:
    try:
        return serialization.load_pem_private_key(key_pem.encode(), password=None)
    except TypeError:
        raise CertError("the key is encrypted with a passphrase; give it unencrypted (the "
                        "platform keeps it sealed)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertError("the key file holds no PEM private key") from None


def check_pair(cert_pem: str, key_pem: str, hostnames: Iterable[str], *,
               now: datetime.datetime | None = None) -> CertInfo:
    """The certificate's facts if the pair can serve `hostnames` now; CertError otherwise."""
    chain = load_chain(cert_pem)
    key = _load_key(key_pem)
    leaf = chain[0]
    public = getattr(key, "public_key", None)
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if public is None or public().public_bytes(der, spki) != \
            leaf.public_key().public_bytes(der, spki):
        raise CertError("the key does not match the certificate")
    found = info(cert_pem)
    now = now or utcnow()
    if now >= found.not_after:
        raise CertError(f"the certificate expired on {found.not_after:%Y-%m-%d %H:%M} UTC")
    if now < found.not_before:
        raise CertError(f"the certificate is not valid before "
                        f"{found.not_before:%Y-%m-%d %H:%M} UTC")
    for hostname in hostnames:
        if not any(covers(name, hostname) for name in found.hostnames):
            names = ", ".join(found.hostnames) or "no DNS name"
            raise CertError(f"the certificate does not cover {hostname} (it covers {names})")
    for n, (cert, issuer) in enumerate(zip(chain, chain[1:]), start=1):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise CertError(f"the chain is out of order: certificate {n} is not issued by "
                            f"certificate {n + 1} (give the server's certificate first, then "
                            "each issuer in turn)") from None
    return found
