"""Recipient keys and certificates: import (bound by address, pinned by fingerprint), remove, list, choose,
and each node's copy of the OpenPGP keys.

The database is the one list of pinned keys, public key included. A node's
GnuPG home is a cache of it: a key imported on one node (`myhug key import`)
reaches the keyring of any other node that needs it, at first use
(`local_key`), instead of that node's workers finding no key and applying
`relay.no_key_policy`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from myhug.audit.trail import record
from myhug.crypto.openpgp import KeyInfo, KeyRefused, OpenPgp
from myhug.crypto.smime import CertificateInfo, CertificateRefused, ca_bundle, inspect_certificate
from myhug.db.base import utcnow
from myhug.directory.models import Physician
from myhug.hin.models import RecipientKey

log = logging.getLogger(__name__)


def _holder(session: Session, addresses: tuple[str, ...] | list[str], domain: str | None,
            what: str) -> Physician | None:
    """The physician whose HIN address the key or certificate names; None for a domain gateway's (`domain`)."""
    if domain is not None:
        return None
    physician = session.scalar(select(Physician).where(Physician.hin_address.in_(addresses)))
    if physician is None:
        raise KeyRefused(f"no physician with HIN address {', '.join(addresses) or f'(none in the {what})'}; "
                         f"register the physician first, or use --domain for a domain gateway {what}")
    return physician


def import_recipient_key(session: Session, pgp: OpenPgp, data: bytes, domain: str | None = None,
                         actor: str = "cli", smime_ca_file: str | None = None) -> RecipientKey:
    """Import a public key for the physician whose HIN address is one of its user ids, or for `domain`.

    A PEM X.509 certificate goes to `import_certificate` (S/MIME). It decides
    who can decrypt patient data, so it is audited (`key-imported`, with the
    fingerprint).
    """
    if b"-----BEGIN CERTIFICATE-----" in data:
        return import_certificate(session, data, domain, actor, smime_ca_file)
    scanned = pgp.scan(data)
    if len(scanned) != 1:
        raise KeyRefused("the file must hold exactly one OpenPGP public key" if scanned else "no OpenPGP public key found in the file")
    candidate = scanned[0]
    if not candidate.usable:
        raise KeyRefused(f"key {candidate.fingerprint}: {candidate.problem}")
    physician = _holder(session, candidate.addresses, domain, "key")
    existing = session.scalar(select(RecipientKey).where(RecipientKey.fingerprint == candidate.fingerprint))
    if existing is not None:
        raise KeyRefused(f"key {candidate.fingerprint} is already imported for {existing.address}")
    address = (physician.hin_address if physician else (domain or "").lower()) or ""
    # The newest usable key is the one encrypted to: a new key for an address replaces the older ones.
    replaced = list(session.scalars(select(RecipientKey.fingerprint).where(RecipientKey.address == address)))
    info = pgp.import_key(data)
    key = RecipientKey(
        fingerprint=info.fingerprint,
        physician_id=physician.id if physician else None,
        address=address,
        kind="personal" if physician else "domain",
        expires_at=info.expires_at,
        imported_at=utcnow(),
        public_key=pgp.export_public(info.fingerprint),  # what gpg kept of the file: the key, and nothing else
    )
    session.add(key)
    session.flush()
    record(session, "key-imported", actor=actor, physician_gln=physician.gln if physician else None,
           detail={"fingerprint": key.fingerprint, "kind": key.kind, "address": key.address,
                   "expires_at": key.expires_at.isoformat() if key.expires_at else None, "replaces": replaced})
    return key


def import_certificate(session: Session, data: bytes, domain: str | None, actor: str,
                       ca_file: str | None) -> RecipientKey:
    """Pin a physician's (or an HIN domain gateway's) S/MIME certificate, after the checks that make it safe to
    encrypt to: the chain to `crypto.smime_ca_file`, the dates, keyEncipherment, and the address in its
    subjectAltName (the physician's HIN address, or an address of `domain`)."""
    try:
        info = inspect_certificate(data, ca_bundle(ca_file))
    except CertificateRefused as exc:
        raise KeyRefused(str(exc)) from None
    if not info.usable:
        raise KeyRefused(f"certificate {info.fingerprint[:16]}: {info.problem}")
    physician = _holder(session, info.addresses, domain, "certificate")
    if domain is not None and not any(a.endswith("@" + domain.lower()) for a in info.addresses):
        raise KeyRefused(f"the certificate names no address of {domain} ({', '.join(info.addresses) or 'none'})")
    if session.scalar(select(RecipientKey).where(RecipientKey.fingerprint == info.fingerprint)) is not None:
        raise KeyRefused(f"certificate {info.fingerprint[:16]} is already imported")
    address = (physician.hin_address if physician else (domain or "").lower()) or ""
    key = RecipientKey(fingerprint=info.fingerprint, physician_id=physician.id if physician else None,
                       address=address, kind="personal" if physician else "domain", expires_at=info.not_after,
                       imported_at=utcnow(), public_key=info.pem.decode(), envelope="smime")
    session.add(key)
    session.flush()
    record(session, "key-imported", actor=actor, physician_gln=physician.gln if physician else None,
           detail={"fingerprint": key.fingerprint, "kind": key.kind, "address": key.address, "envelope": "smime",
                   "expires_at": key.expires_at.isoformat() if key.expires_at else None})
    return key


def choose_certificate(session: Session, physician_id: int, hin_address: str,
                       cas: list[x509.Certificate]) -> tuple[CertificateInfo | None, str]:
    """The certificate to encrypt to: the physician's newest usable one, else the HIN domain gateway's.

    Each is checked again now (dates, chain), as a key is. Returns (certificate or None, explanation).
    """
    problems = []
    personal = session.scalars(select(RecipientKey).where(
        RecipientKey.physician_id == physician_id, RecipientKey.kind == "personal", RecipientKey.envelope == "smime")
        .order_by(RecipientKey.imported_at.desc())).all()
    domain = session.scalars(select(RecipientKey).where(
        RecipientKey.kind == "domain", RecipientKey.address == hin_address.rpartition("@")[2],
        RecipientKey.envelope == "smime")).all()
    for label, rows in (("personal certificate", personal), ("domain certificate", domain)):
        for row in rows:
            info = inspect_certificate((row.public_key or "").encode(), cas)
            if info.usable:
                return info, label
            problems.append(f"{label} {row.fingerprint[:16]}: {info.problem}")
    if not personal:
        problems.insert(0, "no personal certificate")
    return None, "; ".join(problems)


def remove_recipient_key(session: Session, pgp: OpenPgp, fingerprint: str, actor: str = "cli") -> RecipientKey:
    """Stop encrypting to a key (lost, compromised, or the physician left HIN); audited `key-removed`."""
    wanted = fingerprint.replace(" ", "").upper()
    key = session.scalar(select(RecipientKey).where(RecipientKey.fingerprint == wanted))
    if key is None:
        raise KeyRefused(f"no imported key with fingerprint {wanted}")
    physician = session.get(Physician, key.physician_id) if key.physician_id else None
    session.delete(key)
    session.flush()
    if key.envelope == "openpgp":
        pgp.delete_key(wanted)
    record(session, "key-removed", actor=actor, physician_gln=physician.gln if physician else None,
           detail={"fingerprint": wanted, "kind": key.kind, "address": key.address})
    return key


@dataclass(frozen=True)
class KeyRow:
    fingerprint: str
    kind: str
    address: str
    status: str


def local_key(session: Session, pgp: OpenPgp, fingerprint: str) -> KeyInfo | None:
    """What this node's keyring says of a pinned key, after taking it from the database if the keyring lacks it.

    None when neither has it. The copy is imported only if it holds exactly
    the pinned fingerprint and can encrypt now; an unusable one is reported
    with its problem and not imported.
    """
    info = pgp.key(fingerprint)
    if info is not None:
        return info
    armored = session.scalar(select(RecipientKey.public_key).where(RecipientKey.fingerprint == fingerprint))
    if not armored:
        return None
    scanned = pgp.scan(armored.encode())
    if len(scanned) != 1 or scanned[0].fingerprint != fingerprint:
        log.error("recipient key %s: the copy in the database is another key; not imported", fingerprint[-16:])
        return None
    if not scanned[0].usable:
        return scanned[0]
    try:
        imported = pgp.import_key(armored.encode())
    except KeyRefused as exc:  # a delivery must not fail for it: the caller reports the key as missing
        log.error("recipient key %s: gpg refused the copy in the database: %s", fingerprint[-16:], exc)
        return None
    log.info("recipient key %s taken into this node's keyring from the database", fingerprint[-16:])
    return imported


def list_recipient_keys(session: Session, pgp: OpenPgp, cas: list[x509.Certificate] | None = None) -> list[KeyRow]:
    """Every pinned key or certificate and whether it can be encrypted to now (a key is taken from the database
    into this node's keyring if need be; a certificate is checked against `cas`)."""
    rows = []
    for key in session.scalars(select(RecipientKey).order_by(RecipientKey.address, RecipientKey.imported_at)):
        if key.envelope == "smime":
            problem = inspect_certificate((key.public_key or "").encode(), cas or []).problem
            rows.append(KeyRow(key.fingerprint, f"{key.kind}/smime", key.address, problem or "usable"))
            continue
        info = local_key(session, pgp, key.fingerprint)
        status = "usable" if info is not None and info.usable else (info.problem if info else "missing from keyring")
        rows.append(KeyRow(key.fingerprint, key.kind, key.address, status or "unusable"))
    return rows
