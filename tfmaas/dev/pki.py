"""Certificates for the local control plane: one CA, the apiserver's serving certificate, the
client certificates each component authenticates with, and the service-account key pair.

Layout (all PEM) follows kubeadm's names so the flags read as they would on a real cluster.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLUSTER_DOMAIN = "cluster.local"
DEFAULT_SERVICE_CIDR = "10.96.0.0/16"
VALIDITY = datetime.timedelta(days=365)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclasses.dataclass(frozen=True)
class CertRequest:
    """What one certificate says about its holder."""

    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    server: bool = False
    client: bool = False


def first_service_ip(service_cidr: str) -> str:
    """The ClusterIP the apiserver gives the `kubernetes` Service: the range's first host."""
    network = ipaddress.ip_network(service_cidr, strict=True)
    return str(network.network_address + 1)


def apiserver_request(
    service_cidr: str = DEFAULT_SERVICE_CIDR, extra_hosts: tuple[str, ...] = ()
) -> CertRequest:
    """The apiserver serving certificate: loopback and every in-cluster name of the API."""
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    dns.append(f"kubernetes.default.svc.{CLUSTER_DOMAIN}")
    ips = ["127.0.0.1", first_service_ip(service_cidr)]
    for host in extra_hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            dns.append(host)
        else:
            ips.append(host)
    return CertRequest(
        common_name="kube-apiserver",
        dns_names=tuple(dict.fromkeys(dns)),
        ip_addresses=tuple(dict.fromkeys(ips)),
        server=True,
    )


# Client identities the components authenticate as; RBAC's bootstrap policy knows these names.
CLIENTS: dict[str, CertRequest] = {
    "admin": CertRequest("tfmaas-admin", organizations=("system:masters",), client=True),
    "controller-manager": CertRequest("system:kube-controller-manager", client=True),
    "scheduler": CertRequest("system:kube-scheduler", client=True),
    "apiserver-kubelet-client": CertRequest(
        "kube-apiserver-kubelet-client", organizations=("system:masters",), client=True
    ),
}
FRONT_PROXY_CLIENT = CertRequest("front-proxy-client", client=True)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    # Back-dated a little so a component whose clock reads slightly earlier accepts it.
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(minutes=5), now + VALIDITY


@dataclasses.dataclass(frozen=True)
class CertificateAuthority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str) -> CertificateAuthority:
        key = _new_key()
        not_before, not_after = _validity()
        name = _name(common_name)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    def issue(self, request: CertRequest) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = _new_key()
        not_before, not_after = _validity()
        usages = []
        if request.server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if request.client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        if not usages:
            raise ValueError(f"certificate for {request.common_name} must be a server or client")
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(request.common_name, request.organizations))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        alt_names: list[x509.GeneralName] = [x509.DNSName(d) for d in request.dns_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in request.ip_addresses]
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), False)
        return builder.sign(self.key, hashes.SHA256()), key


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    path.write_bytes(data)
    if secret:
        path.chmod(0o600)


@dataclasses.dataclass(frozen=True)
class Pki:
    """Paths of the generated material inside one cluster directory."""

    root: Path

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    @property
    def ca_cert(self) -> Path:
        return self.cert("ca")

    @property
    def service_account_key(self) -> Path:
        return self.root / "sa.key"

    @property
    def service_account_public_key(self) -> Path:
        return self.root / "sa.pub"

    def complete(self) -> bool:
        names = ["ca", "apiserver", "front-proxy-ca", "front-proxy-client", *CLIENTS]
        files = [self.cert(n) for n in names] + [self.key(n) for n in names]
        files += [self.service_account_key, self.service_account_public_key]
        return all(f.is_file() for f in files)


def generate(root: Path, *, service_cidr: str = DEFAULT_SERVICE_CIDR) -> Pki:
    """Write a fresh CA and every certificate the control plane needs (kept if already there)."""
    pki = Pki(root)
    if pki.complete():
        return pki
    root.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create("tfmaas-local-ca")
    _write(pki.ca_cert, certificate_pem(ca.certificate))
    _write(pki.key("ca"), private_key_pem(ca.key), secret=True)

    issued = {"apiserver": ca.issue(apiserver_request(service_cidr))}
    issued.update({name: ca.issue(request) for name, request in CLIENTS.items()})
    for name, (certificate, key) in issued.items():
        _write(pki.cert(name), certificate_pem(certificate))
        _write(pki.key(name), private_key_pem(key), secret=True)

    # The aggregation layer (prometheus-adapter's custom metrics API) trusts its own CA.
    front_proxy_ca = CertificateAuthority.create("tfmaas-front-proxy-ca")
    _write(pki.cert("front-proxy-ca"), certificate_pem(front_proxy_ca.certificate))
    _write(pki.key("front-proxy-ca"), private_key_pem(front_proxy_ca.key), secret=True)
    proxy_cert, proxy_key = front_proxy_ca.issue(FRONT_PROXY_CLIENT)
    _write(pki.cert("front-proxy-client"), certificate_pem(proxy_cert))
    _write(pki.key("front-proxy-client"), private_key_pem(proxy_key), secret=True)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(pki.service_account_key, private_key_pem(sa_key), secret=True)
    _write(
        pki.service_account_public_key,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return pki
