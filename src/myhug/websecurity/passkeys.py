"""Passkeys (WebAuthn): register one after a full login, then log in with it alone.

A passkey with user verification is phishing-resistant multi-factor
authentication (NIST SP 800-63B-4, AAL2): the authenticator holds the key and
checks the physician's fingerprint, face or PIN. The ceremonies are
py_webauthn's (CBOR, attestation and signatures are its business); this
module keeps the challenges, the credentials and the trail.

The relying party id is the host of `web.public_url` (e.g. `www.myhug.ch`):
a passkey works only at that address, which is what makes it resist
phishing. A cloned authenticator shows as a signature counter going back,
and is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from myhug.audit.trail import record
from myhug.db.base import utcnow
from myhug.websecurity.forms import LoginRefused
from myhug.websecurity.models import Passkey, PasskeyChallenge

CEREMONY_LIFETIME = timedelta(minutes=5)
REFUSED = "Cette clé d’accès n’est pas reconnue. Connectez-vous avec votre identifiant, votre mot de passe et le code SMS."
KINDS = {"platform": "cet appareil", "security-key": "clé de sécurité"}


class Holder(Protocol):
    """Whose passkeys: a physician, or a practice assistant (the directory's models; an assistant has no GLN)."""

    @property
    def id(self) -> int: ...

    @property
    def gln(self) -> str | None: ...

    @property
    def login(self) -> str | None: ...

    @property
    def display_name(self) -> str: ...


@dataclass(frozen=True)
class RelyingParty:
    """The site passkeys are bound to: the host and origin of `web.public_url`."""

    id: str
    origin: str
    name: str = "myHUG"

    @classmethod
    def of(cls, public_url: str) -> RelyingParty | None:
        """None when `web.public_url` is not set: passkeys then stay off (the address they bind to is unknown)."""
        parts = urlsplit(public_url)
        if not parts.scheme or not parts.hostname:
            return None
        return cls(id=parts.hostname, origin=f"{parts.scheme}://{parts.netloc}")


def _owner(holder: Holder) -> Any:
    """The column naming the holder's passkeys: an assistant is the holder without a GLN."""
    return Passkey.assistant_id == holder.id if holder.gln is None else Passkey.physician_id == holder.id


def _who(holder: Holder) -> dict[str, str]:
    return {"assistant": holder.login or ""} if holder.gln is None else {}


def _ceremony_id(purpose: str, browser_token: str) -> str:
    return hashlib.sha256(f"{purpose}:{browser_token}".encode()).hexdigest()


def _keep_challenge(session: Session, purpose: str, browser_token: str, challenge: bytes) -> None:
    ceremony = _ceremony_id(purpose, browser_token)
    session.execute(delete(PasskeyChallenge).where(
        (PasskeyChallenge.id == ceremony) | (PasskeyChallenge.expires_at <= utcnow())))
    session.add(PasskeyChallenge(id=ceremony, challenge=challenge, expires_at=utcnow() + CEREMONY_LIFETIME))


def _take_challenge(session: Session, purpose: str, browser_token: str) -> bytes:
    """The ceremony's challenge, once: a second answer to it finds none."""
    row = session.get(PasskeyChallenge, _ceremony_id(purpose, browser_token))
    if row is None:
        raise LoginRefused("La demande a expiré. Recommencez.")
    session.delete(row)
    if row.expires_at <= utcnow():
        raise LoginRefused("La demande a expiré. Recommencez.")
    return row.challenge


def registration_options(session: Session, rp: RelyingParty, holder: Holder, browser_token: str) -> str:
    """The options (JSON) for `navigator.credentials.create`: a discoverable credential, user verification required."""
    existing = session.scalars(select(Passkey.credential_id).where(_owner(holder))).all()
    handle = f"myhug:{holder.gln}" if holder.gln else f"myhug:assistant:{holder.login}"
    options = generate_registration_options(
        rp_id=rp.id, rp_name=rp.name, user_name=holder.login or holder.gln or "", user_id=handle.encode(),
        user_display_name=f"Dr {holder.display_name}" if holder.gln else holder.display_name,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED, user_verification=UserVerificationRequirement.REQUIRED),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=c) for c in existing],
    )
    _keep_challenge(session, "register", browser_token, options.challenge)
    return options_to_json(options)


def register(session: Session, rp: RelyingParty, holder: Holder, browser_token: str, credential: str,
             name: str, actor: str) -> Passkey:
    """Check the authenticator's answer and keep the credential; `passkey-added` in the trail."""
    challenge = _take_challenge(session, "register", browser_token)
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.id, expected_origin=rp.origin,
            require_user_verification=True)
    except (WebAuthnException, ValueError) as exc:
        raise LoginRefused("La clé d’accès n’a pas pu être enregistrée. Recommencez.") from exc
    attachment = json.loads(credential).get("authenticatorAttachment")
    kind = "platform" if attachment == "platform" else "security-key"
    now = utcnow()
    assistant = holder.gln is None
    passkey = Passkey(physician_id=None if assistant else holder.id, assistant_id=holder.id if assistant else None,
                      credential_id=verified.credential_id,
                      public_key=verified.credential_public_key, sign_count=verified.sign_count,
                      name=(name.strip() or ("Clé d’accès de " + KINDS[kind]))[:100], kind=kind, created_at=now)
    session.add(passkey)
    session.flush()
    record(session, "passkey-added", actor=actor, physician_gln=holder.gln,
           detail={"passkey": passkey.id, "authenticator": kind, **_who(holder)})
    return passkey


class PasskeyRejected(LoginRefused):
    """A known passkey whose answer did not verify (forged, replayed or cloned): the caller audits it."""

    def __init__(self, passkey: Passkey, reason: str) -> None:
        super().__init__(REFUSED)
        self.passkey = passkey
        self.reason = reason


def login_options(session: Session, rp: RelyingParty, browser_token: str) -> str:
    """The options (JSON) for `navigator.credentials.get`: any of the site's passkeys, user verification required."""
    options = generate_authentication_options(rp_id=rp.id, user_verification=UserVerificationRequirement.REQUIRED)
    _keep_challenge(session, "login", browser_token, options.challenge)
    return options_to_json(options)


def authenticate(session: Session, rp: RelyingParty, browser_token: str, credential: str) -> Passkey:
    """The passkey that answered the login challenge; `LoginRefused` if unknown, forged, or cloned.

    The caller records the `login` (or `login-failed`) with the physician's GLN.
    """
    challenge = _take_challenge(session, "login", browser_token)
    try:
        credential_id = base64url_to_bytes(json.loads(credential).get("rawId", ""))
    except (ValueError, TypeError, AttributeError):
        raise LoginRefused(REFUSED) from None
    passkey = session.scalar(select(Passkey).where(Passkey.credential_id == credential_id))
    if passkey is None:
        raise LoginRefused(REFUSED)
    try:
        verified = verify_authentication_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.id, expected_origin=rp.origin,
            credential_public_key=passkey.public_key, credential_current_sign_count=passkey.sign_count,
            require_user_verification=True)
    except (WebAuthnException, ValueError) as exc:
        # Among the causes: a counter that did not move forward, the sign of a cloned authenticator.
        raise PasskeyRejected(passkey, str(exc)) from exc
    passkey.sign_count = verified.new_sign_count
    passkey.last_used_at = utcnow()
    return passkey


def passkeys_of(session: Session, holder: Holder) -> list[Passkey]:
    """The holder's passkeys, oldest first."""
    return list(session.scalars(select(Passkey).where(_owner(holder)).order_by(Passkey.id)))


def remove_passkey(session: Session, holder: Holder, passkey_id: int, actor: str) -> bool:
    """The physician removes one of their passkeys; False if it is not theirs."""
    passkey = session.scalar(select(Passkey).where(Passkey.id == passkey_id, _owner(holder)))
    if passkey is None:
        return False
    session.delete(passkey)
    record(session, "passkey-removed", actor=actor, physician_gln=holder.gln,
           detail={"passkey": passkey_id, "authenticator": passkey.kind, **_who(holder)})
    return True


def remove_all_passkeys(session: Session, holder: Holder, reason: str, actor: str) -> int:
    """Every passkey of the physician goes (the desk, after a lost phone; a password reset)."""
    count = len(passkeys_of(session, holder))
    if count:
        session.execute(delete(Passkey).where(_owner(holder)))
        record(session, "passkey-removed", actor=actor, physician_gln=holder.gln,
               detail={"passkeys": count, "reason": reason, **_who(holder)})
    return count
