"""Input the gateway cannot hand on faithfully is refused at the door (issue "safe to deploy", §2).

Each rule has a refusing case and an accepting neighbour, on raw bytes as they
come off the wire (CRLF line ends), built by hand so that nothing repairs them.
"""

from __future__ import annotations

import base64

import pytest

from myhug.gateway.submission import (
    MAX_ATTACHMENTS,
    MAX_DEPTH,
    MAX_FILENAME,
    MAX_HEADER_FIELDS,
    InvalidSubmission,
    ParsedSubmission,
    parse_submission,
    safe_filename,
)

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n%%EOF\n"
B64 = base64.encodebytes(PDF)


def part(body: bytes = B64, *, cte: bytes = b"base64", filename: bytes = b'="lettre.pdf"',
         content_type: bytes = b"application/pdf", extra: bytes = b"") -> bytes:
    return (b"Content-Type: " + content_type + b"\r\nContent-Transfer-Encoding: " + cte + b"\r\n"
            b"Content-Disposition: attachment; filename" + filename + b"\r\n" + extra + b"\r\n" + body)


def message(*parts: bytes, headers: bytes = b"") -> bytes:
    head = (b"From: dpi@hug.localhost\r\nTo: a@myhug.localhost\r\nX-MyHUG-Patient-Id: P-1\r\n"
            b"X-MyHUG-Document-Id: D-1\r\n" + headers + b"MIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\n')
    body = b"".join(b"--XYZ\r\n" + p.rstrip(b"\r\n") + b"\r\n" for p in (parts or (part(),)))
    return head + body + b"--XYZ--\r\n"


def refused(raw: bytes, match: str) -> None:
    with pytest.raises(InvalidSubmission, match=match):
        parse_submission(raw)


def accepted(raw: bytes) -> ParsedSubmission:
    return parse_submission(raw)


def test_the_baseline_message_is_accepted_with_its_exact_bytes() -> None:
    assert accepted(message()).documents[0].data == PDF


# --- headers: ASCII or valid UTF-8, decoded, no control characters -------------------------


def test_raw_utf8_patient_name_is_read_as_utf8_not_mojibake() -> None:
    parsed = accepted(message(headers="X-MyHUG-Patient-Name: Zoé Müller\r\n".encode()))
    assert parsed.patient_name == "Zoé Müller"


def test_raw_latin1_patient_name_is_refused_naming_the_header() -> None:
    refused(message(headers="X-MyHUG-Patient-Name: Zoé Müller\r\n".encode("latin-1")),
            "header X-MyHUG-Patient-Name is neither ASCII nor valid UTF-8")


def test_any_header_in_invalid_utf8_is_refused() -> None:
    refused(message(headers=b"X-Mailer: DPI \xff\xfe\r\n"), "header X-Mailer is neither ASCII nor valid UTF-8")


def test_encoded_word_name_is_decoded() -> None:
    parsed = accepted(message(headers=b"X-MyHUG-Patient-Name: =?utf-8?q?Zo=C3=A9_M=C3=BCller?=\r\n"))
    assert parsed.patient_name == "Zoé Müller"


def test_unknown_charset_in_an_encoded_word_is_refused() -> None:
    refused(message(headers=b"X-MyHUG-Patient-Name: =?x-klingon?q?Zo=E9?=\r\n"), "unknown charset")


def test_subject_whose_encoded_word_hides_crlf_is_refused() -> None:
    refused(message(headers=b"Subject: =?utf-8?q?Lettre=0D=0ABcc:_x@evil.example?=\r\n"),
            "header Subject contains a control character or line break")


def test_folded_subject_is_accepted_as_one_line() -> None:
    parsed = accepted(message(headers=b"Subject: Lettre de sortie\r\n\tdu service\r\n"))
    assert parsed.subject == "Lettre de sortie du service"


@pytest.mark.parametrize("control", ["=01", "=7F", "=C2=85", "=E2=80=A8"])
def test_control_characters_in_a_decoded_name_are_refused(control: str) -> None:
    refused(message(headers=f"X-MyHUG-Patient-Name: =?utf-8?q?Zo{control}e?=\r\n".encode()),
            "X-MyHUG-Patient-Name contains a control character")


def test_metadata_header_twice_is_refused_subject_once_is_fine() -> None:
    refused(message(headers=b"X-MyHUG-Patient-Name: A\r\nX-MyHUG-Patient-Name: B\r\n"), "appears 2 times")
    refused(message(headers=b"Subject: A\r\nSubject: B\r\n"), "Subject appears 2 times")
    assert accepted(message(headers=b"Subject: A\r\n")).subject == "A"


def test_nul_byte_anywhere_is_refused() -> None:
    refused(message(part(b"AAAA\x00\r\n", cte=b"8bit")), "NUL byte")
    assert accepted(message(part(b"AAAA\x01\r\n", cte=b"8bit"))).documents[0].data == b"AAAA\x01"


# --- transfer encodings -------------------------------------------------------------------


def test_unknown_transfer_encoding_is_refused_not_delivered_as_text() -> None:
    refused(message(part(cte=b"x-uuencode")), "attachment 1: unknown Content-Transfer-Encoding 'x-uuencode'")


@pytest.mark.parametrize("cte", [b"BASE64", b"Base64"])
def test_transfer_encoding_names_are_case_insensitive(cte: bytes) -> None:
    assert accepted(message(part(cte=cte))).documents[0].data == PDF


def test_base64_with_padding_in_the_middle_is_refused() -> None:
    refused(message(part(b"QQ==QUFB\r\n")), "invalid base64")
    assert accepted(message(part(b"QUFB\r\nQQ==\r\n"))).documents[0].data == b"AAAA"


def test_invalid_quoted_printable_is_refused() -> None:
    refused(message(part(b"abc=ZZdef\r\n", cte=b"quoted-printable")), "invalid quoted-printable")
    good = accepted(message(part(b"abc=3Ddef=\r\nghi\r\n", cte=b"quoted-printable")))
    assert good.documents[0].data == b"abc=defghi"


def test_8bit_data_in_a_7bit_part_is_refused() -> None:
    refused(message(part(b"caf\xc3\xa9\r\n", cte=b"7bit")), "8-bit data in a part declared 7bit")
    assert accepted(message(part(b"caf\xc3\xa9\r\n", cte=b"8bit"))).documents[0].data == "café".encode()


# --- bounded structure --------------------------------------------------------------------


def test_too_many_header_fields_are_refused() -> None:
    many = b"".join(b"X-Trace-%d: x\r\n" % i for i in range(MAX_HEADER_FIELDS))
    refused(message(headers=many), f"more than {MAX_HEADER_FIELDS} header fields")
    assert accepted(message(headers=many[: 400 * 15]))


def _nested(depth: int) -> bytes:
    inner = part()
    for level in range(depth - 1, 0, -1):
        boundary = b"L%d" % level
        inner = (b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n--' + boundary + b"\r\n"
                 + inner.rstrip(b"\r\n") + b"\r\n--" + boundary + b"--\r\n")
    return message(inner)


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    refused(_nested(MAX_DEPTH), f"nested deeper than {MAX_DEPTH}")
    assert accepted(_nested(MAX_DEPTH - 2)).documents[0].data == PDF


def test_too_many_attachments_are_refused() -> None:
    refused(message(*[part()] * (MAX_ATTACHMENTS + 1)), f"more than {MAX_ATTACHMENTS} attachments")
    assert len(accepted(message(*[part()] * MAX_ATTACHMENTS)).documents) == MAX_ATTACHMENTS


# --- file names ---------------------------------------------------------------------------


def test_path_traversal_is_reduced_to_a_base_name_and_the_original_is_kept() -> None:
    document = accepted(message(part(filename=b'="../../../etc/passwd"'))).documents[0]
    assert document.filename == "passwd"
    assert document.original_filename == "../../../etc/passwd"


@pytest.mark.parametrize(("given", "expected"), [
    ("..\\..\\windows\\system.ini", "system.ini"),
    ("rapport\u202efdp.exe", "rapportfdp.exe"),
    ("..", "D-1-1.pdf"),
    ("/", "D-1-1.pdf"),
    ("  .bashrc ", "bashrc"),
    ('a<b>:c"d|e?f*.pdf', "a_b__c_d_e_f_.pdf"),
    ("lettre de sortie.pdf", "lettre de sortie.pdf"),
])
def test_file_names_are_made_safe(given: str, expected: str) -> None:
    assert safe_filename(given, "D-1-1.pdf") == expected


def test_long_file_name_is_shortened_keeping_its_extension() -> None:
    name = safe_filename("x" * 500 + ".pdf", "f")
    assert len(name) == MAX_FILENAME and name.endswith(".pdf")


def test_file_name_with_nothing_usable_is_derived_from_the_document_id() -> None:
    raw = message(part(filename=b'="../.."')).replace(b"X-MyHUG-Document-Id: D-1", b"X-MyHUG-Document-Id: urn:doc/42")
    assert accepted(raw).documents[0].filename == "urn_doc_42-1.pdf"


def test_file_name_with_a_control_character_is_refused() -> None:
    refused(message(part(filename=b"*=utf-8''a%0D%0Ab.pdf")), "file name of attachment 1 contains a control character")
    assert accepted(message(part(filename=b"*=utf-8''r%C3%A9sum%C3%A9.pdf"))).documents[0].filename == "résumé.pdf"


def test_file_name_in_an_unknown_charset_is_refused() -> None:
    refused(message(part(filename=b"*=x-klingon''abc.pdf")), "unknown charset 'x-klingon'")


def test_unicode_whitespace_at_the_edges_of_a_file_name_is_dropped() -> None:
    assert safe_filename("\u00a0lettre.pdf\u2003", "f") == "lettre.pdf"
    assert safe_filename("0\u00a0", "f") == "0"


def test_author_and_department_are_kept_sealed_and_refused_with_control_characters() -> None:
    from myhug.gateway.submission import InvalidSubmission, parse_submission
    from tests.helpers import message

    parsed = parse_submission(message(["x@myhug.localhost"], author="Dre Claire Roux", department="Service de cardiologie"))
    assert (parsed.author, parsed.department) == ("Dre Claire Roux", "Service de cardiologie")
    assert parsed.sealed_metadata()["department"] == "Service de cardiologie"
    raw = message(["x@myhug.localhost"]).replace(b"X-MyHUG-Document-Id", b"X-MyHUG-Department: =?utf-8?q?a=07b?=\r\nX-MyHUG-Document-Id", 1)
    with pytest.raises(InvalidSubmission, match="X-MyHUG-Department"):
        parse_submission(raw)
