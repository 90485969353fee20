"""Key material created by `myhug init`: the TLS certificate and the DKIM key."""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def create_self_signed_tls(cert_file: Path, key_file: Path, hostname: str, days: int = 825) -> None:
    """A self-signed ECDSA P-256 certificate for `hostname`, localhost and 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.now(UTC)
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(hostname),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_private(
        key_file,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def create_dkim_key(key_file: Path) -> None:
    """An RSA-2048 DKIM signing key (PKCS#1 PEM, the form dkimpy reads)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(
        key_file,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ),
    )


DNS_STRING_MAX = 255  # octets in one <character-string> of a TXT record (RFC 1035 3.3)


def dkim_zone_record(selector: str, domain: str, key_file: Path, ttl: int = 3600) -> str:
    """The DKIM key record in zone-file form, its value split into strings a DNS server accepts.

    A 2048-bit key is about 410 characters: one quoted string would exceed the
    255 allowed, and `named-checkzone` and resolvers refuse it. Verifiers join
    the strings back (RFC 6376 3.6.2.2).
    """
    value = dkim_dns_record(key_file)
    chunks = [value[i:i + DNS_STRING_MAX] for i in range(0, len(value), DNS_STRING_MAX)]
    strings = "\n".join(f'    "{chunk}"' for chunk in chunks)
    return f"{selector}._domainkey.{domain}. {ttl} IN TXT (\n{strings} )"


def dkim_dns_record(key_file: Path) -> str:
    """The `v=DKIM1; k=rsa; p=...` TXT value for the public half of `key_file`."""
    import base64

    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
