"""What a document is, for practice software: IHE XDS metadata (ebRIM 3.0, `METADATA.XML`) and FHIR R4.

One `Package` is one submission: a patient, a document id, its files. Each
file is a DocumentEntry (an `ExtrinsicObject`; a FHIR `DocumentReference`),
the submission a SubmissionSet (`RegistryPackage`), joined by `HasMember`
associations (IHE ITI TF-3 §4.2.3, and §4.2.1.2 for XDM's `URI` slot).

The package holds patient data: it only ever travels inside the encryption
of a HIN message, or to the physician logged in to the webmail.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from myhug.config.settings import XdmSettings
from myhug.xdm.codes import CONFIDENTIALITY, FORMAT, LANGUAGE, Code, codes_for

RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
# The UUIDs IHE ITI TF-3 §4.2.5 gives the XDS classification and identification schemes.
STABLE_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
ENTRY_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
ENTRY_CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
ENTRY_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
ENTRY_FORMAT = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
ENTRY_TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
ENTRY_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
ENTRY_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SET_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SET_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SET_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SET_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SET_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
CLASSIFICATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
EXTERNAL_ID = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"
# An OID under the UUID arc (ITU-T X.667): a unique id needs no registry of our own.
UUID_ARC = "2.25"
_IDS = uuid.UUID("6f0b6c3e-7d1f-4a52-9d1e-2c0c1b5f7a11")  # namespace of the gateway's derived ids


@dataclass(frozen=True)
class PackageFile:
    """One file of the submission, in clear."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Package:
    """One submission, as the DPI described it."""

    document_id: str
    document_type: str | None
    patient_id: str
    patient_name: str | None
    patient_birthdate: str | None  # YYYY-MM-DD
    title: str | None
    created: datetime
    files: list[PackageFile]
    author: str | None = None
    department: str | None = None
    institution: str = "Hôpitaux Universitaires de Genève"
    language: str = LANGUAGE
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Origin:
    """Who the ids belong to: the OID of the DPI's patient ids (`xdm.patient_id_root`) and of the sender
    (`xdm.source_id`)."""

    patient_id_root: str
    source_id: str

    @classmethod
    def of(cls, settings: XdmSettings) -> Origin | None:
        """The configured OIDs; None while either is unset (then no package is made)."""
        if not settings.patient_id_root or not settings.source_id:
            return None
        return cls(settings.patient_id_root, settings.source_id)


def package_of(meta: dict[str, Any], *, document_id: str, document_type: str | None, created: datetime,
               files: list[PackageFile]) -> Package:
    """A submission's package from its sealed metadata (as intake wrote it) and its files in clear."""
    return Package(document_id=document_id, document_type=document_type, patient_id=str(meta["patient_id"]),
                   patient_name=meta.get("patient_name"), patient_birthdate=meta.get("patient_birthdate"),
                   title=meta.get("subject"), created=created, files=files, author=meta.get("author"),
                   department=meta.get("department"))


def stable_uuid(*parts: str) -> uuid.UUID:
    """A UUID derived from `parts`: the same input, the same id, in every copy of the package."""
    return uuid.uuid5(_IDS, "/".join(parts))


def uid(*parts: str) -> str:
    """A stable OID for a document or a submission (the UUID arc `2.25`)."""
    return f"{UUID_ARC}.{stable_uuid(*parts).int}"


def xdm_name(position: int, filename: str) -> str:
    """The file's name inside the package: 8.3 upper case, as ITI TF-1 §16 asks for portable media."""
    extension = filename.rsplit(".", 1)[-1].upper()[:3] if "." in filename else "BIN"
    extension = "".join(c for c in extension if c.isalnum()) or "BIN"
    return f"DOC{position + 1:05d}.{extension}"


def patient_cx(package: Package, origin: Origin) -> str:
    """The patient id as an HL7 CX with its assigning authority: `P-1001^^^&OID&ISO`."""
    return f"{package.patient_id}^^^&{origin.patient_id_root}&ISO"


def xds_time(moment: datetime) -> str:
    """A DTM in UTC, to the second (XDS time format)."""
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def _e(parent: etree._Element, tag: str, **attributes: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{RIM}}}{tag}", attributes)


def _slot(parent: etree._Element, name: str, *values: str) -> None:
    values_list = _e(_e(parent, "Slot", name=name), "ValueList")
    for value in values:
        _e(values_list, "Value").text = value


def _name(parent: etree._Element, text: str) -> None:
    _e(_e(parent, "Name"), "LocalizedString", value=text, charset="UTF-8", **{"{http://www.w3.org/XML/1998/namespace}lang": "fr-CH"})


def _coded(parent: etree._Element, scheme: str, owner: str, code: Code, ident: str) -> None:
    node = _e(parent, "Classification", classificationScheme=scheme, classifiedObject=owner,
              nodeRepresentation=code.code, id=ident, objectType=CLASSIFICATION)
    _slot(node, "codingScheme", code.scheme)
    _name(node, code.display)


def _external_id(parent: etree._Element, scheme: str, owner: str, value: str, label: str, ident: str) -> None:
    node = _e(parent, "ExternalIdentifier", identificationScheme=scheme, value=value, registryObject=owner,
              id=ident, objectType=EXTERNAL_ID)
    _name(node, label)


def _author(parent: etree._Element, scheme: str, owner: str, package: Package, ident: str) -> None:
    node = _e(parent, "Classification", classificationScheme=scheme, classifiedObject=owner, nodeRepresentation="",
              id=ident, objectType=CLASSIFICATION)
    if package.author:
        _slot(node, "authorPerson", f"^{package.author}")  # XCN: the name as given, family and given unsplit
    _slot(node, "authorInstitution", package.institution)
    if package.department:
        _slot(node, "authorRole", package.department)


def submit_objects_request(package: Package, origin: Origin) -> bytes:
    """`METADATA.XML`: the ebRIM `SubmitObjectsRequest` of the package, UTF-8."""
    root = etree.Element(f"{{{LCM}}}SubmitObjectsRequest", nsmap={"lcm": LCM, "rim": RIM})
    objects = _e(root, "RegistryObjectList")
    codes = codes_for(package.document_type)
    cx = patient_cx(package, origin)
    set_id = "SubmissionSet01"
    for position, file in enumerate(package.files):
        entry = f"Document{position + 1:02d}"
        node = _e(objects, "ExtrinsicObject", id=entry, mimeType=file.content_type, objectType=STABLE_ENTRY)
        _slot(node, "creationTime", xds_time(package.created))
        _slot(node, "hash", hashlib.sha1(file.data).hexdigest())  # noqa: S324 (ITI TF-3 §4.2.3.2.14 asks for SHA-1)
        _slot(node, "size", str(len(file.data)))
        _slot(node, "languageCode", package.language)
        _slot(node, "sourcePatientId", cx)
        info = [f"PID-3|{cx}"]
        if package.patient_name:
            given, _, family = package.patient_name.rpartition(" ")
            info.append(f"PID-5|{family}^{given}")
        if package.patient_birthdate:
            info.append(f"PID-7|{package.patient_birthdate.replace('-', '')}")
        _slot(node, "sourcePatientInfo", *info)
        _slot(node, "URI", f"{xdm_name(position, file.filename)}")
        _name(node, package.title or file.filename)
        _e(_e(node, "Description"), "LocalizedString", value=file.filename, charset="UTF-8")
        _author(node, ENTRY_AUTHOR, entry, package, f"{entry}-author")
        _coded(node, ENTRY_CLASS, entry, codes.class_code, f"{entry}-class")
        _coded(node, ENTRY_CONFIDENTIALITY, entry, CONFIDENTIALITY, f"{entry}-confidentiality")
        _coded(node, ENTRY_FORMAT, entry, FORMAT, f"{entry}-format")
        _coded(node, ENTRY_TYPE, entry, codes.type_code, f"{entry}-type")
        _external_id(node, ENTRY_PATIENT_ID, entry, cx, "XDSDocumentEntry.patientId", f"{entry}-patient")
        _external_id(node, ENTRY_UNIQUE_ID, entry, uid(package.document_id, str(position)),
                     "XDSDocumentEntry.uniqueId", f"{entry}-unique")
    submission = _e(objects, "RegistryPackage", id=set_id)
    _slot(submission, "submissionTime", xds_time(package.created))
    _name(submission, package.title or package.document_id)
    _author(submission, SET_AUTHOR, set_id, package, f"{set_id}-author")
    _coded(submission, SET_CONTENT_TYPE, set_id, codes.class_code, f"{set_id}-content")
    _external_id(submission, SET_UNIQUE_ID, set_id, uid(package.document_id), "XDSSubmissionSet.uniqueId",
                 f"{set_id}-unique")
    _external_id(submission, SET_SOURCE_ID, set_id, origin.source_id, "XDSSubmissionSet.sourceId", f"{set_id}-source")
    _external_id(submission, SET_PATIENT_ID, set_id, cx, "XDSSubmissionSet.patientId", f"{set_id}-patient")
    _e(objects, "Classification", classifiedObject=set_id, classificationNode=SUBMISSION_SET_NODE,
       id=f"{set_id}-node", objectType=CLASSIFICATION)
    for position in range(len(package.files)):
        member = _e(objects, "Association", associationType=HAS_MEMBER, sourceObject=set_id,
                    targetObject=f"Document{position + 1:02d}", id=f"Association{position + 1:02d}")
        _slot(member, "SubmissionSetStatus", "Original")
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))
