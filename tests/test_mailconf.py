"""`mailca postfix` / `mailca dovecot`: per-version rendering checked against the real postconf
and doveconf, the postconf-command format executed for real, and bad input."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import make_ca, require, snapshot, tool
from postfix_harness import BASE_MASTER_CF

HOST = "mail.example.org"
VERSIONS = ["2.9", "3.3", "3.4", "3.6"]


def installed_postfix() -> str:
    require("postconf")
    r = tool("postconf", "-h", "mail_version")
    assert r.returncode == 0
    return r.stdout.strip()


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    """A CA with a dual (ECDSA + RSA) certificate for mail.example.org and a single one for mx2."""
    ca = make_ca(tmp_path_factory.mktemp("mailconf") / "store", "example.org", "example.net")
    ca.issue(HOST, "--key-type", "ecdsa-p256", "--key-type", "rsa-2048")
    ca.issue("mx2.example.org", "--san", "smtp.example.org")
    return ca


def render(ca, *args) -> dict:
    r = ca.ok("postfix", *args, "--json")
    return json.loads(r.stdout)


def params(cfg: dict) -> dict[str, str]:
    out = {s["name"]: s["value"] for s in cfg["main"]}
    for svc in cfg["master"]:
        for o in svc["options"]:
            out[f"{svc['service']}/{o['name']}"] = o["value"]
    return out


def postconf_dir(tmp: Path, main_text: str, master_text: str) -> Path:
    d = tmp / "etc"
    d.mkdir(parents=True, exist_ok=True)
    (d / "main.cf").write_text("compatibility_level = 3.6\n" + main_text)
    (d / "master.cf").write_text(BASE_MASTER_CF + master_text)
    return d


def assert_postconf_clean(d: Path) -> str:
    out = ""
    for flag in ("-n", "-M", "-P"):
        r = tool("postconf", "-c", d, flag)
        assert r.returncode == 0 and r.stderr == "", (flag, r.stderr)
        out += r.stdout
    return out


# ------------------------------------------------------------------- versions (issue item 1)
@pytest.mark.parametrize("version", VERSIONS + ["installed"])
def test_each_version_uses_only_its_parameters_and_syntax(dual, tmp_path, version):
    from mailca.mailconf.postfix import PARAM_SINCE, parse_version

    if version == "installed":
        version = installed_postfix()
    v = parse_version(version)
    cfg = render(dual, HOST, "--postfix-version", version)
    p = params(cfg)
    names = {k.split("/")[-1] for k in p}
    # every parameter is one this version has (table from postconf(5) "available in Postfix X.Y")
    for n in names:
        assert n in PARAM_SINCE and PARAM_SINCE[n] <= v, (n, version)
    # independent spot checks of the version rules
    assert ("smtpd_tls_chain_files" in p) == (v >= (3, 4))
    if v < (3, 4):  # dual pair the old way: RSA in cert_file, ECDSA in eccert_file, each followed by its chain
        assert p["smtpd_tls_cert_file"].endswith("rsa-2048/live/fullchain.pem")
        assert p["smtpd_tls_eccert_file"].endswith("ecdsa-p256/live/fullchain.pem")
    else:
        files = [f.strip() for f in p["smtpd_tls_chain_files"].split(",")]
        assert [Path(f).parts[-3] for f in files] == ["rsa-2048", "ecdsa-p256"]
        for f in files:  # key first, then leaf, then intermediate
            kinds = [ln for ln in Path(f).read_text().splitlines() if ln.startswith("-----BEGIN")]
            assert kinds[0].endswith("PRIVATE KEY-----") and kinds[1:] == ["-----BEGIN CERTIFICATE-----"] * 2
    has_range = any(">=" in val for k, val in p.items() if k.endswith("protocols"))
    assert has_range == (v >= (3, 6))
    if v < (3, 6):
        assert p["smtpd_tls_mandatory_protocols"] == "!SSLv2, !SSLv3, !TLSv1, !TLSv1.1"
    services = [s["service"] for s in cfg["master"]]
    assert services == ["smtp", "submission", "submissions" if v >= (3, 6) else "smtps"]
    assert (p.get("smtp_tls_security_level") == "dane") == (v >= (2, 11))
    assert ("submission/smtpd_relay_restrictions" in p) == (v >= (2, 10))
    # and the installed Postfix reads the rendering (names, syntax) without one warning
    snippet = dual.ok("postfix", HOST, "--postfix-version", version).stdout
    main = snippet.split("# ===== master.cf =====")[0]
    master = snippet.split("# ===== master.cf =====")[1].split("# ===== /etc/postfix")[0]
    out = assert_postconf_clean(postconf_dir(tmp_path, main, master))
    assert "smtpd_tls_security_level = may" in out
    assert "submission/inet/smtpd_tls_security_level = encrypt" in out


def test_version_is_detected_from_the_installed_postfix(dual):
    inst = installed_postfix()
    assert render(dual, HOST)["postfix_version"] == ".".join(inst.split(".")[:2])


def test_postconf_format_applies_for_real(dual, tmp_path):
    """Run the emitted postconf -e/-M/-P commands (argv, no shell) against a scratch config
    and compare the result with the snippet's settings."""
    d = postconf_dir(tmp_path, "", "")
    script = dual.ok("postfix", HOST, "--format", "postconf", "--profile", "intermediate").stdout
    ran = 0
    for line in script.splitlines():
        if not line.startswith("postconf "):
            continue
        argv = shlex.split(line)
        r = tool(argv[0], "-c", d, *argv[1:])
        assert r.returncode == 0 and r.stderr == "", (line, r.stderr)
        ran += 1
    assert ran > 30
    cfg = render(dual, HOST, "--profile", "intermediate")
    n = assert_postconf_clean(d)
    lines = n.splitlines()
    for s in cfg["main"]:  # postconf -n prints an empty value as "name =" (no trailing space)
        assert f"{s['name']} = {s['value']}".rstrip() in lines
    for svc in cfg["master"]:
        for o in svc["options"]:
            assert f"{svc['service']}/inet/{o['name']} = {o['value']}" in n
    assert "smtpd_tls_protocols = >=TLSv1" in n  # intermediate keeps TLS 1.0 on port 25


def test_postconf_format_keeps_an_existing_postscreen_smtp_line(dual, tmp_path):
    """Port 25 needs only main.cf settings: applying the postconf commands must not replace a
    postscreen (or chrooted, or -o carrying) 'smtp inet' line."""
    d = postconf_dir(tmp_path, "", "smtp      inet  n       -       y       -       1       postscreen\n"
                                   "smtpd     pass  -       -       y       -       -       smtpd\n")
    script = dual.ok("postfix", HOST, "--format", "postconf").stdout
    assert "smtp/inet=" not in script
    for line in script.splitlines():
        if line.startswith("postconf "):
            argv = shlex.split(line)
            assert tool(argv[0], "-c", d, *argv[1:]).returncode == 0, line
    master = tool("postconf", "-c", d, "-M", "smtp/inet").stdout
    assert "postscreen" in master and " y " in master, master
    assert re.search(r"^submission\s+inet\s", tool("postconf", "-c", d, "-M").stdout, re.M)  # 587 was added


def test_write_dir_and_dane_ta_root(dual, tmp_path):
    out = tmp_path / "w"
    r = dual.ok("postfix", "smtp.example.org", "--write", out, "--dane-ta", "root", "--ports", "25,587",
                "--secure-domain", "example.org", "--secure-domain", "example.net")
    assert sorted(p.name for p in out.iterdir()) == ["mailca-tls-policy", "main.cf.mailca", "master.cf.mailca"]
    main = (out / "main.cf.mailca").read_text()
    assert "mx2.example.org/ecdsa-p256/live/keyfullchain-root.pem" in main  # SAN resolves to its lineage
    assert f"texthash:{out}/mailca-tls-policy" in main
    assert "submissions" not in (out / "master.cf.mailca").read_text()
    policy = (out / "mailca-tls-policy").read_text()
    assert "example.net" in policy and ".example.org" in policy
    assert "wrote" in r.stdout


def test_user_profile_file_is_merged_over_strict(dual, tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[tls]\nmin_protocol_opportunistic = "TLSv1"\noutbound_dane = false\n')
    p = params(render(dual, HOST, "--profile", f, "--postfix-version", "3.7"))
    assert p["smtpd_tls_protocols"] == ">=TLSv1"
    assert p["smtp_tls_security_level"] == "may"
    assert p["smtpd_tls_mandatory_protocols"] == ">=TLSv1.2"  # from strict


def test_every_setting_has_a_comment(dual):
    text = dual.ok("postfix", HOST).stdout
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        if ln and not ln.startswith("#") and " = " in ln and "secure match" not in ln:
            assert lines[i - 1].startswith("#"), ln
        if ln.startswith("  -o "):
            assert lines[i - 1].lstrip().startswith("#"), ln


# -------------------------------------------------------------------------------- Dovecot
@pytest.mark.parametrize("host", [HOST, "mx2.example.org"])
def test_doveconf_accepts_the_dovecot_snippet(dual, tmp_path, host):
    require("doveconf")
    text = dual.ok("dovecot", host, "--dovecot-version", "2.3").stdout
    conf = tmp_path / "dovecot.conf"
    conf.write_text(text)
    r = tool("doveconf", "-n", "-c", conf)
    assert r.returncode == 0, r.stderr
    assert "ssl = required" in r.stdout  # -n: only what differs from Dovecot's defaults
    vals = tool("doveconf", "-c", conf, "ssl_min_protocol", "disable_plaintext_auth", "ssl_prefer_server_ciphers")
    assert vals.returncode == 0 and vals.stdout.split("\n")[:3] == [
        "ssl_min_protocol = TLSv1.2", "disable_plaintext_auth = yes", "ssl_prefer_server_ciphers = yes"], vals.stdout
    # doveconf really checks: a misspelt setting is refused
    conf.write_text(text.replace("ssl_min_protocol", "ssl_min_protocl"))
    assert tool("doveconf", "-n", "-c", conf).returncode != 0
    assert f"{host}/ecdsa-p256/live/fullchain.pem" in r.stdout
    assert ("ssl_alt_cert" in r.stdout) == (host == HOST)
    assert "unix_listener /var/spool/postfix/private/auth" in r.stdout


def test_dovecot_24_syntax(dual):
    text = dual.ok("dovecot", HOST, "--dovecot-version", "2.4").stdout
    assert "dovecot_config_version = 2.4.0" in text
    assert f"ssl_server_cert_file = {dual.live(HOST)}/fullchain.pem" in text
    assert "ssl_server_alt_key_file = " in text and "<" not in text.replace("<=", "")
    assert "auth_allow_cleartext = no" in text and "ssl_server_prefer_ciphers = server" in text
    assert "ssl_cert =" not in text and "disable_plaintext_auth" not in text


# ------------------------------------------------------------------------------ bad input
BAD = [
    (["postfix", "nocert.example.org"], "nocert.example.org"),
    (["postfix", HOST, "--postfix-version", "9.9"], "9.9"),
    (["postfix", HOST, "--postfix-version", "3.x"], "3.x"),
    (["postfix", HOST, "--postfix-version", "2.8"], "2.8"),
    (["postfix", HOST, "--profile", "paranoid"], "paranoid"),
    (["postfix", HOST, "--ports", "25,26"], "26"),
    (["postfix", HOST, "--ports", "smtp"], "smtp"),
    (["postfix", HOST, "--postfix-version", "2.9", "--format", "postconf"], "2.11"),
    (["dovecot", HOST, "--dovecot-version", "2.2"], "2.2"),
    (["dovecot", "nocert.example.org"], "nocert.example.org"),
    (["dovecot", "bad..name"], "bad..name"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_one_line_nothing_written(dual, tmp_path, args, needle):
    out = tmp_path / "w"
    before = snapshot(dual.dir)
    extra = ["--write", out] if args[0] == "postfix" else []
    r = dual.run(*args, *extra)
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mailca: error:") and needle in err[0], r.stderr
    assert "Traceback" not in r.stderr
    assert snapshot(dual.dir) == before
    assert not out.exists()


@pytest.mark.parametrize("body,needle", [
    ('[tls]\nmin_protocol_mandatory = "TLSv1.2"\nbogus = 1\n', "tls.bogus"),
    ('[tls]\nmin_protocol_mandatory = "SSLv3"\n', "SSLv3"),
    ('[tls]\nexclude_ciphers_mandatory = ["aNULL", "FOO"]\n', "FOO"),
    ('[ciphers]\nx = 1\n', "[ciphers]"),
    ('[tls\n', "not valid TOML"),
])
def test_bad_profile_file(dual, tmp_path, body, needle):
    f = tmp_path / "p.toml"
    f.write_text(body)
    out = tmp_path / "w"
    for cmd in (["postfix", HOST, "--write", out], ["dovecot", HOST]):
        r = dual.run(*cmd, "--profile", f)
        err = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(err) == 1 and needle in err[0], r.stderr
    assert not out.exists()
