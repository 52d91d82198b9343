"""C2PA manifests: sign an output as made by a trained model, and read one back.

``c2pa-python`` (the C2PA project's Rust SDK, as a binary wheel) writes and checks the
manifest; everything here works offline (no time-stamp authority, no remote manifests, no
OCSP). The signing key is the operator's (``TALKINGFACE_SIGNING_KEY`` and
``TALKINGFACE_SIGNING_CERT``, PEM) or, by default, a development key generated once with
its own certificate authority: a manifest signed with it says so, and its certificate is
on no trust list, so a checker reports the signature as valid but the signer as untrusted.
"""

from __future__ import annotations

import datetime
import functools
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from models.errors import TalkingFaceError

IPTC_TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
ASSERTION = "org.talkingface.generator"       # the project's own assertion: model, weights, watermark
DEV_KEY, DEV_CERT = "development-key.pem", "development-cert.pem"
DEV_ORGANISATION = "talkingface development key (not a trusted identity)"
DEV_NOTE = ("signed with a development key that talkingface generated on the machine that made this file; "
            "it identifies no one and is on no trust list")
# Offline: never fetch a remote manifest or a certificate's revocation status; no thumbnail in the manifest.
SDK_SETTINGS = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
                "builder": {"thumbnail": {"enabled": False}}}


class SigningError(TalkingFaceError):
    """The signing key or certificate cannot be used."""

    code = "signing_error"


def version() -> str:
    """This project's version, as the manifest's claim generator names it."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("talkingface")
    except PackageNotFoundError:
        return "0.0.0"


def available() -> bool:
    """Whether ``c2pa-python`` is installed (a platform without its wheel gets no manifests)."""
    try:
        import c2pa  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _context():
    import c2pa

    return c2pa.Context(c2pa.Settings.from_dict(SDK_SETTINGS))


# ---------------------------------------------------------------------------------------
# Keys


@dataclass(frozen=True)
class SigningKey:
    """A private key and its certificate chain (PEM, leaf first), and whether it is the development one."""

    key_pem: bytes
    chain_pem: bytes
    algorithm: str
    development: bool

    @classmethod
    def from_files(cls, key_path, cert_path, development=False) -> "SigningKey":
        """Read a PEM key and chain; SigningError when they cannot be read or the key type is not C2PA's."""
        try:
            key_pem, chain_pem = Path(key_path).read_bytes(), Path(cert_path).read_bytes()
        except OSError as exc:
            raise SigningError(f"cannot read the signing key or certificate: {exc.strerror}: {exc.filename}") from None
        return cls(key_pem, chain_pem, _algorithm(key_pem, key_path), development)

    def signer(self):
        """A ``c2pa.Signer`` for one signature (the SDK consumes it)."""
        import c2pa

        return c2pa.Signer.from_info(c2pa.C2paSignerInfo(self.algorithm, self.chain_pem, self.key_pem, None))


def _algorithm(key_pem: bytes, where) -> str:
    """The C2PA signature algorithm of a PEM private key (ES256/384/512, PS256, Ed25519)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{where} is not an unencrypted PEM private key: {exc}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size in (256, 384, 521):
        return {256: "es256", 384: "es384", 521: "es512"}[key.curve.key_size]
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise SigningError(f"{where}: C2PA signs with EC P-256/384/521, RSA (PSS) or Ed25519 keys, "
                       f"not {type(key).__name__}")


def development_key(folder) -> SigningKey:
    """The development key of ``folder``, generated there (with its own CA) the first time.

    Several processes may ask at once: each generates into a folder of its own and renames
    it into place; the first rename wins and the others read the winner's key.
    """
    folder = Path(folder)
    if not (folder / DEV_KEY).is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        fresh = Path(tempfile.mkdtemp(prefix=".signing-", dir=folder.parent))
        key_pem, chain_pem = generate_key()
        (fresh / DEV_CERT).write_bytes(chain_pem)
        (fresh / DEV_KEY).write_bytes(key_pem)
        os.chmod(fresh / DEV_KEY, 0o600)
        try:
            os.rename(fresh, folder)
        except OSError:  # another process put its key there first
            for name in (DEV_KEY, DEV_CERT):
                (fresh / name).unlink(missing_ok=True)
            fresh.rmdir()
    return SigningKey.from_files(folder / DEV_KEY, folder / DEV_CERT, development=True)


def generate_key(organisation: str = DEV_ORGANISATION) -> tuple[bytes, bytes]:
    """(key PEM, chain PEM): an EC P-256 signing key and certificate issued by a throwaway CA
    of ``organisation`` (the development key's by default).

    C2PA wants a signer certificate with a CA above it (not self-signed), digitalSignature
    use and an e-mail-protection purpose; the CA's key is not kept.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation)])

    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    until = now + datetime.timedelta(days=10 * 365)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("talkingface signing CA"))
          .issuer_name(name("talkingface signing CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name("talkingface signer"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key_pem, leaf.public_bytes(pem) + ca.public_bytes(pem)


# ---------------------------------------------------------------------------------------
# Signing


def definition(title: str, generator: dict, key: SigningKey) -> dict:
    """The manifest of one output: created by a trained model, with ``generator`` (model, weights...)."""
    agent = {"name": "talkingface", "version": version()}
    data = dict(generator, signing_key="development" if key.development else "configured")
    if key.development:
        data["signing_note"] = DEV_NOTE
    return {
        "claim_generator": f"talkingface/{agent['version']}",
        "claim_generator_info": [agent],
        "title": title,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{
                "action": "c2pa.created", "digitalSourceType": IPTC_TRAINED, "softwareAgent": agent,
                "description": f"made by the model {generator.get('model')} of talkingface",
            }]}},
            {"label": ASSERTION, "data": data},
        ],
    }


def sign(source, dest, media_type: str, title: str, generator: dict, key: SigningKey) -> None:
    """Write ``source`` (a path, or the bytes of a PNG) with a signed manifest to ``dest`` (a path or a
    writable binary stream)."""
    import c2pa

    builder = c2pa.Builder(definition(title, generator, key), context=_context())
    try:
        with (io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")) as src:
            if isinstance(dest, (str, os.PathLike)):
                with open(dest, "wb") as out:
                    builder.sign(key.signer(), media_type, src, out)
            else:
                builder.sign(key.signer(), media_type, src, dest)
    except c2pa.C2paError as exc:
        raise SigningError(f"signing the output failed: {exc}") from None
    finally:
        builder.close()


def sign_bytes(data: bytes, media_type: str, title: str, generator: dict, key: SigningKey) -> bytes:
    """``data`` (a whole PNG) with a signed manifest in it."""
    out = io.BytesIO()
    sign(data, out, media_type, title, generator, key)
    return out.getvalue()


# ---------------------------------------------------------------------------------------
# Reading


def read(data_or_path, media_type: str) -> dict | None:
    """What the manifest of a file says, or None when it has none.

    {"state": "trusted" | "valid" | "invalid", "problems": [validation codes that failed],
    "signer", "issuer", "algorithm", "claim_generator", "digital_source_type", "generator"
    (the project's assertion, or None), "development_key"}. "valid" is a correct signature
    over an unchanged file by a signer on no trust list (any development key).
    """
    import c2pa

    stream = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else open(data_or_path, "rb")
    try:
        with stream:
            reader = c2pa.Reader(media_type, stream, context=_context())
            store = json.loads(reader.json())
            state = (reader.get_validation_state() or "").lower()
            reader.close()
    except c2pa.C2paError.ManifestNotFound:
        return None
    except c2pa.C2paError as exc:   # a manifest is there but cannot be read: as good as a forged one
        return {"state": "invalid", "problems": [str(exc)], "signer": None, "issuer": None, "algorithm": None,
                "claim_generator": None, "digital_source_type": None, "generator": None, "development_key": False}
    active = store.get("manifests", {}).get(store.get("active_manifest"), {})
    actions = [action for assertion in active.get("assertions", []) if assertion["label"].startswith("c2pa.actions")
               for action in assertion.get("data", {}).get("actions", [])]
    created = next((a for a in actions if a.get("action") in ("c2pa.created", "c2pa.opened")), {})
    generator = next((a.get("data") for a in active.get("assertions", []) if a.get("label") == ASSERTION), None)
    signature = active.get("signature_info", {})
    untrusted = {"signingCredential.untrusted"}
    problems = [status["code"] for status in store.get("validation_status", []) if status["code"] not in untrusted]
    info = (active.get("claim_generator_info") or [{}])[0]
    return {
        "state": "invalid" if problems or state == "invalid" else state or "valid",
        "problems": problems,
        "signer": signature.get("common_name"),
        "issuer": signature.get("issuer"),
        "algorithm": signature.get("alg"),
        "claim_generator": active.get("claim_generator") or (f"{info.get('name')}/{info.get('version')}" if info
                                                              else None),
        "digital_source_type": created.get("digitalSourceType"),
        "generator": generator,
        "development_key": bool(generator and generator.get("signing_key") == "development")
        or DEV_ORGANISATION == signature.get("issuer"),
    }
