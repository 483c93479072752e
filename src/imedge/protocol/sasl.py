"""Server side of SASL for client streams (RFC 6120 §6), sans-IO.

Mechanisms: SCRAM-SHA-256 and SCRAM-SHA-1 (RFC 5802, RFC 7677), their -PLUS variants with
channel binding (RFC 5929 `tls-server-end-point`, `tls-unique`), and PLAIN (RFC 4616) over
TLS only. The stream code owns the XML (`<auth>`, `<response>`, ...) and base64; this module
sees decoded bytes and answers with a `SaslStep`. Storage is never touched: when an exchange
needs the account's salted keys it returns `NeedKeys`, and the caller answers through
`SaslExchange.provide_keys`.

SCRAM is written out here (it is short) rather than taken from `scramp.ScramServer`, because
that refuses any authzid (XMPP clients send one) and binds a single channel-binding type,
whereas a slixmpp client on TLS 1.2 asks for `tls-unique` and scramp's client for
`tls-server-end-point`. `scramp.utils.saslprep` prepares passwords, as RFC 5802 §2.2 asks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum, auto

from scramp.utils import saslprep

from imedge.domain.jid import Jid, JidMalformed, prep_domain, prep_local

# RFC 7677 §4 and RFC 5802 §5.1: at least 4096 iterations.
DEFAULT_ITERATIONS = 4096
_SALT_BYTES = 16
_NONCE_BYTES = 18  # a multiple of 3, so the base64 form has no '=' padding
# Far above any honest SCRAM or PLAIN message; refuses to parse megabytes of junk.
MAX_MESSAGE_BYTES = 4096
# RFC 4616 §2: implementations MUST accept up to 255 octets per field; we allow more.
_MAX_PLAIN_FIELD_BYTES = 1023


class Mechanism(StrEnum):
    SCRAM_SHA_256_PLUS = "SCRAM-SHA-256-PLUS"
    SCRAM_SHA_1_PLUS = "SCRAM-SHA-1-PLUS"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_1 = "SCRAM-SHA-1"
    PLAIN = "PLAIN"


class SaslFailure(StrEnum):
    """RFC 6120 §6.5: the child element of `<failure/>`."""

    ABORTED = "aborted"
    ACCOUNT_DISABLED = "account-disabled"
    CREDENTIALS_EXPIRED = "credentials-expired"
    ENCRYPTION_REQUIRED = "encryption-required"
    INCORRECT_ENCODING = "incorrect-encoding"
    INVALID_AUTHZID = "invalid-authzid"
    INVALID_MECHANISM = "invalid-mechanism"
    MALFORMED_REQUEST = "malformed-request"
    MECHANISM_TOO_WEAK = "mechanism-too-weak"
    NOT_AUTHORIZED = "not-authorized"
    TEMPORARY_AUTH_FAILURE = "temporary-auth-failure"


class ChannelBindingType(StrEnum):
    """Channel-binding types we can check; the caller computes the data.

    `tls-exporter` (RFC 9266, the one TLS 1.3 needs) is absent: the stdlib `ssl` module cannot
    export keying material (CPython issue 95341), so on TLS 1.3 only `tls-server-end-point`
    is available.
    """

    TLS_SERVER_END_POINT = "tls-server-end-point"  # RFC 5929 §4
    TLS_UNIQUE = "tls-unique"  # RFC 5929 §3; TLS <= 1.2 only (RFC 9266 §3)


@dataclass(frozen=True, slots=True)
class ChannelBinding:
    type: ChannelBindingType
    data: bytes


@dataclass(frozen=True, slots=True)
class ScramKeys:
    """Salted SCRAM keys for one hash (RFC 5802 §3); mirrors `store.ports.ScramCredential`."""

    mechanism: str  # "SCRAM-SHA-1" or "SCRAM-SHA-256"
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@dataclass(frozen=True, slots=True)
class NeedKeys:
    """Look up the keys of `username` and call `SaslExchange.provide_keys`.

    `username` is the SASL authcid as the client sent it (SCRAM escapes already decoded), not
    prepared. `mechanism` names the keys wanted ("SCRAM-SHA-1" or "SCRAM-SHA-256"); for PLAIN
    any stored keys will do, SCRAM-SHA-256 is merely preferred. Unknown user: pass None.
    """

    username: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class Challenge:
    data: bytes


@dataclass(frozen=True, slots=True)
class Success:
    """Authenticated as `username` (as sent); `additional_data` goes inside `<success/>`."""

    username: str
    additional_data: bytes | None


@dataclass(frozen=True, slots=True)
class Failure:
    condition: SaslFailure
    text: str | None = None


SaslStep = NeedKeys | Challenge | Success | Failure


class SaslStateError(RuntimeError):
    """The caller drove the exchange out of order (a bug in the caller, not in the peer)."""


class _Malformed(Exception):
    """Internal: the peer's message is malformed; becomes a `Failure`."""

    def __init__(self, text: str, condition: SaslFailure = SaslFailure.MALFORMED_REQUEST) -> None:
        super().__init__(text)
        self.condition = condition


def _hash_name(mechanism: str) -> str | None:
    base = mechanism.removesuffix("-PLUS")
    if base == Mechanism.SCRAM_SHA_256:
        return "sha256"
    if base == Mechanism.SCRAM_SHA_1:
        return "sha1"
    return None


def _hmac(hash_name: str, key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hash_name).digest()


def _prepare_password(password: str) -> bytes:
    """RFC 5802 §2.2: SASLprep (RFC 4013) the password; raise ValueError if it is invalid."""
    try:
        prepared: str = saslprep(password)
    except Exception as exc:  # scramp raises its own ScramException
        raise ValueError(f"password not allowed by SASLprep: {exc}") from None
    return prepared.encode("utf-8")


def _derive(hash_name: str, prepared: bytes, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """RFC 5802 §3: (StoredKey, ServerKey) from the prepared password."""
    # Hi() is PBKDF2 with HMAC as the PRF and dkLen the hash length (RFC 5802 §2.2).
    salted = hashlib.pbkdf2_hmac(hash_name, prepared, salt, iterations)
    client_key = _hmac(hash_name, salted, b"Client Key")
    stored_key = hashlib.new(hash_name, client_key).digest()
    server_key = _hmac(hash_name, salted, b"Server Key")
    return stored_key, server_key


def make_scram_keys(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> list[ScramKeys]:
    """Keys for SCRAM-SHA-1 and SCRAM-SHA-256; raise ValueError if SASLprep rejects `password`.

    Each hash gets its own random salt unless `salt` is given.
    """
    if iterations < 1:
        raise ValueError("iterations must be positive")
    prepared = _prepare_password(password)
    out = []
    for mech in (Mechanism.SCRAM_SHA_1, Mechanism.SCRAM_SHA_256):
        hash_name = _hash_name(mech)
        assert hash_name is not None
        mech_salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
        stored_key, server_key = _derive(hash_name, prepared, mech_salt, iterations)
        out.append(ScramKeys(str(mech), mech_salt, iterations, stored_key, server_key))
    return out


def verify_password(password: str, keys: ScramKeys) -> bool:
    """Whether `password` produced `keys` (constant-time comparison); False if it can't have."""
    hash_name = _hash_name(keys.mechanism)
    if hash_name is None or keys.iterations < 1:
        return False
    try:
        prepared = _prepare_password(password)
    except ValueError:
        return False
    stored_key, server_key = _derive(hash_name, prepared, keys.salt, keys.iterations)
    # Both compared, with `&`, so the time does not depend on which one differs.
    return hmac.compare_digest(stored_key, keys.stored_key) & hmac.compare_digest(
        server_key, keys.server_key
    )


def offered_mechanisms(*, tls: bool, channel_binding: bool) -> list[str]:
    """The `<mechanisms/>` list, strongest first.

    -PLUS only when channel-binding data is available (RFC 5802 §6); PLAIN only under TLS
    (RFC 6120 §6.4.1 and §13.9.4: no cleartext passwords on an unprotected stream).
    """
    out: list[str] = []
    if channel_binding:
        out += [Mechanism.SCRAM_SHA_256_PLUS, Mechanism.SCRAM_SHA_1_PLUS]
    out += [Mechanism.SCRAM_SHA_256, Mechanism.SCRAM_SHA_1]
    if tls:
        out.append(Mechanism.PLAIN)
    return [str(m) for m in out]


def tls_server_end_point(cert_der: bytes) -> bytes:
    """RFC 5929 §4.1: the hash of the server certificate, for `tls-server-end-point`.

    The hash is the certificate's signature hash, except that MD5 and SHA-1 become SHA-256.
    For signatures without a separate hash (Ed25519, Ed448) RFC 5929 says nothing; we use
    SHA-256, as most implementations do. Raise ValueError if `cert_der` is not a certificate.
    """
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_der_x509_certificate(cert_der)
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if algorithm is None or isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert_der)
    return digest.finalize()


# RFC 5802 §7 grammar pieces.
_CB_NAME = re.compile(r"[A-Za-z0-9.\-]+")
_PRINTABLE_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_ATTR = re.compile(r"[A-Za-z]=")


def _decode_saslname(value: str) -> str:
    """RFC 5802 §5.1: '=2C' is ',' and '=3D' is '='; any other '=' is malformed."""
    if not value:
        raise _Malformed("empty saslname")
    parts = value.split("=")
    out = [parts[0]]
    for part in parts[1:]:
        if part.startswith("2C"):
            out.append("," + part[2:])
        elif part.startswith("3D"):
            out.append("=" + part[2:])
        else:
            raise _Malformed("bad '=' escape in saslname")
    return "".join(out)


def _attr(part: str, name: str) -> str:
    if not part.startswith(name + "="):
        raise _Malformed(f"expected attribute '{name}'")
    return part[2:]


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Malformed("bad base64") from None


def _decode_message(data: bytes) -> str:
    if len(data) > MAX_MESSAGE_BYTES:
        raise _Malformed("message too long")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("not UTF-8") from None
    if "\x00" in text:
        raise _Malformed("NUL in message")
    return text


@dataclass(frozen=True, slots=True)
class _ClientFirst:
    gs2_header: str  # including its trailing comma, for the channel-binding check
    cb_type: ChannelBindingType | None  # set when the flag is "p=..."
    username: str
    bare: str  # client-first-message-bare, exactly as sent, for AuthMessage
    nonce: str


def _parse_client_first(text: str) -> tuple[str, str, str | None, str]:
    """Split the gs2 header (RFC 5802 §7): (flag, raw authzid field, authzid, bare message)."""
    parts = text.split(",", 2)
    if len(parts) != 3:
        raise _Malformed("missing gs2 header")
    flag, authzid_part, bare = parts
    authzid = None
    if authzid_part:
        authzid = _decode_saslname(_attr(authzid_part, "a"))
    return flag, authzid_part, authzid, bare


class _State(Enum):
    START = auto()
    NEED_KEYS = auto()
    CLIENT_FINAL = auto()
    DONE = auto()


class SaslExchange:
    """One SASL exchange on one stream, from `<auth mechanism=...>` to success or failure.

    `channel_bindings` holds every binding the caller could compute for this TLS connection
    (empty without TLS); -PLUS mechanisms were offered iff it is non-empty, and the client
    may pick any of them (slixmpp asks for tls-unique, other clients for
    tls-server-end-point). `domain` is the stream's domain, for the authzid check.
    `fake_iterations` is the iteration count announced for unknown users: set it to the
    count new accounts get, so that it does not tell them apart (RFC 5802 §9).

    Feed the decoded `<auth/>` initial response (b"" if there was none) and then each
    `<response/>` to `step`; answer `NeedKeys` with `provide_keys`. Malformed input of any
    kind yields `Failure`; an exchange is over after `Success` or `Failure`.
    """

    def __init__(
        self,
        mechanism: str,
        *,
        domain: str,
        tls: bool,
        channel_bindings: Sequence[ChannelBinding] = (),
        fake_iterations: int = DEFAULT_ITERATIONS,
    ) -> None:
        self.mechanism = mechanism
        self._domain = domain
        self._tls = tls
        self._bindings = {cb.type: cb.data for cb in channel_bindings}
        self._fake_iterations = max(1, fake_iterations)
        self._state = _State.START
        self._asked_initial = False
        self._username = ""
        self._password = ""  # PLAIN only, until provide_keys
        self._first: _ClientFirst | None = None
        self._keys: ScramKeys | None = None
        self._nonce = ""
        self._server_first = ""
        self._start_failure = self._check_mechanism()

    @property
    def is_done(self) -> bool:
        return self._state is _State.DONE

    def _check_mechanism(self) -> Failure | None:
        offered = offered_mechanisms(tls=self._tls, channel_binding=bool(self._bindings))
        if self.mechanism in offered:
            return None
        if self.mechanism == Mechanism.PLAIN:
            # RFC 6120 §6.5.5: usable only once the stream is encrypted.
            return Failure(SaslFailure.ENCRYPTION_REQUIRED, "PLAIN needs TLS")
        return Failure(SaslFailure.INVALID_MECHANISM)

    def abort(self) -> Failure:
        """The client sent `<abort/>` (RFC 6120 §6.4.4)."""
        return self._fail(SaslFailure.ABORTED)

    def _fail(self, condition: SaslFailure, text: str | None = None) -> Failure:
        self._state = _State.DONE
        self._password = ""
        self._keys = None
        return Failure(condition, text)

    def step(self, data: bytes) -> SaslStep:
        """Process one decoded client message."""
        if self._state is _State.NEED_KEYS:
            raise SaslStateError("step() called while waiting for provide_keys()")
        if self._state is _State.DONE:
            return Failure(SaslFailure.MALFORMED_REQUEST, "exchange already finished")
        if self._start_failure is not None:
            return self._fail(self._start_failure.condition, self._start_failure.text)
        try:
            if self._state is _State.START:
                if not data and not self._asked_initial:
                    # RFC 6120 §6.4.2: no initial response, so send an empty challenge.
                    self._asked_initial = True
                    return Challenge(b"")
                if self.mechanism == Mechanism.PLAIN:
                    return self._plain_start(data)
                return self._scram_first(data)
            return self._scram_final(data)
        except _Malformed as exc:
            return self._fail(exc.condition, str(exc))

    def provide_keys(self, keys: ScramKeys | None) -> SaslStep:
        """Answer `NeedKeys`; None if the user is unknown (the exchange then fails later,
        exactly as with a wrong password)."""
        if self._state is not _State.NEED_KEYS:
            raise SaslStateError("provide_keys() called without NeedKeys")
        if self.mechanism == Mechanism.PLAIN:
            return self._plain_finish(keys)
        return self._scram_server_first(keys)

    # --- authzid (RFC 6120 §6.3.8): we only accept the authcid's own bare JID.

    def _check_authzid(self, authzid: str | None, username: str) -> None:
        if authzid is None:
            return
        try:
            wanted = Jid(prep_local(username), prep_domain(self._domain))
            given = Jid.parse(authzid)
        except JidMalformed:
            raise _Malformed("authzid not allowed", SaslFailure.INVALID_AUTHZID) from None
        if given != wanted:
            raise _Malformed("authzid not allowed", SaslFailure.INVALID_AUTHZID)

    # --- PLAIN (RFC 4616 §2): [authzid] NUL authcid NUL passwd

    def _plain_start(self, data: bytes) -> SaslStep:
        if len(data) > MAX_MESSAGE_BYTES:
            raise _Malformed("message too long")
        fields = data.split(b"\x00")
        if len(fields) != 3:
            raise _Malformed("PLAIN needs exactly two NULs")
        if any(len(f) > _MAX_PLAIN_FIELD_BYTES for f in fields):
            raise _Malformed("PLAIN field too long")
        try:
            authzid, authcid, passwd = (f.decode("utf-8") for f in fields)
        except UnicodeDecodeError:
            raise _Malformed("PLAIN fields must be UTF-8") from None
        if not authcid or not passwd:
            raise _Malformed("empty authcid or password")
        self._check_authzid(authzid or None, authcid)
        self._username = authcid
        self._password = passwd
        self._state = _State.NEED_KEYS
        return NeedKeys(authcid, str(Mechanism.SCRAM_SHA_256))

    def _plain_finish(self, keys: ScramKeys | None) -> SaslStep:
        password = self._password
        if keys is None or _hash_name(keys.mechanism) is None:
            # Unknown user: burn the same PBKDF2 time as a real check (no user oracle).
            keys = _fake_keys(Mechanism.SCRAM_SHA_256, self._username, self._fake_iterations)
            verify_password(password, keys)
            return self._fail(SaslFailure.NOT_AUTHORIZED)
        if not verify_password(password, keys):
            return self._fail(SaslFailure.NOT_AUTHORIZED)
        self._state = _State.DONE
        self._password = ""
        return Success(self._username, None)

    # --- SCRAM (RFC 5802 §5 and §7)

    def _scram_first(self, data: bytes) -> SaslStep:
        text = _decode_message(data)
        flag, authzid_part, authzid, bare = _parse_client_first(text)
        plus = self.mechanism.endswith("-PLUS")
        cb_type: ChannelBindingType | None = None
        if flag == "n":
            if plus:
                raise _Malformed("-PLUS mechanism without channel binding")
        elif flag == "y":
            if plus:
                raise _Malformed("-PLUS mechanism without channel binding")
            if self._bindings:
                # RFC 5802 §6: the client thinks we do not support channel binding but we
                # offered -PLUS, so someone removed it from the list: a downgrade attack.
                raise _Malformed("channel binding downgrade", SaslFailure.NOT_AUTHORIZED)
        elif flag.startswith("p="):
            if not plus:
                raise _Malformed("channel binding requested with a non-PLUS mechanism")
            name = flag[2:]
            if not _CB_NAME.fullmatch(name):
                raise _Malformed("bad channel binding name")
            try:
                cb_type = ChannelBindingType(name)
            except ValueError:
                cb_type = None
            if cb_type is None or cb_type not in self._bindings:
                raise _Malformed("unsupported channel binding type", SaslFailure.NOT_AUTHORIZED)
        else:
            raise _Malformed("bad gs2 channel binding flag")

        parts = bare.split(",")
        if parts[0].startswith("m="):
            # RFC 5802 §5.1: no mandatory extension is defined, so we must fail.
            raise _Malformed("mandatory extension not supported")
        if len(parts) < 2:
            raise _Malformed("missing nonce")
        username = _decode_saslname(_attr(parts[0], "n"))
        nonce = _attr(parts[1], "r")
        if not _PRINTABLE_NONCE.fullmatch(nonce):
            raise _Malformed("bad client nonce")
        for ext in parts[2:]:
            if not _ATTR.match(ext) or len(ext) < 3:
                raise _Malformed("bad extension")
        self._check_authzid(authzid, username)

        self._first = _ClientFirst(
            gs2_header=f"{flag},{authzid_part},",
            cb_type=cb_type,
            username=username,
            bare=bare,
            nonce=nonce,
        )
        self._username = username
        self._state = _State.NEED_KEYS
        base = self.mechanism.removesuffix("-PLUS")
        return NeedKeys(username, base)

    def _scram_server_first(self, keys: ScramKeys | None) -> SaslStep:
        assert self._first is not None
        base = self.mechanism.removesuffix("-PLUS")
        if keys is None or keys.mechanism != base or keys.iterations < 1:
            # Unknown user (or no keys for this hash): carry on with keys nobody can match,
            # salted per username so that asking twice gives the same salt (RFC 5802 §9).
            keys = _fake_keys(base, self._username, self._fake_iterations)
        self._keys = keys
        self._nonce = self._first.nonce + base64.b64encode(
            secrets.token_bytes(_NONCE_BYTES)
        ).decode("ascii")
        salt = base64.b64encode(keys.salt).decode("ascii")
        self._server_first = f"r={self._nonce},s={salt},i={keys.iterations}"
        self._state = _State.CLIENT_FINAL
        return Challenge(self._server_first.encode("utf-8"))

    def _scram_final(self, data: bytes) -> SaslStep:
        assert self._first is not None
        assert self._keys is not None
        keys = self._keys
        hash_name = _hash_name(self.mechanism)
        assert hash_name is not None
        text = _decode_message(data)
        parts = text.split(",")
        if len(parts) < 3:
            raise _Malformed("client-final-message too short")
        cbind = _b64decode(_attr(parts[0], "c"))
        nonce = _attr(parts[1], "r")
        proof = _b64decode(_attr(parts[-1], "p"))
        for ext in parts[2:-1]:
            if not _ATTR.match(ext):
                raise _Malformed("bad extension")

        expected_cbind = self._first.gs2_header.encode("utf-8")
        if self._first.cb_type is not None:
            expected_cbind += self._bindings[self._first.cb_type]
        if not hmac.compare_digest(cbind, expected_cbind):
            raise _Malformed("channel binding mismatch", SaslFailure.NOT_AUTHORIZED)
        if not hmac.compare_digest(nonce.encode("utf-8"), self._nonce.encode("ascii")):
            raise _Malformed("nonce mismatch", SaslFailure.NOT_AUTHORIZED)
        if len(proof) != hashlib.new(hash_name).digest_size:
            raise _Malformed("client proof has the wrong length")

        # RFC 5802 §3: AuthMessage, ClientSignature, ClientKey, then H(ClientKey) ?= StoredKey.
        without_proof = ",".join(parts[:-1])
        auth_message = f"{self._first.bare},{self._server_first},{without_proof}".encode()
        client_signature = _hmac(hash_name, keys.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        if not hmac.compare_digest(hashlib.new(hash_name, client_key).digest(), keys.stored_key):
            return self._fail(SaslFailure.NOT_AUTHORIZED)
        server_signature = _hmac(hash_name, keys.server_key, auth_message)
        self._state = _State.DONE
        self._keys = None
        verifier = b"v=" + base64.b64encode(server_signature)
        return Success(self._username, verifier)


_FAKE_SECRET = secrets.token_bytes(32)


def _fake_keys(mechanism: str, username: str, iterations: int) -> ScramKeys:
    """Keys for a user that does not exist: a stable salt, and keys no proof can match."""
    hash_name = _hash_name(mechanism) or "sha256"
    salt = _hmac("sha256", _FAKE_SECRET, username.encode("utf-8", "surrogatepass"))[:_SALT_BYTES]
    size = hashlib.new(hash_name).digest_size
    return ScramKeys(
        str(mechanism),
        salt,
        iterations,
        secrets.token_bytes(size),
        secrets.token_bytes(size),
    )
