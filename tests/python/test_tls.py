"""TLS to Kafka through the OpenSSL that sohoa builds from source.

A TLS server on 127.0.0.1, with a throwaway CA and a certificate for 127.0.0.1, stands in
for a broker: it completes the handshake and reads the first Kafka request. `sohoa lag`
connects to it with security.protocol=ssl. The checks:
- with the CA given (ssl.ca.location), the handshake completes and the decrypted bytes are
  a Kafka ApiVersions request (api_key 18) from librdkafka;
- with another CA, the client refuses the certificate: no request crosses, and sohoa
  reports the verification failure;
- with no CA given, the client trusts the system's bundle (here the test CA, bind-mounted
  over /etc/ssl/certs/ca-certificates.crt in a private mount namespace), as a client
  linked with the system's OpenSSL would.
The server never answers, so `sohoa lag` ends with "cannot reach Kafka" after its timeout.
"""
import datetime
import ipaddress
import os
import socket
import ssl
import struct
import subprocess
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
API_VERSIONS = 18


def pem(path, obj):
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


def certificate(subject, issuer, public_key, signing_key, ca):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two CAs; the server's certificate is signed by the first."""
    d = tmp_path_factory.mktemp("pki")
    keys = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("ca", "other", "server")}
    ca = certificate("sohoa test CA", "sohoa test CA", keys["ca"].public_key(), keys["ca"], True)
    other = certificate("another CA", "another CA", keys["other"].public_key(), keys["other"], True)
    server = certificate("127.0.0.1", "sohoa test CA", keys["server"].public_key(), keys["ca"], False)
    return {
        "ca": pem(d / "ca.pem", ca),
        "other": pem(d / "other-ca.pem", other),
        "cert": pem(d / "server.pem", server),
        "key": pem(d / "server.key", keys["server"]),
    }


class FakeBroker:
    """Accepts TLS connections on 127.0.0.1 and records each handshake and the header of
    the first Kafka request on each connection."""

    def __init__(self, cert, key):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.handshakes, self.requests, self.refusals = [], [], []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)
        self.sock.close()

    def serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    self.handshakes.append(tls.version())
                    self.requests.append(read_request_header(tls))
            except (ssl.SSLError, OSError, ConnectionError) as e:
                self.refusals.append(str(e))
            finally:
                conn.close()


def read_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_request_header(sock):
    """A Kafka request's size, then its header: api_key, api_version, correlation_id and
    client_id (a nullable int16-length string in every header version)."""
    (size,) = struct.unpack(">i", read_exactly(sock, 4))
    body = read_exactly(sock, size)
    api_key, api_version, correlation_id, id_len = struct.unpack(">hhih", body[:10])
    client_id = body[10:10 + id_len].decode() if id_len >= 0 else None
    return {"size": size, "api_key": api_key, "api_version": api_version,
            "correlation_id": correlation_id, "client_id": client_id}


def lag_over_tls(sohoa, port, ca_location=None, wrap=()):
    # OpenSSL reads SSL_CERT_FILE and SSL_CERT_DIR before its built-in paths; a user's
    # machine seldom sets them, so neither does this test.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SOHOA") and k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    env["SOHOA_KAFKA_PROP_SECURITY_PROTOCOL"] = "ssl"
    if ca_location:
        env["SOHOA_KAFKA_PROP_SSL_CA_LOCATION"] = str(ca_location)
    cmd = [*wrap, sohoa, "lag", "--brokers", f"127.0.0.1:{port}", "--group", "g", "--topics", "t",
           "--timeout", "4"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def test_the_handshake_completes_and_a_kafka_request_crosses(pki, sohoa):
    with FakeBroker(pki["cert"], pki["key"]) as broker:
        out = lag_over_tls(sohoa, broker.port, ca_location=pki["ca"])
    assert out.returncode == 1 and "cannot reach Kafka" in out.stderr, out.stderr[-2000:]
    assert broker.handshakes and broker.handshakes[0] in ("TLSv1.2", "TLSv1.3")
    first = broker.requests[0]
    assert first["api_key"] == API_VERSIONS, first
    assert first["client_id"] == "rdkafka" and first["size"] > 10
    assert broker.refusals == []


def test_a_certificate_from_another_ca_is_refused(pki, sohoa):
    with FakeBroker(pki["cert"], pki["key"]) as broker:
        out = lag_over_tls(sohoa, broker.port, ca_location=pki["other"])
    assert out.returncode == 1
    assert broker.handshakes == [] and broker.requests == []
    # The client aborts the handshake with an alert about the issuer...
    assert broker.refusals and all("UNKNOWN_CA" in r.upper() for r in broker.refusals), broker.refusals
    # ...and sohoa's one-line error says why.
    error = out.stderr.strip().splitlines()[-1]
    assert error.startswith("error: cannot reach Kafka") and "certificate verify failed" in error, error


def test_without_a_ca_the_system_bundle_is_trusted(pki, sohoa, tmp_path):
    assert os.path.exists(SYSTEM_BUNDLE), f"{SYSTEM_BUNDLE} is missing: install Debian's ca-certificates"
    # The test CA stands in for the system's bundle only inside this private mount namespace.
    wrap = ["unshare", "--mount", "--propagation", "private"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    script = tmp_path / "with-bundle"
    script.write_text(f'#!/bin/sh\nmount --bind {pki["ca"]} {SYSTEM_BUNDLE} && exec "$@"\n')
    script.chmod(0o755)
    with FakeBroker(pki["cert"], pki["key"]) as broker:
        out = lag_over_tls(sohoa, broker.port, wrap=[*wrap, str(script)])
    assert broker.requests and broker.requests[0]["api_key"] == API_VERSIONS, (broker.refusals, out.stderr[-2000:])
    assert broker.refusals == []
