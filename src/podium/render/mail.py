"""Mailing a rendering to the people of its content, through the configured SMTP server.

Recipients follow Connect's choices: ``me`` (the caller), ``collaborators`` (the
owner and users with the owner role on the content) and ``collaborators_viewers``
(those plus users with the viewer role); only users with an email address and not
locked. The message carries the rendering's page as its HTML body and a link to
the content. Nothing is sent when ``smtp_host`` is empty. The connection follows
``smtp_security`` (STARTTLS when offered, by default; certificates verified) and logs
in with ``smtp_username``/``smtp_password`` only over an encrypted connection.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from podium.settings import Settings
from podium.store.models import Content, Group, GroupMember, Permission, User

AUDIENCES = ("me", "collaborators", "collaborators_viewers")


class MailError(RuntimeError):
    """The SMTP server could not be reached or refused the message; the message says which."""


def recipients(session: Session, content: Content, audience: str, me: User | None) -> list[str]:
    if audience not in AUDIENCES:
        raise ValueError(f"email must be one of {', '.join(AUDIENCES)}; got {audience!r}")
    users: list[User] = []
    if audience == "me":
        users = [me] if me is not None else []
    else:
        roles = ("owner",) if audience == "collaborators" else ("owner", "viewer")
        granted = select(Permission.principal_guid).where(
            Permission.content_id == content.id, Permission.role.in_(roles)
        )
        # Members of a group with the role count as if named one by one, in the order added.
        members = (
            select(GroupMember.user_id)
            .join(Group, Group.id == GroupMember.group_id)
            .where(Group.guid.in_(granted))
        )
        users = [
            content.owner,
            *session.scalars(
                select(User).where(User.guid.in_(granted) | User.id.in_(members)).order_by(User.id)
            ),
        ]
    found: list[str] = []
    for user in users:
        if user is not None and user.email and not user.locked and user.email not in found:
            found.append(user.email)
    return found


def build_message(sender: str, to: list[str], title: str, url: str, page: Path | None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = title
    message.set_content(f"{title}\n\nView it at {url}\n")
    if page is not None and page.is_file():
        message.add_alternative(page.read_text(errors="replace"), subtype="html")
    return message


def send(settings: Settings, message: EmailMessage) -> None:
    """Deliver ``message`` (blocking: call it in a thread)."""
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        with _connect(settings) as smtp:
            smtp.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        reply = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        raise MailError(
            f"The SMTP server {where} refused the login of {settings.smtp_username!r} "
            f"(settings smtp_username, smtp_password): {exc.smtp_code} {reply}"
        ) from None
    except ssl.SSLError as exc:
        raise MailError(
            f"TLS with the SMTP server {where} failed (setting smtp_security; a private CA "
            f"goes in SSL_CERT_FILE): {exc}"
        ) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"Could not send email through {where} (settings smtp_host, smtp_port): {exc}") from None


def _connect(settings: Settings) -> smtplib.SMTP:
    """An SMTP session protected as ``smtp_security`` says, logged in when configured."""
    security = settings.smtp_security
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if security == "tls":
        smtp = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=30, context=context)
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30)
    try:
        encrypted = security == "tls"
        if security in ("auto", "starttls"):
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
                encrypted = True
            elif security == "starttls":
                raise MailError(
                    f"The SMTP server {settings.smtp_host}:{settings.smtp_port} does not offer "
                    "STARTTLS, which smtp_security 'starttls' requires."
                )
        if settings.smtp_username:
            if not encrypted:
                raise MailError(
                    f"Not logging in to {settings.smtp_host}:{settings.smtp_port} as "
                    f"{settings.smtp_username!r}: the connection is not encrypted (the server "
                    "offers no STARTTLS, or smtp_security is 'none'), and the password would "
                    "travel in clear. Use a server with TLS (smtp_security 'starttls' or 'tls')."
                )
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
    except BaseException:
        smtp.close()
        raise
    return smtp
