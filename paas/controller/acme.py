"""Ordering a certificate for an app's own domains from an ACME CA, with HTTP-01 challenges
answered by the router (router/acme.py).

certbot's `acme` package speaks the protocol (JWS, nonces, orders, polling); it is blocking,
so each of its calls runs in a worker thread. An order: an account for the controller's key
(made once, `acme-account.key` in the TLS folder, 0600; an existing account is reused), a
new ECDSA P-256 key and a CSR for the host names, the order, for each authorization its HTTP-01
challenge's key authorization published under `paas/acme/<token>` in Consul KV, a wait until
the router serves every token (its `/acme`), the answers, then polling until the CA has
validated and issued. The tokens are deleted whatever happens. A failure is `AcmeFailed`, one
sentence that says which name failed and what the CA said (for instance that it does not
resolve to the router).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import josepy
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from paas.consul import ConsulClient
from paas.tokenfile import write_private

log = logging.getLogger("paas.controller.acme")

ACME_PREFIX = "paas/acme/"
ORDER_TIMEOUT_S = 90.0
SERVED_TIMEOUT_S = 15.0


class AcmeFailed(Exception):
    """An order that did not end with a certificate; the message is one sentence."""


@dataclass(frozen=True)
class AcmeSettings:
    directory: str  # the CA's directory URL
    account_key: Path
    email: str = ""
    ca_bundle: Path | None = None  # trust for the CA's own HTTPS (a test CA such as pebble)


def _account_key(path: Path) -> josepy.JWKRSA:
    """The controller's ACME account key, made on first use."""
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_private(path, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise AcmeFailed(f"the ACME account key {path} is not an RSA key")
    return josepy.JWKRSA(key=loaded)


def _client(settings: AcmeSettings) -> client.ClientV2:
    """A client with its account (blocking: run in a thread)."""
    net = client.ClientNetwork(_account_key(settings.account_key), user_agent="paas",
                               verify_ssl=str(settings.ca_bundle) if settings.ca_bundle
                               else True)  # type: ignore[arg-type]  # requests takes a path
    acme = client.ClientV2(client.ClientV2.get_directory(settings.directory, net), net)
    registration = messages.NewRegistration.from_data(
        email=settings.email or None, terms_of_service_agreed=True)
    try:
        acme.new_account(registration)
    except errors.ConflictError as exc:  # this key has an account already
        net.account = messages.RegistrationResource(uri=exc.location,
                                                    body=messages.Registration())
    return acme


def _failure(exc: BaseException) -> str:
    """One sentence from what the acme package raised."""
    if isinstance(exc, errors.ValidationError):
        details = []
        for authzr in exc.failed_authzrs:
            for challb in authzr.body.challenges:
                if challb.error is not None:
                    details.append(f"{authzr.body.identifier.value}: "
                                   f"{challb.error.detail or challb.error.typ}")
        return "the ACME CA could not validate " + ("; ".join(details) or "the domains")
    if isinstance(exc, messages.Error):
        return f"the ACME CA refused: {exc.detail or exc.typ}"
    if isinstance(exc, errors.TimeoutError):
        return "the ACME CA did not issue the certificate in time"
    return f"the ACME CA could not be reached ({type(exc).__name__}: {exc})"[:300]


class Acme:
    """Orders certificates; `challenges` is where the router finds the key authorizations."""

    def __init__(self, settings: AcmeSettings, *, consul: ConsulClient,
                 session: aiohttp.ClientSession, router_url: str) -> None:
        self.settings = settings
        self.consul = consul
        self.session = session
        self.router_url = router_url.rstrip("/")

    async def order(self, hostnames: Sequence[str]) -> tuple[str, str]:
        """(full chain PEM, key PEM) for `hostnames`; AcmeFailed otherwise."""
        key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        csr = crypto_util.make_csr(key, list(hostnames))
        tokens: list[str] = []
        try:
            acme = await asyncio.to_thread(_client, self.settings)
            order = await asyncio.to_thread(acme.new_order, csr)
            answers: list[tuple[messages.ChallengeBody, Any]] = []
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue
                challb = next((c for c in authz.body.challenges
                               if isinstance(c.chall, challenges.HTTP01)), None)
                if challb is None:
                    raise AcmeFailed(f"the ACME CA offers no HTTP-01 challenge for "
                                     f"{authz.body.identifier.value}")
                response, validation = challb.response_and_validation(acme.net.key)
                token = challb.chall.encode("token")
                await self.consul.put_kv(f"{ACME_PREFIX}{token}", validation)
                tokens.append(token)
                answers.append((challb, response))
            await self._served(tokens)
            for challb, response in answers:
                await asyncio.to_thread(acme.answer_challenge, challb, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT_S)
            done = await asyncio.to_thread(acme.poll_and_finalize, order, deadline)
            return done.fullchain_pem, key.decode()
        except AcmeFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - the acme package raises many kinds
            raise AcmeFailed(_failure(exc)) from None
        finally:
            for token in tokens:
                try:
                    await self.consul.delete_kv(f"{ACME_PREFIX}{token}")
                except Exception as exc:  # noqa: BLE001 - best effort; it expires harmlessly
                    log.warning("challenge token not deleted: %s", exc)

    async def _served(self, tokens: list[str]) -> None:
        """Wait until the router answers every token."""
        deadline = time.monotonic() + SERVED_TIMEOUT_S
        while True:
            try:
                async with self.session.get(f"{self.router_url}/acme",
                                            timeout=aiohttp.ClientTimeout(total=3)) as resp:
                    served = set((await resp.json()).get("tokens") or [])
                if set(tokens) <= served:
                    return
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AcmeFailed("the router did not serve the ACME challenges within "
                                 f"{SERVED_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.1)
