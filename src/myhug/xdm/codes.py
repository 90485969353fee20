"""The one table that maps `X-MyHUG-Document-Type` to the codes practice software files a document by.

classCode and typeCode come from the Swiss EPR value sets (EPRO-FDHA Annex 3,
as published by eHealth Suisse in CH:EPR-TERM), SNOMED CT record artifacts;
formatCode is IHE's "the MIME type is enough" (the documents are PDFs and
scans, not structured CDA). A type the DPI sends that is not in the table
gets the generic "Record artifact" codes: the package stays valid, and the
software files it by patient and date.
"""

from __future__ import annotations

from dataclasses import dataclass

SNOMED = "2.16.840.1.113883.6.96"  # SNOMED CT, as an OID (ebRIM codingScheme)
SNOMED_URI = "http://snomed.info/sct"  # the same, as FHIR names it
IHE_FORMAT = "1.3.6.1.4.1.19376.1.2.3"  # IHE format codes
IHE_FORMAT_URI = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"


@dataclass(frozen=True)
class Code:
    code: str
    scheme: str  # OID, for ebRIM
    system: str  # URI, for FHIR
    display: str


def _sct(code: str, display: str) -> Code:
    return Code(code, SNOMED, SNOMED_URI, display)


@dataclass(frozen=True)
class DocumentCodes:
    class_code: Code  # DocumentEntry.classCode = DocumentReference.category
    type_code: Code  # DocumentEntry.typeCode = DocumentReference.type


# X-MyHUG-Document-Type -> (classCode, typeCode), CH:EPR value sets.
DOCUMENT_CODES: dict[str, DocumentCodes] = {
    "discharge-letter": DocumentCodes(_sct("422735006", "Summary clinical document"),
                                      _sct("373942005", "Discharge summary")),
    "lab-report": DocumentCodes(_sct("4241000179101", "Laboratory report"),
                                _sct("4241000179101", "Laboratory report")),
    "imaging-report": DocumentCodes(_sct("721981007", "Diagnostic studies report"),
                                    _sct("4201000179104", "Imaging report")),
    "consultation-report": DocumentCodes(_sct("371531000", "Report of clinical encounter"),
                                         _sct("371530004", "Clinical consultation report")),
    "operative-report": DocumentCodes(_sct("371525003", "Clinical procedure report"),
                                      _sct("371526002", "Operative procedure report")),
    "prescription": DocumentCodes(_sct("440545006", "Prescription record"),
                                  _sct("761938008", "Medical prescription record")),
}
OTHER = DocumentCodes(_sct("419891008", "Record artifact"), _sct("419891008", "Record artifact"))

FORMAT = Code("urn:ihe:iti:xds:2017:mimeTypeSufficient", IHE_FORMAT, IHE_FORMAT_URI, "mimeType Sufficient")
CONFIDENTIALITY = _sct("17621005", "Normal")  # CH:EPR: "normal" confidentiality
LANGUAGE = "fr-CH"


def codes_for(document_type: str | None) -> DocumentCodes:
    """The codes of a document type; the generic ones for a type the table does not know."""
    return DOCUMENT_CODES.get(document_type or "", OTHER)
