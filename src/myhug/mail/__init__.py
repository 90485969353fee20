"""Outbound mail, shared by the HIN route, the receipts and the notifications: the MIME writer and the
smarthost sender (`MailSender`)."""
