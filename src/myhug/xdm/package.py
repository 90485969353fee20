"""`IHE_XDM.zip`: the documents and their metadata as IHE XDM portable media (ITI TF-1 §16, ITI-32).

    INDEX.HTM                       what the package holds, for a person
    README.TXT                      who made it, for a person
    IHE_XDM/SUBSET01/METADATA.XML   the ebRIM SubmitObjectsRequest (`xdm.metadata`)
    IHE_XDM/SUBSET01/DOC00001.PDF   the files, 8.3 names, as the metadata's URI slots say

It is built in memory: a HIN message holds its documents whole already, and
a package is one submission's files.
"""

from __future__ import annotations

import html
import io
import zipfile

from myhug.xdm.fhir import SUBSET, bundle_json
from myhug.xdm.metadata import Origin, Package, submit_objects_request, xdm_name

PACKAGE_NAME = "IHE_XDM.zip"


def _index(package: Package) -> str:
    rows = "\n".join(
        f'<li><a href="{SUBSET}/{xdm_name(n, f.filename)}">{html.escape(f.filename)}</a> ({f.content_type})</li>'
        for n, f in enumerate(package.files))
    return (f'<!DOCTYPE html>\n<html lang="fr-CH"><head><meta charset="utf-8"><title>myHUG — '
            f"{html.escape(package.title or package.document_id)}</title></head><body>\n"
            f"<h1>{html.escape(package.title or package.document_id)}</h1>\n"
            f"<p>Envoyé par les {html.escape(package.institution)} via myHUG. Les métadonnées IHE XDS sont dans "
            f'<a href="{SUBSET}/METADATA.XML">METADATA.XML</a>.</p>\n<ul>\n{rows}\n</ul>\n</body></html>\n')


def _readme(package: Package) -> str:
    return ("IHE XDM package (ITI TF-1 16, ITI-32), written by the myHUG gateway of the\r\n"
            f"{package.institution}.\r\n\r\n"
            "Contents: INDEX.HTM (for a person), IHE_XDM/SUBSET01/METADATA.XML (ebRIM 3.0\r\n"
            "SubmitObjectsRequest) and the documents it describes.\r\n"
            "Contact: Service de cybersante & telemedecine des HUG, +41 22 372 62 01, myhug@hcuge.ch\r\n")


def xdm_zip(package: Package, origin: Origin, with_fhir: bool = False) -> bytes:
    """The package's bytes (the documents are stored, not deflated: they are compressed already).

    `with_fhir` adds the FHIR Bundle beside the metadata (`FHIR/DocumentReference.json`): the webmail's
    download is one file; a HIN message carries the Bundle as a part of its own.
    """
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("INDEX.HTM", _index(package))
        archive.writestr("README.TXT", _readme(package))
        archive.writestr(f"{SUBSET}/METADATA.XML", submit_objects_request(package, origin))
        if with_fhir:
            archive.writestr("FHIR/DocumentReference.json", bundle_json(package, origin))
        for position, file in enumerate(package.files):
            archive.writestr(f"{SUBSET}/{xdm_name(position, file.filename)}", file.data,
                             compress_type=zipfile.ZIP_STORED)
    return out.getvalue()
