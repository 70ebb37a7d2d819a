"""Request signing (spec §2): the published test vectors, every refusal, the leniencies."""

from __future__ import annotations

import datetime

import pytest

from server.faces.v2 import signing as auth
from server.faces.v2.signing import AuthError, authenticate, sign, signing_key, string_to_sign

AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
VERSION = "v2.20170315"
BODY_A = (
    b'{"lang": "python3", "clientSessionToken": "my-session-0001", '
    b'"limits": {"maxMem": 0, "execTimeout": 0}, "mounts": []}'
)
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def lookup(access_key: str) -> str | None:
    return SK if access_key == AK else None


def at(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value)


def vector_a_headers(version_header: str = "X-Sorna-Version") -> dict[str, str]:
    return {
        "Host": "api.example.com",
        "Date": "2017-03-15T08:12:34.567890+00:00",
        "Content-Type": "application/json",
        version_header: VERSION,
    }


# -- §2.3.1 test vectors ---------------------------------------------------------------


def test_vector_a():
    assert len(BODY_A) == 117
    key = signing_key(SK, "2017-03-15T08:12:34.567890+00:00", "api.example.com")
    assert key.hex() == "e16cfd53ac5c97ab3dc63939e6f1209137678e17098c49152b4cc4965ef7c22f"
    text = string_to_sign(
        "POST",
        "/v2/kernel/create",
        "2017-03-15T08:12:34.567890+00:00",
        "api.example.com",
        "application/json",
        "x-sorna-version",
        VERSION,
        BODY_A,
    )
    assert text.endswith("\neeeb97777946da3ed79331c783a1f68ec09f7bbee313b3fe77ebab1625a95e9f")
    header = sign("POST", "/v2/kernel/create", vector_a_headers(), BODY_A, AK, SK)
    sig = "23669d5eaa0be608d7f3f0f9eda3609fc23aa17ef10b8277c8e17051b02d4e04"
    assert header == f"Sorna signMethod=HMAC-SHA256, credential={AK}:{sig}"


def test_vector_a_backendai_version_header():
    header = sign(
        "POST", "/v2/kernel/create", vector_a_headers("X-BackendAI-Version"), BODY_A, AK, SK
    )
    assert header.endswith(":7b8e57e9493f8eb6cf47fe8c61b1885e918ecc5a1fa7729a6f8dc8bf4db3a597")


def test_vector_b():
    date = "2017-03-15T08:12:40+00:00"
    key = signing_key(SK, date, "localhost:8081")
    assert key.hex() == "c53ca5348e53e188b24730f071d73957563991c0b4861f9cbc28fa4a383bf756"
    headers = {
        "Host": "localhost:8081",
        "Date": date,
        "Content-Type": "application/octet-stream",
        "X-Sorna-Version": VERSION,
    }
    header = sign("GET", "/v2/kernel/TSSJT2Z4SnmQhxjWMnJljg", headers, b"", AK, SK)
    assert header.endswith(":305c65ff5f870d3c8f6483d65fc98144d7a5116035c015287e1c5074c5a84c9b")


def test_vector_c_multipart_with_boundary_signs_an_empty_body():
    headers = {
        "Host": "localhost:8081",
        "Date": "2017-03-15T08:13:00+00:00",
        "Content-Type": "multipart/form-data; boundary=----xyz",
        "X-Sorna-Version": VERSION,
    }
    path = "/v2/kernel/TSSJT2Z4SnmQhxjWMnJljg/upload"
    header = sign("POST", path, headers, b"------xyz\r\nfile data", AK, SK)
    assert header.endswith(":158836247b5f9df1ba52ed0a41f437b1633b3083e6966888203a05616632fed2")
    now = at("2017-03-15T08:13:00+00:00")
    signed = {**headers, "Authorization": header}
    assert authenticate("POST", path, signed, b"whatever the parts", lookup, now) == AK


def test_string_to_sign_layout():
    text = string_to_sign("get", "/v2/x?a=1", "D", "h:1", None, "x-backendai-version", "v", b"")
    assert text.split("\n") == [
        "GET",
        "/v2/x?a=1",
        "D",
        "host:h:1",
        "content-type:application/octet-stream",
        "x-backendai-version:v",
        EMPTY_SHA256,
    ]


@pytest.mark.parametrize(
    ("content_type", "line"),
    [
        (None, "application/octet-stream"),
        ("", "application/octet-stream"),
        ("Application/JSON; charset=utf-8", "application/json"),
        ("application/json;charset=utf-8", "application/json"),
        ("multipart/form-data; boundary=abc", "multipart/form-data"),
    ],
)
def test_content_type_line(content_type, line):
    text = string_to_sign("POST", "/", "D", "h", content_type, "x-sorna-version", "v", b"{}")
    assert text.split("\n")[4] == f"content-type:{line}"


def test_signing_key_uses_the_date_in_the_headers_own_offset():
    # 23:30 at -05:00 is already the next day in UTC; the header's calendar date counts.
    local = signing_key(SK, "2017-03-15T23:30:00-05:00", "h")
    assert local == signing_key(SK, "2017-03-15T01:00:00+00:00", "h")
    assert local != signing_key(SK, "2017-03-16T04:30:00+00:00", "h")


def test_signing_key_rejects_a_non_date():
    with pytest.raises(ValueError):
        signing_key(SK, "yesterday", "h")


# -- round trips -------------------------------------------------------------------------


NOW = at("2017-03-15T08:12:34+00:00")


def signed_headers(
    date: str = "2017-03-15T08:12:34+00:00",
    date_header: str = "Date",
    version_header: str = "X-Sorna-Version",
    auth_type: str = "Sorna",
    hash_name: str = "sha256",
    host: str = "127.0.0.1:8080",
    body: bytes = b'{"echo": "hi"}',
) -> dict[str, str]:
    headers = {
        "Host": host,
        date_header: date,
        "Content-Type": "application/json",
        version_header: VERSION,
    }
    headers["Authorization"] = sign(
        "GET", "/v2/authorize", headers, body, AK, SK, hash_name, auth_type
    )
    return headers


def check(headers: dict[str, str], body: bytes = b'{"echo": "hi"}', now=NOW) -> str | None:
    return authenticate("GET", "/v2/authorize", headers, body, lookup, now)


@pytest.mark.parametrize("auth_type", ["Sorna", "BackendAI"])
@pytest.mark.parametrize("version_header", ["X-Sorna-Version", "X-BackendAI-Version"])
@pytest.mark.parametrize("date_header", ["Date", "X-BackendAI-Date", "X-Sorna-Date"])
def test_round_trip(auth_type, version_header, date_header):
    headers = signed_headers(
        auth_type=auth_type, version_header=version_header, date_header=date_header
    )
    assert headers["Authorization"].startswith(f"{auth_type} signMethod=HMAC-SHA256, ")
    assert check(headers) == AK


@pytest.mark.parametrize("hash_name", ["sha1", "sha512", "sha3_256", "blake2b"])
def test_other_hashes(hash_name):
    assert check(signed_headers(hash_name=hash_name)) == AK


def test_md5_is_refused_unless_allowed():
    headers = signed_headers(hash_name="md5")
    assert refusal(headers) == (
        "invalid-auth-params",
        "Unsupported request signing method (hash type)",
    )
    allowed = authenticate("GET", "/v2/authorize", headers, b'{"echo": "hi"}', lookup, NOW, True)
    assert allowed == AK


def test_the_claim_is_checked_without_the_body():
    claim = auth.parse_claim(signed_headers(), NOW)
    assert claim is not None and claim.access_key == AK and auth.signs_body(claim)
    assert auth.verify(claim, "GET", "/v2/authorize", b'{"echo": "hi"}', SK)
    assert not auth.verify(claim, "GET", "/v2/authorize", b'{"echo": "ho"}', SK)
    assert not auth.verify(claim, "POST", "/v2/authorize", b'{"echo": "hi"}', SK)


def test_header_names_are_case_insensitive():
    headers = {k.lower(): v for k, v in signed_headers().items()}
    assert check(headers) == AK
    headers = {k.upper(): v for k, v in signed_headers().items()}
    assert check(headers) == AK


def test_http_date_and_naive_dates():
    assert check(signed_headers(date="Wed, 15 Mar 2017 08:12:34 GMT")) == AK
    # No timezone: UTC.
    assert check(signed_headers(date="2017-03-15T08:20:00")) == AK
    assert check(signed_headers(date="2017-03-15T08:20:00"), now=at("2017-03-15T08:35:00Z")) == AK
    with pytest.raises(AuthError, match="Date/time sync error"):
        check(signed_headers(date="2017-03-15T08:20:00"), now=at("2017-03-15T08:35:01Z"))


def test_date_preferred_over_the_x_date_headers():
    headers = signed_headers()
    headers["X-BackendAI-Date"] = "not a date"  # ignored: Date comes first
    assert check(headers) == AK


@pytest.mark.parametrize("minutes", [-15, 15])
def test_fifteen_minutes_of_skew_pass(minutes):
    now = NOW + datetime.timedelta(minutes=minutes)
    assert check(signed_headers(), now=now) == AK


@pytest.mark.parametrize("minutes", [-16, 16])
def test_sixteen_minutes_of_skew_fail(minutes):
    now = NOW + datetime.timedelta(minutes=minutes)
    with pytest.raises(AuthError) as info:
        check(signed_headers(), now=now)
    assert (info.value.kind, info.value.detail) == ("invalid-auth-params", "Date/time sync error")


def test_skew_is_measured_across_offsets():
    date = "2017-03-15T17:20:00+09:00"  # 08:20 UTC
    assert check(signed_headers(date=date)) == AK


def test_default_now_is_the_clock():
    now = datetime.datetime.now(datetime.UTC).isoformat()
    assert authenticate("GET", "/v2/authorize", signed_headers(date=now), b'{"echo": "hi"}', lookup)


# -- refusals ----------------------------------------------------------------------------


def test_no_authorization_header_is_none():
    headers = signed_headers()
    del headers["Authorization"]
    assert check(headers) is None
    del headers["Date"]
    assert check(headers) is None


def refusal(headers: dict[str, str], body: bytes = b'{"echo": "hi"}') -> tuple[str, str]:
    with pytest.raises(AuthError) as info:
        check(headers, body)
    return info.value.kind, info.value.detail


@pytest.mark.parametrize(
    "date", [None, "", "yesterday", "2017-13-45T00:00:00Z", "0001-01-01T00:00+01:00"]
)
def test_bad_dates(date):
    headers = signed_headers()
    if date is None:
        del headers["Date"]
    else:
        headers["Date"] = date
    assert refusal(headers) == ("invalid-auth-params", "Date/time sync error")


def with_authorization(value: str) -> dict[str, str]:
    return {**signed_headers(), "Authorization": value}


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("", "Malformed authorization header"),
        ("Sorna", "Malformed authorization header"),
        ("Sorna   ", "Malformed authorization header"),
        ("Bearer signMethod=HMAC-SHA256, credential=A:b", "Invalid authorization type name"),
        ("sorna signMethod=HMAC-SHA256, credential=A:b", "Invalid authorization type name"),
        ("Sorna signMethod=HMAC-SHA256, credential", "Malformed authorization parameter"),
        ("Sorna credential=A:b", "Missing signMethod"),
        ("Sorna signMethod=, credential=A:b", "Missing signMethod"),
        ("Sorna signMethod=HMAC-SHA256", "Missing or malformed credential"),
        ("Sorna signMethod=HMAC-SHA256, credential=Ab", "Missing or malformed credential"),
        ("Sorna signMethod=HMAC-SHA256, credential=:b", "Missing or malformed credential"),
        ("Sorna signMethod=HMAC-SHA256, credential=A:", "Missing or malformed credential"),
        ("Sorna signMethod=CMAC-SHA256, credential=A:b", "(MAC type)"),
        ("Sorna signMethod=HMAC, credential=A:b", "(MAC type)"),
        ("Sorna signMethod=HMAC-WHIRLPOOL, credential=A:b", "(hash type)"),
        ("Sorna signMethod=HMAC-SHAKE_128, credential=A:b", "(hash type)"),
    ],
)
def test_malformed_authorization(value, detail):
    kind, got = refusal(with_authorization(value))
    assert kind == "invalid-auth-params"
    assert detail in got


def test_missing_version_header():
    headers = signed_headers()
    del headers["X-Sorna-Version"]
    assert refusal(headers) == ("invalid-auth-params", "API version missing in request headers")


def test_unknown_access_key_is_answered_as_a_signature_mismatch():
    headers = signed_headers()
    headers["Authorization"] = headers["Authorization"].replace(AK, "AKIANOBODY")
    assert refusal(headers) == ("auth-failed", "Signature mismatch")


@pytest.mark.parametrize(
    "change",
    [
        {"Content-Type": "text/plain"},
        {"Host": "other.example.com"},
        {"X-Sorna-Version": "v3.20170615"},
        {"Date": "2017-03-15T08:12:35+00:00"},
    ],
)
def test_signature_mismatch(change):
    headers = {**signed_headers(), **change}
    assert refusal(headers) == ("auth-failed", "Signature mismatch")


def test_body_and_path_and_method_are_signed():
    headers = signed_headers()
    assert refusal(headers, body=b'{"echo": "ho"}')[0] == "auth-failed"
    with pytest.raises(AuthError, match="auth-failed"):
        authenticate("GET", "/v2/authorize?x=1", headers, b'{"echo": "hi"}', lookup, NOW)
    with pytest.raises(AuthError, match="auth-failed"):
        authenticate("POST", "/v2/authorize", headers, b'{"echo": "hi"}', lookup, NOW)


def test_upper_case_hex_is_rejected():
    headers = signed_headers()
    prefix, _, sig = headers["Authorization"].rpartition(":")
    headers["Authorization"] = f"{prefix}:{sig.upper()}"
    assert refusal(headers) == ("auth-failed", "Signature mismatch")


def test_non_ascii_signature_is_a_mismatch_not_a_crash():
    headers = signed_headers()
    headers["Authorization"] = headers["Authorization"][:-1] + "é"
    assert refusal(headers) == ("auth-failed", "Signature mismatch")


# -- leniency (§12.2) ----------------------------------------------------------------------


def test_signed_with_the_other_version_header_name():
    # Signed as x-backendai-version, sent as X-Sorna-Version.
    headers = signed_headers(version_header="X-BackendAI-Version")
    headers["X-Sorna-Version"] = headers.pop("X-BackendAI-Version")
    assert check(headers) == AK


@pytest.mark.parametrize(
    ("signed_host", "sent_host"),
    [
        ("127.0.0.1", "127.0.0.1:8080"),
        ("[::1]", "[::1]:8080"),
        ("api.example.com", "api.example.com:443"),
    ],
)
def test_signed_with_the_host_without_port(signed_host, sent_host):
    headers = signed_headers(host=signed_host)
    headers["Host"] = sent_host
    assert check(headers) == AK


def test_signed_with_both_leniencies_at_once():
    headers = signed_headers(version_header="X-BackendAI-Version", host="localhost")
    headers["X-Sorna-Version"] = headers.pop("X-BackendAI-Version")
    headers["Host"] = "localhost:8080"
    assert check(headers) == AK


def test_host_with_port_is_not_tried_when_the_port_was_removed():
    headers = signed_headers(host="localhost:8080")
    headers["Host"] = "localhost"
    assert refusal(headers) == ("auth-failed", "Signature mismatch")


def test_signing_keys_are_cached_and_bounded():
    info = auth._derive_key.cache_info()
    assert info.maxsize == 1024
    signing_key(SK, "2017-03-15T08:12:34Z", "cache.example")
    hits = auth._derive_key.cache_info().hits
    signing_key(SK, "2017-03-15T23:59:59Z", "cache.example")  # same day, same key
    assert auth._derive_key.cache_info().hits == hits + 1
