"""The cluster's certificate authority, its certificates and its join tokens.

Pure: the ``cryptography`` package, the standard library and :mod:`podium.errors`; no
sockets, no server, no agent.  The server (:mod:`podium.server.tls_routes`), the
composition root (:mod:`podium.tls_runtime`) and the CLI (``podium tls``) build on it.

- :mod:`podium.tls.ca`: create or load the CA, sign server and agent certificates;
- :mod:`podium.tls.token`: join tokens (``PDM-1-<CA fingerprint>-<secret>``);
- :mod:`podium.tls.identity`: who a verified peer certificate names (role, node id, name);
- :mod:`podium.tls.asgi`: the ASGI guard that requires such a certificate on agent routes;
- :mod:`podium.tls.files`: writing key material with its file modes (0600).
"""

from __future__ import annotations

from podium.errors import PodiumError


class TLSError(PodiumError):
    """A certificate, key, CSR or join token is missing, invalid, expired or does not match."""


__all__ = ["TLSError"]
