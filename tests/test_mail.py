"""Mailing renderings through SMTP servers that want STARTTLS, implicit TLS and a login
(real aiosmtpd servers on loopback with a certificate made for the test)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import free_port

from podium.render.mail import MailError, build_message, send
from podium.settings import Settings, load_settings

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "podium test smtp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    root = tmp_path_factory.mktemp("smtp-tls")
    cert_file, key_file = root / "cert.pem", root / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return cert_file, key_file


@dataclass
class Inbox:
    messages: list[str] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope.content.decode(errors="replace"))
        return "250 OK"

    def authenticate(self, _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        login, password = data.login.decode(), data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login, password) == ("reports", PASSWORD), handled=False)


@pytest.fixture
def smtp_server(certificate: tuple[Path, Path]) -> Iterator[Any]:
    """Start an aiosmtpd server: ``smtp_server(mode)`` with mode starttls, tls or plain."""
    from aiosmtpd.controller import Controller

    started: list[Any] = []

    def start(mode: str) -> tuple[Inbox, int]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certificate)
        inbox = Inbox()
        options: dict[str, Any] = dict(
            hostname="127.0.0.1", port=free_port(), authenticator=inbox.authenticate,
            auth_require_tls=mode != "plain",
        )
        if mode == "starttls":
            options.update(tls_context=context, require_starttls=True)
        elif mode == "tls":
            # The whole session is TLS, which aiosmtpd's AUTH check (STARTTLS only) misses.
            options.update(ssl_context=context, auth_require_tls=False)
        else:
            options.update(auth_require_tls=False)
        controller = Controller(inbox, **options)
        controller.start()
        started.append(controller)
        return inbox, controller.port

    yield start
    for controller in started:
        controller.stop()


def mail_settings(tmp_path: Path, port: int, **values: Any) -> Settings:
    return load_settings(None, data_dir=tmp_path / "data", smtp_host="127.0.0.1", smtp_port=port,
                         smtp_from="reports@podium.test", **values)


def message(settings: Settings) -> Any:
    return build_message(settings.smtp_from, ["viewer@podium.test"], "Weekly report",
                         "http://podium.test/content/x/", None)


@pytest.fixture
def trust(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))


def test_starttls_then_login_delivers(smtp_server: Any, trust: None, tmp_path: Path) -> None:
    inbox, port = smtp_server("starttls")
    settings = mail_settings(tmp_path, port, smtp_username="reports", smtp_password=PASSWORD)
    send(settings, message(settings))
    assert inbox.logins == [("reports", PASSWORD)]
    assert len(inbox.messages) == 1 and "Weekly report" in inbox.messages[0]


def test_implicit_tls_delivers(smtp_server: Any, trust: None, tmp_path: Path) -> None:
    inbox, port = smtp_server("tls")
    settings = mail_settings(tmp_path, port, smtp_security="tls", smtp_username="reports", smtp_password=PASSWORD)
    send(settings, message(settings))
    assert len(inbox.messages) == 1


def test_wrong_password_is_reported_without_the_password(smtp_server: Any, trust: None, tmp_path: Path) -> None:
    inbox, port = smtp_server("starttls")
    settings = mail_settings(tmp_path, port, smtp_username="reports", smtp_password="wrong-secret")
    with pytest.raises(MailError, match="refused the login of 'reports'") as raised:
        send(settings, message(settings))
    assert "wrong-secret" not in str(raised.value)
    assert inbox.messages == []


def test_untrusted_certificate_fails_clearly(smtp_server: Any, tmp_path: Path) -> None:
    inbox, port = smtp_server("starttls")
    settings = mail_settings(tmp_path, port, smtp_username="reports", smtp_password=PASSWORD)
    with pytest.raises(MailError, match="TLS with the SMTP server .* failed.*SSL_CERT_FILE"):
        send(settings, message(settings))
    assert inbox.logins == [] and inbox.messages == []


def test_no_login_over_an_unencrypted_connection(smtp_server: Any, tmp_path: Path) -> None:
    inbox, port = smtp_server("plain")
    settings = mail_settings(tmp_path, port, smtp_username="reports", smtp_password=PASSWORD)
    with pytest.raises(MailError, match="not encrypted"):
        send(settings, message(settings))
    assert inbox.logins == [] and inbox.messages == []
    # Without a login, a server without TLS still gets mail under 'auto'...
    send(mail_settings(tmp_path, port), message(settings))
    assert len(inbox.messages) == 1
    # ... but not when STARTTLS is required.
    with pytest.raises(MailError, match="does not offer STARTTLS"):
        send(mail_settings(tmp_path, port, smtp_security="starttls"), message(settings))


def test_password_is_never_printed(tmp_path: Path) -> None:
    settings = mail_settings(tmp_path, 25, smtp_username="reports", smtp_password=PASSWORD)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
    assert settings.smtp_password.get_secret_value() == PASSWORD
