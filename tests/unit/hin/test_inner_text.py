"""The HIN message's inner text (inside the encryption) names who sent the document, when the DPI said."""

from __future__ import annotations

from myhug.delivery.document import Document
from myhug.hin.message import HinContent, inner_mime


def _text(**sender: str) -> str:
    content = HinContent(document_id="DOC-1", document_type="discharge-letter", patient_id="P-1001",
                         patient_name="Jean Exemple", patient_birthdate="1950-01-31", subject="Lettre", note=None,
                         documents=[Document("lettre.pdf", "application/pdf", b"%PDF-1.4")], **sender)
    return b"".join(inner_mime(content, sender="a@myhug.ch", recipient="b@hin.ch")).decode("utf-8", "replace")


def test_the_service_and_the_author_are_in_the_inner_text() -> None:
    text = _text(author="Dre Claire Roux", department="Service de cardiologie")
    assert "Service : Service de cardiologie" in text and "Auteur : Dre Claire Roux" in text


def test_without_them_no_empty_line_is_written() -> None:
    text = _text()
    assert "Service :" not in text and "Auteur :" not in text
