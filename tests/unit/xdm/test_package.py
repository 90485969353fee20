"""The IHE XDM package and the FHIR resources, checked by the published schemas and by what schemas cannot
see; a wrong hash, a missing patient id and a bad date each make the check fail, so that it bites."""

from __future__ import annotations

import copy
import io
import json
import zipfile
from datetime import UTC, datetime

import pytest
from lxml import etree

from myhug.xdm.fhir import document_references
from myhug.xdm.metadata import Origin, Package, PackageFile
from myhug.xdm.package import xdm_zip
from tests.helpers import PDF
from tests.xdm_check import RIM, fhir_problems, metadata_problems

ORIGIN = Origin(patient_id_root="2.16.756.5.30.1.145.3.1", source_id="2.16.756.5.30.1.145.1.1")


def package(files: int) -> Package:
    names = ["Lettre de sortie.pdf", "Résultats d’analyse été.pdf", "scan IRM.png"]
    return Package(
        document_id="DOC-2026-1", document_type="discharge-letter", patient_id="P-1001",
        patient_name="Zoé Müller", patient_birthdate="1948-03-02", title="Lettre de sortie de Zoé Müller",
        created=datetime(2026, 12, 8, 3, 0, tzinfo=UTC),
        files=[PackageFile(names[n], "image/png" if names[n].endswith(".png") else "application/pdf", PDF + bytes([n]))
               for n in range(files)],
        author="Dr Anne Roux", department="Service de cardiologie",
    )


@pytest.mark.parametrize("files", [1, 3])
def test_the_package_and_the_fhir_bundle_pass_every_check(files: int) -> None:
    built = xdm_zip(package(files), ORIGIN)
    assert metadata_problems(built) == []
    with zipfile.ZipFile(io.BytesIO(built)) as archive:
        names = archive.namelist()
        assert names[:3] == ["INDEX.HTM", "README.TXT", "IHE_XDM/SUBSET01/METADATA.XML"]
        assert len([n for n in names if n.startswith("IHE_XDM/SUBSET01/DOC")]) == files
        metadata = archive.read("IHE_XDM/SUBSET01/METADATA.XML").decode()
    assert "Résultats d’analyse été.pdf" in metadata or files == 1  # the accented name, in UTF-8
    assert "P-1001^^^&amp;2.16.756.5.30.1.145.3.1&amp;ISO" in metadata
    assert "373942005" in metadata and "422735006" in metadata  # typeCode and classCode of a discharge letter
    assert "Service de cardiologie" in metadata and "Dr Anne Roux" in metadata
    assert fhir_problems(document_references(package(files), ORIGIN), built) == []


def _edit(built: bytes, change: str) -> bytes:
    document = etree.fromstring(zipfile.ZipFile(io.BytesIO(built)).read("IHE_XDM/SUBSET01/METADATA.XML"))
    entry = next(document.iter(f"{RIM}ExtrinsicObject"))
    if change == "hash":
        value = entry.find(f"{RIM}Slot[@name='hash']/{RIM}ValueList/{RIM}Value")
        value.text = "0" * 40  # type: ignore[union-attr]
    elif change == "patient":
        for identifier in entry.findall(f"{RIM}ExternalIdentifier"):
            if identifier.get("identificationScheme") == "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427":
                entry.remove(identifier)
    elif change == "date":
        value = entry.find(f"{RIM}Slot[@name='creationTime']/{RIM}ValueList/{RIM}Value")
        value.text = "20261345250000"  # type: ignore[union-attr]
    elif change == "schema":
        entry.set("bogus", "x")
    return etree.tostring(document)


@pytest.mark.parametrize("change", ["hash", "patient", "date", "schema"])
def test_a_wrong_hash_a_missing_patient_id_a_bad_date_and_a_schema_error_each_fail_the_metadata_check(
        change: str) -> None:
    built = xdm_zip(package(1), ORIGIN)
    assert metadata_problems(built, _edit(built, change)) != []


@pytest.mark.parametrize("change", ["hash", "patient", "date"])
def test_a_wrong_hash_a_missing_patient_id_and_a_bad_date_each_fail_the_fhir_check(change: str) -> None:
    built = xdm_zip(package(1), ORIGIN)
    bundle = copy.deepcopy(document_references(package(1), ORIGIN))
    reference = bundle["entry"][0]["resource"]
    if change == "hash":
        reference["content"][0]["attachment"]["hash"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
    elif change == "patient":
        del reference["subject"]
    else:
        reference["date"] = "2026-13-45T25:00:00Z"
    problems = fhir_problems(json.loads(json.dumps(bundle)), built)
    assert problems != []
    if change == "date":  # both validators see a bad date
        assert any(p.startswith("json schema") for p in problems) and any("fhir.resources" in p for p in problems)
