"""paas.tlscerts and paas.sealing: the cluster CA, what it issues, the checks a user's pair
passes (each refusal one sentence), and keys sealed for Consul KV."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest

from paas import tlscerts
from paas.sealing import SealError, Sealer, create_key_file
from paas.tlscerts import CertError, check_pair, covers, issue, make_ca

HOSTS = ["hello.example.com", "www.example.com"]


@pytest.fixture(scope="module")
def ca() -> tuple[str, str]:
    return make_ca("paas test CA")


def test_an_issued_certificate_is_trusted_by_pythons_ssl_through_the_ca(
        ca: tuple[str, str], tmp_path: Path) -> None:
    cert, key = issue(*ca, HOSTS)
    found = check_pair(cert, key, HOSTS)
    assert found.hostnames == tuple(HOSTS) and found.issuer == "CN=paas test CA"
    assert datetime.timedelta(days=89) < found.not_after - tlscerts.utcnow() \
        < datetime.timedelta(days=91)
    # The CA verifies it as a TLS client would (OpenSSL's chain building, not ours).
    (tmp_path / "ca.pem").write_text(ca[0])
    (tmp_path / "leaf.pem").write_text(cert + key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "leaf.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    a, b = ssl.MemoryBIO(), ssl.MemoryBIO()
    c, s = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client.wrap_bio(a, b, server_hostname="www.example.com")
    tls_server = server.wrap_bio(c, s, server_side=True)
    for _ in range(10):  # shuttle the handshake's bytes both ways
        for end in (tls_client, tls_server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        c.write(b.read())
        a.write(s.read())
    assert tls_client.version() is not None and tls_server.version() is not None


def test_a_key_of_another_certificate_is_refused(ca: tuple[str, str]) -> None:
    cert, _ = issue(*ca, HOSTS)
    _, other_key = issue(*ca, HOSTS)
    with pytest.raises(CertError, match="^the key does not match the certificate$"):
        check_pair(cert, other_key, HOSTS)


def test_a_host_name_the_certificate_does_not_cover_is_named(ca: tuple[str, str]) -> None:
    cert, key = issue(*ca, ["hello.example.com"])
    with pytest.raises(CertError, match=r"does not cover api\.example\.com \(it covers "
                                        r"hello\.example\.com\)"):
        check_pair(cert, key, ["hello.example.com", "api.example.com"])


def test_expired_and_not_yet_valid_certificates_are_refused(ca: tuple[str, str]) -> None:
    past = tlscerts.utcnow() - datetime.timedelta(days=100)
    cert, key = issue(*ca, HOSTS, days=10, now=past)
    with pytest.raises(CertError, match="^the certificate expired on 20"):
        check_pair(cert, key, HOSTS)
    future = tlscerts.utcnow() + datetime.timedelta(days=3)
    cert, key = issue(*ca, HOSTS, now=future)
    with pytest.raises(CertError, match="^the certificate is not valid before 20"):
        check_pair(cert, key, HOSTS)


def test_a_chain_out_of_order_is_refused_and_in_order_accepted(ca: tuple[str, str]) -> None:
    cert, key = issue(*ca, HOSTS)
    assert check_pair(cert + ca[0], key, HOSTS).hostnames == tuple(HOSTS)
    with pytest.raises(CertError, match="^the chain is out of order: certificate 1 is not "
                                        "issued by certificate 2"):
        check_pair(cert + make_ca("another CA")[0], key, HOSTS)


@pytest.mark.parametrize("cert_text, key_text, sentence", [
    ("not a pem", None, "^the certificate file holds no PEM certificate$"),
    (None, "not a key", "^the key file holds no PEM private key$"),
])
def test_files_that_are_not_pem_get_one_sentence(ca: tuple[str, str], cert_text: str | None,
                                                 key_text: str | None, sentence: str) -> None:
    cert, key = issue(*ca, HOSTS)
    with pytest.raises(CertError, match=sentence):
        check_pair(cert_text or cert, key_text or key, HOSTS)


def test_an_encrypted_key_is_refused_with_what_to_do(ca: tuple[str, str]) -> None:
    from cryptography.hazmat.primitives import serialization

    cert, key = issue(*ca, HOSTS)
    locked = serialization.load_pem_private_key(key.encode(), None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")).decode()
    with pytest.raises(CertError, match="encrypted with a passphrase; give it unencrypted"):
        check_pair(cert, locked, HOSTS)


@pytest.mark.parametrize("pattern, host, expected", [
    ("a.example.com", "A.example.com", True),
    ("*.example.com", "a.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "a.b.example.com", False),
    ("*.example.com", ".example.com", False),
    ("a.example.com", "b.example.com", False),
])
def test_a_wildcard_covers_one_label(pattern: str, host: str, expected: bool) -> None:
    assert covers(pattern, host) is expected


def test_sealed_keys_open_only_with_the_same_seal_key(tmp_path: Path) -> None:
    create_key_file(tmp_path / "seal.key")
    first = (tmp_path / "seal.key").read_bytes()
    create_key_file(tmp_path / "seal.key")  # idempotent: the key is kept
    assert (tmp_path / "seal.key").read_bytes() == first
    assert (tmp_path / "seal.key").stat().st_mode & 0o777 == 0o600
    sealer = Sealer.from_file(tmp_path / "seal.key")
    sealed = sealer.seal(b"-----BEGIN PRIVATE KEY-----")
    assert b"PRIVATE" not in sealed.encode() and sealer.unseal(sealed) == \
        b"-----BEGIN PRIVATE KEY-----"
    create_key_file(tmp_path / "other.key")
    with pytest.raises(SealError, match="does not open with this cluster's seal key"):
        Sealer.from_file(tmp_path / "other.key").unseal(sealed)
    with pytest.raises(SealError, match="^cannot read the seal key"):
        Sealer.from_file(tmp_path / "missing.key")
