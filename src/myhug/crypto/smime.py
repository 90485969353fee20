"""S/MIME 4.0 (RFC 8551) for the clients that speak it: SEPPmail-based gateways, CipherMail, Outlook.

All of it is `cryptography`'s: X.509 parsing and issuer checks, the CMS
SignedData that signs the inner MIME with the gateway's certificate, and the
EnvelopedData (RFC 5652) that encrypts it for the physician's certificate.
No ASN.1 is written here.

The content cipher is `crypto.smime_cipher`. AES-256-CBC (the default) is
EnvelopedData, which every client reads, made by `cryptography`'s envelope
builder. AES-256-GCM is AuthEnvelopedData (RFC 5083), which that builder
does not make: OpenSSL's own `openssl cms -encrypt -aes-256-gcm` makes it.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from myhug.errors import MyhugError

CIPHERS = ("aes256-cbc", "aes256-gcm")


class CertificateRefused(MyhugError):
    """A certificate that cannot be pinned or encrypted to; the message says why."""


@dataclass(frozen=True)
class CertificateInfo:
    """What the gateway needs to know of a physician's certificate."""

    fingerprint: str  # SHA-256 of the DER, upper-case hex (the pin)
    addresses: tuple[str, ...]  # subjectAltName rfc822Name, lower case
    not_after: datetime
    problem: str | None  # why it cannot be encrypted to now; None when it can
    pem: bytes

    @property
    def usable(self) -> bool:
        return self.problem is None

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.pem)


def ca_bundle(path: str | None) -> list[x509.Certificate]:
    """The CAs physicians' certificates must chain to: `crypto.smime_ca_file`, or the system's bundle."""
    file = path or ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    try:
        return x509.load_pem_x509_certificates(Path(file).read_bytes())
    except (OSError, ValueError) as exc:
        raise CertificateRefused(f"cannot read the S/MIME CA bundle {file}: {exc}") from None


def _chains(certificate: x509.Certificate, cas: list[x509.Certificate], now: datetime, depth: int = 0) -> bool:
    """Is `certificate` issued (signature checked) by one of `cas`, or by a chain of them, all valid `now`?"""
    if depth > 5:
        return False
    for ca in cas:
        if ca.subject != certificate.issuer or not ca.not_valid_before_utc <= now <= ca.not_valid_after_utc:
            continue
        try:
            certificate.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        if ca.subject == ca.issuer or _chains(ca, cas, now, depth + 1):
            return True
    return False


def inspect_certificate(pem: bytes, cas: list[x509.Certificate], now: datetime | None = None) -> CertificateInfo:
    """Parse a PEM certificate and say whether it can be encrypted to now: chain, dates, key usage, key type."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise CertificateRefused("no PEM X.509 certificate found in the file") from None
    now = now or datetime.now(UTC)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        addresses = tuple(sorted({a.lower() for a in san.get_values_for_type(x509.RFC822Name)}))
    except x509.ExtensionNotFound:
        addresses = ()
    problem: str | None = None
    if not isinstance(certificate.public_key(), rsa.RSAPublicKey):
        problem = "not an RSA certificate (the gateway encrypts to RSA keys)"
    elif now > certificate.not_valid_after_utc:
        problem = f"expired on {certificate.not_valid_after_utc:%Y-%m-%d}"
    elif now < certificate.not_valid_before_utc:
        problem = f"not valid before {certificate.not_valid_before_utc:%Y-%m-%d}"
    else:
        try:
            usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
            if not usage.key_encipherment:
                problem = "its key usage does not allow encryption (no keyEncipherment)"
        except x509.ExtensionNotFound:
            pass
    if problem is None and not _chains(certificate, cas, now):
        problem = "does not chain to a CA of crypto.smime_ca_file"
    fingerprint = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return CertificateInfo(fingerprint, addresses, certificate.not_valid_after_utc, problem,
                           certificate.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class GatewayIdentity:
    """The gateway's own S/MIME signing certificate and key (files in the data dir)."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


def gateway_identity(directory: Path, address: str, *, create: bool = True) -> GatewayIdentity:
    """The gateway's signing certificate, made once (self-issued for `address`, 3 years) if `create`.

    Physicians pin it (`myhug key export-gateway --smime`), as they pin the
    gateway's OpenPGP key. The key file is the owner's alone (0600).
    """
    cert_file, key_file = directory / "gateway.pem", directory / "gateway.key"
    if not cert_file.exists():
        if not create:
            raise CertificateRefused(f"no S/MIME gateway certificate in {directory}")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"myHUG gateway {address}"),
                          x509.NameAttribute(NameOID.EMAIL_ADDRESS, address)])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=3 * 365))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .sign(key, hashes.SHA256())
        )
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    return GatewayIdentity(certificate, loaded)


def sign(inner: bytes, identity: GatewayIdentity) -> bytes:
    """The inner MIME entity as `multipart/signed` (CMS detached signature, SHA-256), CRLF throughout."""
    signed = (pkcs7.PKCS7SignatureBuilder().set_data(inner)
              .add_signer(identity.certificate, identity.key, hashes.SHA256())
              .sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]))
    return signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def envelope(data: bytes, recipient: x509.Certificate, cipher: str = "aes256-cbc") -> bytes:
    """CMS EnvelopedData (CBC) or AuthEnvelopedData (GCM), DER, of `data` for the recipient (RSA key transport)."""
    if cipher == "aes256-cbc":
        return (pkcs7.PKCS7EnvelopeBuilder().set_data(data).add_recipient(recipient)
                .set_content_encryption_algorithm(algorithms.AES256)
                .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary]))
    if cipher != "aes256-gcm":
        raise CertificateRefused(f"crypto.smime_cipher {cipher!r} is unknown (one of {', '.join(CIPHERS)})")
    with tempfile.NamedTemporaryFile(suffix=".pem") as certificate:
        certificate.write(recipient.public_bytes(serialization.Encoding.PEM))
        certificate.flush()
        done = subprocess.run(["openssl", "cms", "-encrypt", "-aes-256-gcm", "-binary", "-outform", "DER",
                               certificate.name], input=data, capture_output=True, check=False)
    if done.returncode != 0:
        raise CertificateRefused(f"openssl cms -encrypt failed: {done.stderr.decode(errors='replace')[:300]}")
    return done.stdout
