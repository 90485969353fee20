""""Mon profil" validation: each refusal says what is wrong, in French; a valid form changes and audits."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from myhug.audit.models import AuditEvent
from myhug.components import Components
from myhug.directory.models import Physician
from myhug.directory.profile import Preferences, ProfileError, update_profile
from tests.conftest import Directory

VALID: dict[str, Any] = {"notification_mode": "each", "email": "marie@example.ch", "specialties": ["1014"],
                         "landing": "patients", "documents_show": "recent", "documents_days": "14",
                         "document_types": ["lab-report"], "patients_show": "all", "patients_days": "90"}


@pytest.mark.parametrize(("change", "message"), [
    ({"notification_mode": "sms"}, "Mode de notification inconnu"),
    ({"email": "not an address"}, "adresse e-mail"),
    ({"email": ""}, "Indiquez une adresse e-mail"),
    ({"specialties": ["9999"]}, "Spécialité inconnue"),
    ({"landing": "/admin"}, "Page d’accueil inconnue"),
    ({"documents_show": "everything"}, "Choix de documents inconnu"),
    ({"documents_days": "0"}, "entre 1 et 3650 jours"),
    ({"documents_days": "abc"}, "un nombre de jours"),
    ({"document_types": ["virus"]}, "Type de document inconnu"),
    ({"patients_show": "x"}, "Choix de patients inconnu"),
])
def test_each_bad_value_is_refused_by_name(change: dict[str, Any], message: str) -> None:
    physician = Physician(gln="7601000000019", notification_mode="none", email=None, preferences={}, specialties=[])
    with pytest.raises(ProfileError, match=message):
        update_profile(None, physician, {**VALID, **change}, actor="test")  # type: ignore[arg-type]


def test_a_valid_form_changes_the_profile_and_audits_the_names(gateway: Components, directory: Directory) -> None:
    doctor = directory.hosted()
    with gateway.db.transaction() as session:
        physician = session.get(Physician, doctor.id)
        assert physician is not None
        changed = update_profile(session, physician, VALID, actor="web:test")
        assert update_profile(session, physician, VALID, actor="web:test") == []  # the same again: nothing
    assert {"notification_mode", "email", "specialties", "landing", "documents_show", "documents_days",
            "document_types"} <= set(changed)
    with gateway.db.reading() as session:
        physician = session.get(Physician, doctor.id)
        assert physician is not None
        prefs = Preferences.of(physician)
        assert (prefs.landing, prefs.documents_days, prefs.document_types) == ("patients", 14, ["lab-report"])
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.event == "profile-changed")).all()
        assert event.physician_gln == doctor.gln
