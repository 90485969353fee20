"""The physicians' webmail (Starlette + Jinja2): server-rendered, French, works without JavaScript.

One module per page family (`login`, `documents`, `patients`, `profile`, `help`) over a shared base (`base`);
this class combines them and lists their routes.
"""

from __future__ import annotations

from starlette.routing import Route

from myhug.webmail.access import AccessPages
from myhug.webmail.delegates import DelegatePages
from myhug.webmail.documents import DocumentPages
from myhug.webmail.help import HelpPage
from myhug.webmail.login import LoginPages
from myhug.webmail.patients import PatientPages
from myhug.webmail.profile import ProfilePages


class Webmail(LoginPages, AccessPages, DelegatePages, DocumentPages, PatientPages, ProfilePages, HelpPage):
    """Route handlers, wired explicitly to the parts they use."""

    def routes(self) -> list[Route]:
        return [
            Route("/", self.home),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/login/sms", self.login_sms, methods=["GET", "POST"]),
            Route("/login/sms/resend", self.login_sms_resend, methods=["POST"]),
            Route("/login/passkey/options", self.login_passkey_options, methods=["POST"]),
            Route("/login/passkey", self.login_passkey, methods=["POST"]),
            Route("/hin/login", self.hin_login),
            Route("/hin/link", self.hin_link, methods=["POST"]),
            Route("/password", self.password, methods=["GET", "POST"]),
            Route("/password/forgotten", self.password_forgotten),
            Route("/documents", self.documents),
            Route("/documents/bulk", self.documents_bulk, methods=["POST"]),
            Route("/documents/{item_id:int}", self.document),
            Route("/documents/{item_id:int}/archive", self.document_archive),
            Route("/documents/{item_id:int}/xdm", self.document_xdm),
            Route("/documents/{item_id:int}/unread", self.document_unread, methods=["POST"]),
            Route("/documents/{item_id:int}/files/{position:int}", self.document_file),
            Route("/patients", self.patients),
            Route("/profile", self.profile, methods=["GET", "POST"]),
            Route("/profile/acces", self.access),
            Route("/profile/delegation", self.delegation, methods=["GET", "POST"]),
            Route("/profile/delegation/{link_id:int}/end", self.delegation_end, methods=["POST"]),
            Route("/profile/delegation/{link_id:int}/notify", self.delegation_notify, methods=["POST"]),
            Route("/remplacements", self.stand_ins),
            Route("/delegation/switch", self.switch, methods=["POST"]),
            Route("/profile/acces/passkeys/options", self.passkey_options, methods=["POST"]),
            Route("/profile/acces/passkeys", self.passkey_add, methods=["POST"]),
            Route("/profile/acces/passkeys/{passkey_id:int}/remove", self.passkey_remove, methods=["POST"]),
            Route("/profile/acces/devices/{device_id:int}/revoke", self.device_revoke, methods=["POST"]),
            Route("/logout", self.logout, methods=["GET", "POST"]),
            Route("/aide", self.help),
        ]
