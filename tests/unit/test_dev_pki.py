"""Certificates of the local control plane: names, SANs, usages and chain."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tfmaas.dev import pki


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> pki.Pki:
    return pki.generate(tmp_path_factory.mktemp("pki"), service_cidr="10.96.0.0/16")


def test_first_service_ip_is_the_ranges_first_host() -> None:
    assert pki.first_service_ip("10.96.0.0/16") == "10.96.0.1"
    assert pki.first_service_ip("172.20.0.0/24") == "172.20.0.1"


def test_first_service_ip_rejects_host_bits() -> None:
    with pytest.raises(ValueError):
        pki.first_service_ip("10.96.0.5/16")


def test_apiserver_request_covers_loopback_and_in_cluster_names() -> None:
    request = pki.apiserver_request("10.96.0.0/16", extra_hosts=("192.0.2.7", "api.example"))
    assert {"127.0.0.1", "10.96.0.1", "192.0.2.7"} == set(request.ip_addresses)
    for name in ("localhost", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"):
        assert name in request.dns_names
    assert "api.example" in request.dns_names
    assert request.server and not request.client


def test_apiserver_certificate_has_the_sans(generated: pki.Pki) -> None:
    certificate = _load(generated.cert("apiserver"))
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert {"127.0.0.1", "10.96.0.1"} <= ips
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages


def test_admin_is_a_system_master_client(generated: pki.Pki) -> None:
    certificate = _load(generated.cert("admin"))
    orgs = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_component_identities_match_rbac_bootstrap_names(generated: pki.Pki) -> None:
    for name, expected in (
        ("controller-manager", "system:kube-controller-manager"),
        ("scheduler", "system:kube-scheduler"),
    ):
        subject = _load(generated.cert(name)).subject
        assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == expected


def test_every_certificate_chains_to_its_ca(generated: pki.Pki) -> None:
    ca = _load(generated.ca_cert)
    for name in ("apiserver", "admin", "controller-manager", "scheduler"):
        _load(generated.cert(name)).verify_directly_issued_by(ca)
    front_proxy_ca = _load(generated.cert("front-proxy-ca"))
    _load(generated.cert("front-proxy-client")).verify_directly_issued_by(front_proxy_ca)
    with pytest.raises(ValueError):
        _load(generated.cert("front-proxy-client")).verify_directly_issued_by(ca)


def test_private_keys_are_owner_only(generated: pki.Pki) -> None:
    for path in (generated.key("ca"), generated.key("admin"), generated.service_account_key):
        assert path.stat().st_mode & 0o077 == 0, path


def test_generate_keeps_existing_material(generated: pki.Pki) -> None:
    before = generated.ca_cert.read_bytes()
    pki.generate(generated.root)
    assert generated.ca_cert.read_bytes() == before


def test_a_certificate_must_be_for_server_or_client() -> None:
    ca = pki.CertificateAuthority.create("t")
    with pytest.raises(ValueError, match="server or client"):
        ca.issue(pki.CertRequest("nobody"))


def test_ip_sans_are_ip_addresses_not_names() -> None:
    request = pki.apiserver_request()
    for ip in request.ip_addresses:
        ipaddress.ip_address(ip)
