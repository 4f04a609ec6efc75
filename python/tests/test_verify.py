"""verify_quote on the real DCAP vectors (../shared/vectors/dcap/README.md gives the verdicts)."""
import datetime
import http.server
import json
import os
import subprocess
import threading
import urllib.parse

import pytest

import teeserve
from conftest import binary, vectors

# name, verification time, TCB status, advisories (as the vectors' README gives them)
ADMITTED = [
    ("sgx-v3-dcapqvl", 1751000000, "ConfigurationAndSWHardeningNeeded", ["INTEL-SA-00289", "INTEL-SA-00615"]),
    ("tdx-v4-dcapqvl", 1751000000, "UpToDate", []),
    ("tdx-v4-automata-padded", 1739419232, "OutOfDate", ["INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986"]),
    ("sgx-v3-automata-tcbinfo-v2", 1739419232, "OutOfDate", []),
]


def vector(name, ext):
    return os.path.join(vectors(), "dcap", f"{name}.{ext}")


def read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("name,at,status,advisories", ADMITTED)
def test_documented_verdicts(name, at, status, advisories):
    v = teeserve.verify_quote(read(vector(name, "quote")), vector(name, "collateral.json"), at=at)
    assert v["tcb_status"] == status
    assert v["advisory_ids"] == advisories
    assert v["tee"] == name.split("-")[0]


@pytest.mark.parametrize("name,at", [(n, a) for n, a, _, _ in ADMITTED])
def test_the_verdict_is_the_clis(name, at):
    teeserve._native.clear_cache()
    py = teeserve.verify_quote(vector(name, "quote"), read(vector(name, "collateral.json")), at=at)
    cli = subprocess.run([binary(), "attest", "verify", "--quote", vector(name, "quote"), "--collateral",
                          vector(name, "collateral.json"), "--at", str(at)],
                         check=True, capture_output=True, text=True).stdout
    assert py == json.loads(cli)


def test_tdx_v5_has_no_matching_tcb_level():
    with pytest.raises(teeserve.VerificationError) as e:
        teeserve.verify_quote(read(vector("tdx-v5-dcapqvl", "quote")), vector("tdx-v5-dcapqvl", "collateral.json"),
                              at=1772000000)
    assert e.value.rule == "tcb_not_supported"
    assert "no matching TCB level" in str(e.value)


def test_time_as_rfc3339_and_datetime():
    q, c = read(vector("tdx-v4-automata-padded", "quote")), vector("tdx-v4-automata-padded", "collateral.json")
    a = teeserve.verify_quote(q, c, at="2025-02-13T04:00:32Z")
    b = teeserve.verify_quote(q, c, at=datetime.datetime(2025, 2, 13, 4, 0, 32, tzinfo=datetime.timezone.utc))
    assert a == b
    assert a["tcb_status"] == "OutOfDate"


def test_expiry_names_the_item():
    q, c = read(vector("sgx-v3-dcapqvl", "quote")), vector("sgx-v3-dcapqvl", "collateral.json")
    # The window ends when the QE identity expires, 2025-07-19T10:01:18Z; also from the cache.
    for _ in range(2):
        with pytest.raises(teeserve.VerificationError) as e:
            teeserve.verify_quote(q, c, at="2025-07-19T10:01:19Z")
        assert e.value.rule == "expired"
        assert "qe_identity.nextUpdate 2025-07-19T10:01:18Z is before the verification time" in str(e.value)
        teeserve.verify_quote(q, c, at="2025-07-19T10:01:18Z")


def test_a_flipped_byte_does_not_verify():
    q = bytearray(read(vector("tdx-v4-dcapqvl", "quote")))
    q[200] ^= 1  # inside the TD report, which the attestation key signs
    with pytest.raises(teeserve.VerificationError) as e:
        teeserve.verify_quote(bytes(q), vector("tdx-v4-dcapqvl", "collateral.json"), at=1751000000)
    assert e.value.rule == "signature"


def test_the_intel_root_is_the_default_and_another_root_refuses(pki):
    q, c = read(vector("tdx-v4-dcapqvl", "quote")), vector("tdx-v4-dcapqvl", "collateral.json")
    assert teeserve.verify_quote(q, c, at=1751000000)["root"]["intel"] is True
    v = teeserve.verify_quote(q, c, at=1751000000, root=read(vector("intel-sgx-root-ca", "pem")))
    assert v["root"]["intel"] is True
    with pytest.raises(teeserve.VerificationError) as e:
        teeserve.verify_quote(q, c, at=1751000000, root=pki.root)
    assert e.value.rule == "root"


def test_policy_refusals_name_the_rule():
    q, c = read(vector("sgx-v3-dcapqvl", "quote")), vector("sgx-v3-dcapqvl", "collateral.json")
    with pytest.raises(teeserve.VerificationError) as e:
        teeserve.verify_quote(q, c, at=1751000000, policy={})
    assert e.value.rule == "tcb_status"
    assert "ConfigurationAndSWHardeningNeeded" in e.value.detail
    mrenclave = teeserve.verify_quote(q, c, at=1751000000)["sgx"]["mrenclave"]
    accepting = {"mrenclave": [mrenclave], "tcb_status": ["ConfigurationAndSWHardeningNeeded"],
                 "accepted_advisories": ["INTEL-SA-00289", "INTEL-SA-00615"]}
    v = teeserve.verify_quote(q, c, at=1751000000, policy=accepting)
    with pytest.raises(teeserve.VerificationError) as e:
        teeserve.verify_quote(q, c, at=1751000000, policy=dict(accepting, mrenclave=["00" * 32]))
    assert e.value.rule == "mrenclave"
    assert mrenclave in e.value.detail
    assert v["sgx"]["mrenclave"] == mrenclave


@pytest.mark.parametrize("name", ["sgx-v3-debug-enclave", "tdx-v4-debug-td"])
def test_debug_vectors_need_collateral(name):
    # They come without collateral: nothing can be verified, and nothing is admitted.
    with pytest.raises(TypeError):
        teeserve.verify_quote(read(vector(name, "quote")))


def test_a_debug_enclave_is_refused_by_a_policy_that_admits_its_measurement():
    # The debug enclave's platform (FMSPC 00A067110000) is sgx-v3-automata-tcbinfo-v2's, whose
    # collateral verifies it.
    q = read(vector("sgx-v3-debug-enclave", "quote"))
    c = vector("sgx-v3-automata-tcbinfo-v2", "collateral.json")
    v = teeserve.verify_quote(q, c, at=1739419232)
    assert v["debug"] is True
    policy = {"mrenclave": [v["sgx"]["mrenclave"]], "tcb_status": [v["tcb_status"]]}
    with pytest.raises(teeserve.VerificationError) as e:
        teeserve.verify_quote(q, c, at=1739419232, policy=policy)
    assert e.value.rule == "allow_debug"
    assert teeserve.verify_quote(q, c, at=1739419232, policy=dict(policy, allow_debug=True)) == v


def test_garbage_is_a_verification_error_not_a_crash():
    c = vector("sgx-v3-dcapqvl", "collateral.json")
    for q in [b"", b"\x03\x00" + b"\xff" * 50, os.urandom(2000)]:
        with pytest.raises(teeserve.VerificationError) as e:
            teeserve.verify_quote(q, c, at=1751000000)
        assert e.value.rule == "quote"
    with pytest.raises(teeserve.VerificationError) as e:
        teeserve.verify_quote(read(vector("sgx-v3-dcapqvl", "quote")), b"{not json", at=1751000000)
    assert e.value.rule == "collateral"
    with pytest.raises(ValueError):
        teeserve.verify_quote(b"", c, at="yesterday")
    with pytest.raises(ValueError):
        teeserve.verify_quote(b"", c, root=b"not a certificate")


def _encode(s):
    return urllib.parse.quote(s, safe="-_.~")


def pccs(name):
    """A loopback PCCS serving one vector's collateral through the v4 API."""
    c = json.loads(read(vector(name, "collateral.json")))
    tee = "tdx" if name.startswith("tdx") else "sgx"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            p = self.path
            if p.startswith("/sgx/certification/v4/pckcrl?ca=") and "encoding=der" in p:
                self.answer(bytes.fromhex(c["pck_crl"]), {"SGX-PCK-CRL-Issuer-Chain": _encode(c["pck_crl_issuer_chain"])})
            elif p == "/sgx/certification/v4/rootcacrl":
                self.answer(c["root_ca_crl"].encode(), {})
            elif p.startswith(f"/{tee}/certification/v4/tcb?fmspc="):
                body = '{"tcbInfo":%s,"signature":"%s"}' % (c["tcb_info"], c["tcb_info_signature"])
                self.answer(body.encode(), {"TCB-Info-Issuer-Chain": _encode(c["tcb_info_issuer_chain"])})
            elif p == f"/{tee}/certification/v4/qe/identity":
                body = '{"enclaveIdentity":%s,"signature":"%s"}' % (c["qe_identity"], c["qe_identity_signature"])
                self.answer(body.encode(),
                            {"SGX-Enclave-Identity-Issuer-Chain": _encode(c["qe_identity_issuer_chain"])})
            else:
                self.send_error(404)

        def answer(self, body, headers):
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/sgx/certification/v4/"


@pytest.mark.parametrize("name,at,status", [("sgx-v3-dcapqvl", 1751000000, "ConfigurationAndSWHardeningNeeded"),
                                            ("tdx-v4-dcapqvl", 1751000000, "UpToDate")])
def test_collateral_from_a_pccs(name, at, status):
    srv, url = pccs(name)
    try:
        v = teeserve.verify_quote(read(vector(name, "quote")), pccs_url=url, at=at)
        assert v["tcb_status"] == status
        assert v == teeserve.verify_quote(read(vector(name, "quote")), vector(name, "collateral.json"), at=at)
    finally:
        srv.shutdown()
