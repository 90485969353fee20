import pytest

from myhug.dpi_client import Attachment, build_submission, sample_pdf
from myhug.gateway.submission import InvalidSubmission, parse_submission

PDF = sample_pdf("test")


def _raw(**overrides: object) -> bytes:
    kwargs: dict = dict(
        sender="dpi@hug.localhost", recipients=["a@myhug.localhost"], patient_id="P-1", document_id="D-1",
        attachments=[Attachment("lettre.pdf", PDF)], patient_name="Jean Exemple", patient_birthdate="1950-01-31",
        document_type="discharge-letter", subject="Lettre de sortie",
    )
    kwargs.update(overrides)
    return build_submission(**kwargs).as_bytes()


def test_valid_submission_yields_metadata_and_exact_document_bytes() -> None:
    parsed = parse_submission(_raw())
    assert (parsed.patient_id, parsed.document_id) == ("P-1", "D-1")
    assert parsed.patient_birthdate == "1950-01-31"
    assert parsed.document_type == "discharge-letter"
    assert parsed.subject == "Lettre de sortie"
    assert len(parsed.documents) == 1
    assert parsed.documents[0].data == PDF
    assert parsed.documents[0].content_type == "application/pdf"
    assert parsed.documents[0].filename == "lettre.pdf"


def test_several_attachments_of_any_type_are_kept_in_order() -> None:
    parsed = parse_submission(_raw(attachments=[Attachment("a.pdf", PDF), Attachment("b.xml", b"<x/>", "application/xml")]))
    assert [d.filename for d in parsed.documents] == ["a.pdf", "b.xml"]
    assert parsed.documents[1].data == b"<x/>"


def _without(raw: bytes, header: str) -> bytes:
    lines = raw.split(b"\n")
    return b"\n".join(line for line in lines if not line.lower().startswith(header.lower().encode() + b":"))


@pytest.mark.parametrize("header", ["X-MyHUG-Patient-Id", "X-MyHUG-Document-Id"])
def test_missing_required_header_is_named(header: str) -> None:
    with pytest.raises(InvalidSubmission, match=f"missing header {header}"):
        parse_submission(_without(_raw(), header))


def test_invalid_birthdate_is_named() -> None:
    with pytest.raises(InvalidSubmission, match="X-MyHUG-Patient-Birthdate"):
        parse_submission(_raw(patient_birthdate="31.01.1950"))


def test_invalid_document_type_is_named() -> None:
    with pytest.raises(InvalidSubmission, match="X-MyHUG-Document-Type"):
        parse_submission(_raw(document_type="Lettre de sortie!"))


def test_identifier_with_spaces_is_refused() -> None:
    with pytest.raises(InvalidSubmission, match="X-MyHUG-Document-Id"):
        parse_submission(_raw(document_id="D 1"))


def test_duplicated_metadata_header_is_refused() -> None:
    raw = _raw().replace(b"X-MyHUG-Patient-Id: P-1", b"X-MyHUG-Patient-Id: P-1\nX-MyHUG-Patient-Id: P-2")
    with pytest.raises(InvalidSubmission, match="appears 2 times"):
        parse_submission(raw)


def test_no_attachment_is_refused() -> None:
    with pytest.raises(InvalidSubmission, match="no document attached"):
        parse_submission(_raw(attachments=[]))


def test_garbage_is_refused() -> None:
    with pytest.raises(InvalidSubmission):
        parse_submission(b"\x00\xff garbage \r\n\r\n more garbage")


def test_broken_multipart_is_refused_as_malformed_mime() -> None:
    raw = (
        b"X-MyHUG-Patient-Id: P-1\r\nX-MyHUG-Document-Id: D-1\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\nno boundary ever appears here\r\n'
    )
    with pytest.raises(InvalidSubmission, match="malformed MIME"):
        parse_submission(raw)


def test_bad_base64_attachment_is_refused_naming_the_part() -> None:
    raw = (
        b"X-MyHUG-Patient-Id: P-1\r\nX-MyHUG-Document-Id: D-1\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\n--XYZ\r\n'
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="a.pdf"\r\n\r\nJVBER!!!i0xLjQK*\r\n--XYZ--\r\n'
    )
    with pytest.raises(InvalidSubmission, match="attachment 1: invalid base64"):
        parse_submission(raw)
