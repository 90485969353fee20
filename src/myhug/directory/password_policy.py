"""NIST SP 800-63B password rules: length, not common, not the login."""

from __future__ import annotations

from myhug.errors import PermanentFailure

MIN_LENGTH = 8
MAX_LENGTH = 256  # long enough for passphrases; bounded so hashing cost stays bounded

# The most common passwords of public breach corpora, plus local favourites.
COMMON_PASSWORDS = frozenset(
    ["123456", "123456789", "12345678", "1234567890", "12345", "1234567", "password", "password1", "password123", "qwerty", "qwertz", "qwerty123", "abc123", "111111", "123123", "000000", "iloveyou", "admin", "admin123", "welcome", "welcome1", "letmein", "monkey", "dragon", "sunshine", "princess", "football", "baseball", "master", "shadow", "superman", "azerty", "azerty123", "motdepasse", "passwort", "hallo123", "bonjour", "soleil", "1q2w3e4r", "1qaz2wsx", "zaq12wsx", "trustno1", "changeme", "secret", "hello123", "myhug", "myhug123", "hug12345", "medecin", "docteur", "doctor123", "hopital", "geneve", "genève", "suisse", "schweiz"]
)


class WeakPassword(PermanentFailure):
    """The new password breaks a rule; the message (French) says which, for the page."""


def check_password(password: str, login: str | None = None) -> None:
    """Raise `WeakPassword` with a French explanation if `password` is not acceptable."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"Le mot de passe doit compter au moins {MIN_LENGTH} caractères.")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"Le mot de passe ne peut dépasser {MAX_LENGTH} caractères.")
    if password.lower() in COMMON_PASSWORDS:
        raise WeakPassword("Ce mot de passe est trop courant ; choisissez-en un autre.")
    if login and password.lower() == login.lower():
        raise WeakPassword("Le mot de passe ne peut pas être votre identifiant.")
