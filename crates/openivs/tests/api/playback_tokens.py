"""Playback tokens and GeoIP databases for the private-channel tests, made with libraries
independent of openivs: PyJWT + cryptography (tokens, keys) and mmdb-writer (GeoIP).

  keypair DIR NAME            writes DIR/NAME-private.pem and DIR/NAME-public.pem (P-384)
  token PRIVATE_PEM CLAIMS    prints an ES384 JWT of the JSON claims
  token-none CLAIMS           prints an unsigned JWT (alg "none")
  token-hs256 PUBLIC_PEM CLAIMS
                              prints an HS256 JWT whose HMAC key is the public key's PEM text
                              (the key-confusion attack)
  mmdb PATH NETWORKS          writes a GeoIP2-Country database; NETWORKS is JSON {cidr: iso_code}
"""

import base64
import hashlib
import hmac
import json
import sys


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def keypair(directory, name):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with open(f"{directory}/{name}-private.pem", "wb") as f:
        f.write(private)
    with open(f"{directory}/{name}-public.pem", "wb") as f:
        f.write(public)


def main(argv):
    command = argv[1]
    if command == "keypair":
        keypair(argv[2], argv[3])
    elif command == "token":
        import jwt

        with open(argv[2]) as f:
            private = f.read()
        print(jwt.encode(json.loads(argv[3]), private, algorithm="ES384"))
    elif command == "token-none":
        header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        print(f"{header}.{b64url(argv[2].encode())}.")
    elif command == "token-hs256":
        with open(argv[2], "rb") as f:
            secret = f.read()
        header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        signed = f"{header}.{b64url(argv[3].encode())}"
        signature = hmac.new(secret, signed.encode(), hashlib.sha256).digest()
        print(f"{signed}.{b64url(signature)}")
    elif command == "mmdb":
        from mmdb_writer import MMDBWriter
        from netaddr import IPSet

        writer = MMDBWriter(ip_version=4, database_type="GeoIP2-Country")
        for network, iso_code in json.loads(argv[3]).items():
            writer.insert_network(IPSet([network]), {"country": {"iso_code": iso_code}})
        writer.to_db_file(argv[2])
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv)
