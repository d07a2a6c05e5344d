"""How every client authenticates to the brokers and encrypts: checked once, then given to aiokafka
and to Faust in their own terms.

One :class:`KafkaSecurity` travels in every :class:`~streams.kafka.clients.KafkaConnection`. Its
fields are named as the SDK's parameters; the settings name them ``TRUST_KAFKA_<FIELD>``. A
combination that would quietly connect with less than was asked for (credentials or TLS files
with a protocol that does not use them, a client certificate without its key) is refused, not
ignored: a mistake in the settings must never end in an unencrypted or anonymous connection.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Literal, get_args

from pydantic import SecretStr

from streams.errors import InvalidSettings

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SECURITY_PROTOCOLS: Final[tuple[str, ...]] = get_args(SecurityProtocol)
SASL_MECHANISMS: Final[tuple[str, ...]] = get_args(SaslMechanism)
_SASL_FIELDS: Final = ("sasl_mechanism", "sasl_username", "sasl_password")
_TLS_FILES: Final = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
#: OpenSSL's verify codes for a certificate that does not name the host connected to (by name:
#: X509_V_ERR_HOSTNAME_MISMATCH; by IP address: X509_V_ERR_IP_ADDRESS_MISMATCH).
_HOST_MISMATCH: Final = frozenset({62, 64})

#: What a listener that drops a client may want instead, by the client's protocol.
_WANTED_INSTEAD: Final[dict[str, str]] = {
    "PLAINTEXT": "TLS or SASL credentials",
    "SSL": "SASL credentials",
    "SASL_PLAINTEXT": "TLS",
    "SASL_SSL": "",
}

#: How a problem names a field: as the SDK's parameter, or as the settings' variable.
Naming = Callable[[str], str]


def parameter_name(name: str) -> str:
    return name


def environment_name(name: str) -> str:
    return f"TRUST_KAFKA_{name.upper()}"


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """The security options of a connection (default: plaintext, no authentication)."""

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    #: Off, the broker's certificate must still be signed by the CA, but may name any host.
    ssl_check_hostname: bool = True
    #: How messages name the fields (the settings' variables, or the SDK's parameters).
    naming: Naming = field(default=parameter_name, compare=False, repr=False)

    def arguments(self) -> dict[str, Any]:
        """The fields as keyword arguments (of the SDK's publishers, or of this class)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "naming"}

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def checked(self) -> KafkaSecurity:
        """This, or :class:`InvalidSettings` naming every problem."""
        problems = self.problems()
        if problems:
            raise InvalidSettings([(None, p) for p in problems])
        return self

    def problems(self) -> list[str]:
        """Every reason these options cannot be used as they are (reads the TLS files)."""
        name = self.naming
        protocol = name("security_protocol")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            return [
                f"{protocol} must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                f"got {self.security_protocol!r}"
            ]
        problems = []
        if self.sasl_mechanism is not None and self.sasl_mechanism not in SASL_MECHANISMS:
            problems.append(
                f"{name('sasl_mechanism')} must be one of {', '.join(SASL_MECHANISMS)}, "
                f"got {self.sasl_mechanism!r}"
            )
        given = {f for f in (*_SASL_FIELDS, *_TLS_FILES) if getattr(self, f) is not None}
        if self.uses_sasl:
            missing = [name(f) for f in _SASL_FIELDS if f not in given]
            if missing:
                problems.append(f"{protocol}={self.security_protocol} needs {', '.join(missing)}")
        elif unused := [name(f) for f in _SASL_FIELDS if f in given]:
            problems.append(
                f"{', '.join(unused)} given, but {protocol} is {self.security_protocol}, which "
                "sends no credentials: set it to SASL_SSL (or SASL_PLAINTEXT), or remove them"
            )
        if not self.uses_tls and (unused := [name(f) for f in _TLS_FILES if f in given]):
            problems.append(
                f"{', '.join(unused)} given, but {protocol} is {self.security_protocol}, which "
                "does not use TLS: set it to SSL or SASL_SSL, or remove them"
            )
        if ("ssl_certfile" in given) != ("ssl_keyfile" in given):
            problems.append(
                f"{name('ssl_certfile')} and {name('ssl_keyfile')} go together: a client "
                "certificate is presented with its private key"
            )
        file_problems = [
            f"{name(f)}: {problem}"
            for f in _TLS_FILES
            if (problem := _unreadable(getattr(self, f))) is not None
        ]
        problems += file_problems
        if not problems and self.uses_tls:
            try:
                self.ssl_context()
            except (ssl.SSLError, OSError) as exc:
                problems.append(
                    f"the TLS files ({', '.join(name(f) for f in _TLS_FILES if f in given)}) "
                    f"cannot be loaded: {exc}; they must be PEM files, the key unencrypted"
                )
        return problems

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context every client connects with (``None``: no TLS).

        Without a CA file the system's CAs are trusted. The certificate chain is always verified;
        ``ssl_check_hostname`` decides only whether the certificate must name the host.
        """
        if not self.uses_tls:
            return None
        from aiokafka.helpers import create_ssl_context

        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
        )
        context.check_hostname = self.ssl_check_hostname
        return context

    def aiokafka_options(self) -> dict[str, Any]:
        """The options of an aiokafka client, or of a connection (none for plaintext)."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None  # checked: SASL has all three
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password.get_secret_value(),
            }
        return options

    def faust_options(self) -> dict[str, Any]:
        """The same, as ``faust.App`` settings (none for plaintext).

        Faust turns ``broker_credentials`` into aiokafka's options for its consumer, producer and
        topic creation: SASL credentials with an SSL context become SASL_SSL, without one
        SASL_PLAINTEXT, and the mechanism's value (``SCRAM-SHA-512``...) is passed on as it is.
        """
        if self.security_protocol == "PLAINTEXT":
            return {}
        import faust

        context = self.ssl_context()
        if not self.uses_sasl:
            return {"broker_credentials": faust.SSLCredentials(context)}
        assert self.sasl_password is not None
        return {
            "broker_credentials": faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value(),
                mechanism=self.sasl_mechanism,
                ssl_context=context,
            )
        }

    def describe_failure(self, address: str, exc: BaseException) -> str | None:
        """Why connecting to ``address`` (and asking it for metadata) failed, when the reason is
        security; else ``None``."""
        from aiokafka.errors import (
            AuthenticationFailedError,
            KafkaConnectionError,
            SaslAuthenticationFailed,
            UnsupportedSaslMechanismError,
        )

        name = self.naming
        # aiokafka's error when the peer closes a connection it accepted (a refused one is an
        # OSError): what a listener does with a client that does not start as it expects.
        wanted = _WANTED_INSTEAD[self.security_protocol]
        if isinstance(exc, KafkaConnectionError) and wanted:
            return (
                f"the broker at {address} accepted the connection, then dropped it: its "
                f"listener may require {wanted}, and {name('security_protocol')} is "
                f"{self.security_protocol}"
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = (
                f"certificate verify failed: {exc.verify_message}" if exc.verify_message else exc
            )
            if exc.verify_code in _HOST_MISMATCH:
                return (
                    f"TLS: the certificate of the broker at {address} does not name that host "
                    f"({reason}); connect to it by a name its certificate has, or set "
                    f"{name('ssl_check_hostname')}=false to accept any name its CA signed"
                )
            trusted = self.ssl_cafile or "the system's certificate authorities"
            return (
                f"TLS: the broker at {address} presented a certificate that is not trusted "
                f"({reason}); {name('ssl_cafile')} ({trusted}) must hold the CA that signed it"
            )
        if isinstance(exc, ssl.SSLError):
            return (
                f"TLS handshake with the broker at {address} failed ({exc.reason or exc}); "
                f"{name('security_protocol')} is {self.security_protocol}: is the listener there "
                "a TLS one?"
            )
        if isinstance(exc, SaslAuthenticationFailed | AuthenticationFailedError):
            return (
                f"the broker at {address} refused the credentials of {self.sasl_username!r} "
                f"({self.sasl_mechanism}): check {name('sasl_username')} and "
                f"{name('sasl_password')}"
            )
        if isinstance(exc, UnsupportedSaslMechanismError):
            return (
                f"the broker at {address} does not offer {name('sasl_mechanism')}="
                f"{self.sasl_mechanism}"
            )
        return None


def _unreadable(path: Path | None) -> str | None:
    """Why ``path`` cannot be read, or ``None`` (also when it is not given)."""
    if path is None:
        return None
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_file():
        return f"{path} is not a file"
    if not os.access(path, os.R_OK):
        return f"{path} cannot be read by this user"
    return None
