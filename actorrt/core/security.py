"""TLS settings: certificates for ``tls://`` connections (mutual TLS, one cluster CA).

Every host of a TLS cluster has a certificate signed by the cluster's CA and checks its
peer's against that CA, both ways: a peer without such a certificate cannot even start
the actorrt handshake, and traffic is encrypted. The cluster secret's HMAC handshake
still runs inside TLS. Host names are not checked (``check_hostname`` off): peers are
dialled by IP and the CA is the cluster's own, so a certificate it signed *is* the proof
of membership; a certificate signed by anyone else is refused.
"""
from __future__ import annotations

import os
import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class Security:
    """Where a process finds its TLS files; like dask's ``Security``.

    >>> sec = Security(tls_ca_file="ca.pem", tls_cert="node.pem", tls_key="node.key")  # doctest: +SKIP
    >>> Client("tls://10.0.0.1:8786", security=sec)                                   # doctest: +SKIP
    """

    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("tls_ca_file", "tls_cert", "tls_key") if getattr(self, name)]
        if given and len(given) != 3:
            missing = sorted({"tls_ca_file", "tls_cert", "tls_key"} - set(given))
            raise ValueError(f"TLS needs a CA file, a certificate and its key; missing: {', '.join(missing)}")
        for name in given:
            path = getattr(self, name)
            if not os.path.isfile(path):
                raise ValueError(f"{name}: no such file {path!r}")

    @property
    def enabled(self) -> bool:
        return bool(self.tls_cert)

    @property
    def scheme(self) -> str:
        """The address scheme these settings call for: ``tls`` with certificates, else ``tcp``."""
        return "tls" if self.enabled else "tcp"

    def server_context(self) -> ssl.SSLContext:
        return self._context(ssl.Purpose.CLIENT_AUTH)

    def client_context(self) -> ssl.SSLContext:
        return self._context(ssl.Purpose.SERVER_AUTH)

    def _context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        if not self.enabled:
            raise ValueError("tls:// addresses need a Security with tls_ca_file, tls_cert and tls_key")
        ctx = ssl.create_default_context(purpose, cafile=self.tls_ca_file)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED  # both ways: the server asks for the client's too
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)  # type: ignore[arg-type]
        except (ssl.SSLError, OSError) as e:
            raise ValueError(f"cannot load the certificate {self.tls_cert!r} with key {self.tls_key!r}: {e}") from None
        return ctx
