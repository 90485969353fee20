""""Mon profil": the five settings of the seed, validated and audited."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from myhug.audit.trail import record
from myhug.directory.identifiers import InvalidIdentifier, normalize_address
from myhug.directory.models import NOTIFICATION_MODES, Physician, PhysicianSpecialty
from myhug.directory.specialties import medreg_specialties
from myhug.errors import PermanentFailure

LANDING_PAGES = {"documents": "Mes documents", "patients": "Mes patients", "profile": "Mon profil"}
DOCUMENT_SHOWS = {"unread": "Non lus seulement", "all": "Tous", "recent": "Récents (derniers jours)"}
PATIENT_SHOWS = {"all": "Tous mes patients", "unread": "Avec des documents non lus",
                 "recent": "Avec des documents récents (derniers jours)"}
DOCUMENT_TYPES = {
    "discharge-letter": "Lettre de sortie",
    "lab-report": "Rapport de laboratoire",
    "imaging-report": "Rapport d’imagerie",
    "consultation-report": "Rapport de consultation",
    "operative-report": "Protocole opératoire",
    "prescription": "Ordonnance",
}


class ProfileError(PermanentFailure):
    """A profile value that cannot be saved; the message is French, for the page."""


@dataclass
class Preferences:
    landing: str = "documents"
    documents_show: str = "all"
    documents_days: int = 30
    document_types: list[str] = field(default_factory=list)
    patients_show: str = "all"
    patients_days: int = 90
    xdm: bool = True  # a package for practice software (IHE XDM, FHIR) in each HIN message

    @classmethod
    def of(cls, physician: Physician) -> Preferences:
        raw = physician.preferences or {}
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _days(value: str, label: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise ProfileError(f"{label} : un nombre de jours est attendu.") from None
    if not 1 <= days <= 3650:
        raise ProfileError(f"{label} : entre 1 et 3650 jours.")
    return days


def update_profile(session: Session, physician: Physician, form: dict[str, Any], actor: str) -> list[str]:
    """Validate and apply the profile form; returns the names of the changed settings (audited)."""
    before = Preferences.of(physician)
    prefs = Preferences.of(physician)
    changed: list[str] = []

    mode = form.get("notification_mode", physician.notification_mode)
    if mode not in NOTIFICATION_MODES:
        raise ProfileError("Mode de notification inconnu.")
    email = (form.get("email") or "").strip()
    if email:
        try:
            email = normalize_address(email)
        except InvalidIdentifier:
            raise ProfileError("L’adresse e-mail de notification n’est pas valable.") from None
    if mode != "none" and not email:
        raise ProfileError("Indiquez une adresse e-mail pour recevoir les notifications.")
    if mode != physician.notification_mode:
        physician.notification_mode = mode
        changed.append("notification_mode")
    if (email or None) != physician.email:
        physician.email = email or None
        changed.append("email")

    codes = sorted(set(form.get("specialties", [])))
    unknown = [c for c in codes if c not in medreg_specialties()]
    if unknown:
        raise ProfileError("Spécialité inconnue.")
    if codes != sorted(s.code for s in physician.specialties):
        physician.specialties = [PhysicianSpecialty(code=c) for c in codes]
        changed.append("specialties")

    landing = form.get("landing", prefs.landing)
    if landing not in LANDING_PAGES:
        raise ProfileError("Page d’accueil inconnue.")
    prefs.landing = landing
    show = form.get("documents_show", prefs.documents_show)
    if show not in DOCUMENT_SHOWS:
        raise ProfileError("Choix de documents inconnu.")
    prefs.documents_show = show
    prefs.documents_days = _days(str(form.get("documents_days", prefs.documents_days)), "Documents récents")
    types = sorted(set(form.get("document_types", [])))
    if any(t not in DOCUMENT_TYPES for t in types):
        raise ProfileError("Type de document inconnu.")
    prefs.document_types = types
    pshow = form.get("patients_show", prefs.patients_show)
    if pshow not in PATIENT_SHOWS:
        raise ProfileError("Choix de patients inconnu.")
    prefs.patients_show = pshow
    prefs.patients_days = _days(str(form.get("patients_days", prefs.patients_days)), "Patients récents")
    if "xdm_shown" in form:  # only the physician's own form has the box (the desk's form does not)
        prefs.xdm = form.get("xdm") == "1"

    for name, value in prefs.as_dict().items():
        if getattr(before, name) != value:
            changed.append(name)
    physician.preferences = prefs.as_dict()  # a new dict, so SQLAlchemy sees the change
    if changed:
        record(session, "profile-changed", actor=actor, physician_gln=physician.gln, detail={"changed": changed})
    return changed
