"""Access tokens against the real stack: each way of presenting a bad token is refused with a 401 problem,
refresh tokens rotate and a reused one revokes its login, failed key exchanges are braked per address, and
signing keys rotate without breaking tokens already issued."""

import base64
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from conftest import Stack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

UNAUTHORIZED = "urn:agentflow:problem:unauthorized"


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _login(http: httpx.Client, api_key: str) -> dict[str, Any]:
    answer = http.post("/v1/auth/token", json={"api_key": api_key})
    assert answer.status_code == 200, answer.text
    tokens: dict[str, Any] = answer.json()
    return tokens


def _assert_unauthorized(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["type"] == UNAUTHORIZED
    assert problem["field"] == "Authorization"


def _b64(document: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def test_an_api_key_is_exchanged_for_an_access_and_a_refresh_token(stack: Stack, http: httpx.Client) -> None:
    tokens = _login(http, stack.token)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 900
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "EdDSA"
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["sub"] == stack.token.split("_")[1]
    assert claims["tenant"] == "default" and claims["role"] == "platform-admin"
    assert claims["exp"] - claims["iat"] == 900 and claims["jti"]
    jwks = http.get("/.well-known/jwks.json").json()
    public = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    assert jwt.decode(tokens["access_token"], public.key, algorithms=["EdDSA"])["tenant"] == "default"
    assert http.get("/v1/tools", headers=_bearer(tokens["access_token"])).status_code == 200


def test_a_request_without_a_token_is_refused(http: httpx.Client) -> None:
    _assert_unauthorized(http.get("/v1/tools"))


def test_a_malformed_token_is_refused(http: httpx.Client) -> None:
    for token in ("nonsense", "a.b.c", "af_", "Basic abc"):
        _assert_unauthorized(http.get("/v1/tools", headers=_bearer(token)))
    _assert_unauthorized(http.get("/v1/tools", headers={"Authorization": "Basic dXNlcjpwYXNz"}))


def test_an_expired_token_is_refused(stack: Stack, http: httpx.Client) -> None:
    with (
        stack.extra_control_plane(AF_ACCESS_TOKEN_SECONDS="1") as url,
        httpx.Client(base_url=url, timeout=30) as short,
    ):
        access = _login(short, stack.token)["access_token"]
        assert short.get("/v1/tools", headers=_bearer(access)).status_code == 200
        time.sleep(2.1)
        _assert_unauthorized(short.get("/v1/tools", headers=_bearer(access)))
        assert "expired" in short.get("/v1/tools", headers=_bearer(access)).json()["detail"]


def test_a_token_signed_by_another_key_is_refused(stack: Stack, http: httpx.Client) -> None:
    real = _login(http, stack.token)["access_token"]
    claims = jwt.decode(real, options={"verify_signature": False})
    kid = jwt.get_unverified_header(real)["kid"]
    forged = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid})
    _assert_unauthorized(http.get("/v1/tools", headers=_bearer(forged)))
    unknown_kid = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "not-ours"})
    _assert_unauthorized(http.get("/v1/tools", headers=_bearer(unknown_kid)))


def test_an_unsigned_alg_none_token_is_refused(stack: Stack, http: httpx.Client) -> None:
    real = _login(http, stack.token)["access_token"]
    claims = jwt.decode(real, options={"verify_signature": False})
    kid = jwt.get_unverified_header(real)["kid"]
    for alg in ("none", "None", "NONE"):
        token = f"{_b64({'alg': alg, 'typ': 'JWT', 'kid': kid})}.{_b64(claims)}."
        _assert_unauthorized(http.get("/v1/tools", headers=_bearer(token)))


def test_a_token_of_another_algorithm_is_refused(stack: Stack, http: httpx.Client) -> None:
    real = _login(http, stack.token)["access_token"]
    claims = jwt.decode(real, options={"verify_signature": False})
    kid = jwt.get_unverified_header(real)["kid"]
    # The classic confusion: an HMAC token keyed with the server's public key.
    public_x = http.get("/.well-known/jwks.json").json()["keys"][0]["x"]
    hs256 = jwt.encode(claims, public_x.encode().ljust(32, b"="), algorithm="HS256", headers={"kid": kid})
    _assert_unauthorized(http.get("/v1/tools", headers=_bearer(hs256)))


def test_a_wrong_api_key_is_refused(stack: Stack, http: httpx.Client) -> None:
    prefix = stack.token.split("_")[1]
    _assert_unauthorized(http.get("/v1/tools", headers=_bearer(f"af_{prefix}_wrong-secret")))


def test_a_refresh_token_rotates_and_its_reuse_revokes_the_whole_login(stack: Stack, http: httpx.Client) -> None:
    first = _login(http, stack.token)
    second = http.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert http.get("/v1/tools", headers=_bearer(rotated["access_token"])).status_code == 200

    reused = http.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401 and "already used" in reused.json()["detail"]
    # Every token of the family is dead now: the rotated refresh token and both access tokens.
    assert http.post("/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}).status_code == 401
    _assert_unauthorized(http.get("/v1/tools", headers=_bearer(rotated["access_token"])))
    _assert_unauthorized(http.get("/v1/tools", headers=_bearer(first["access_token"])))
    # Another login of the same key is unaffected.
    assert http.get("/v1/tools", headers=_bearer(_login(http, stack.token)["access_token"])).status_code == 200


def test_guessing_api_keys_is_braked_per_source_address(stack: Stack) -> None:
    # From an address of its own (all of 127/8 is loopback), so other tests' exchanges are not braked.
    transport = httpx.HTTPTransport(local_address="127.0.0.9")
    with httpx.Client(base_url=stack.api_url, transport=transport, timeout=30) as guesser:
        answers = [guesser.post("/v1/auth/token", json={"api_key": f"af_guess{i}_secret"}) for i in range(12)]
        assert [a.status_code for a in answers[:10]] == [401] * 10
        braked = answers[10]
        assert braked.status_code == 429
        assert braked.json()["type"] == "urn:agentflow:problem:rate-limited"
        assert int(braked.headers["Retry-After"]) >= 1
        # Even the right key waits: the brake is on the address, not on the key.
        assert guesser.post("/v1/auth/token", json={"api_key": stack.token}).status_code == 429
    with httpx.Client(base_url=stack.api_url, timeout=30) as other:
        assert other.post("/v1/auth/token", json={"api_key": stack.token}).status_code == 200


def test_guessing_the_secret_of_a_known_key_on_any_route_is_braked_too(stack: Stack, http: httpx.Client) -> None:
    # The key of a tenant of its own, so that the audit rows of the guesses stay out of tenant default's.
    created = http.post("/v1/tenants", json={"name": f"guessed-{secrets.token_hex(4)}"}, headers=_bearer(stack.token))
    key = created.json()["admin_key"]["key"]
    prefix = key.split("_")[1]
    transport = httpx.HTTPTransport(local_address="127.0.0.10")
    with httpx.Client(base_url=stack.api_url, transport=transport, timeout=30) as guesser:
        access = _login(guesser, key)["access_token"]
        answers = [guesser.get("/v1/tools", headers=_bearer(f"af_{prefix}_guess{i}")) for i in range(11)]
        assert [a.status_code for a in answers] == [401] * 10 + [429]
        assert int(answers[10].headers["Retry-After"]) >= 1
        assert guesser.get("/v1/tools", headers=_bearer(key)).status_code == 429
        # An access token got before is no guess: it still works from there.
        assert guesser.get("/v1/tools", headers=_bearer(access)).status_code == 200


def test_a_token_signed_by_the_previous_key_verifies_after_rotation(stack: Stack, http: httpx.Client) -> None:
    before = _login(http, stack.token)["access_token"]
    old_kid = jwt.get_unverified_header(before)["kid"]
    rotated = http.post("/v1/auth/signing-keys", headers=_bearer(stack.token))
    assert rotated.status_code == 201, rotated.text
    kids = {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]}
    assert old_kid in kids and len(kids) >= 2
    assert all(k["kty"] == "OKP" and k["crv"] == "Ed25519" for k in http.get("/.well-known/jwks.json").json()["keys"])
    after = _login(http, stack.token)["access_token"]
    assert jwt.get_unverified_header(after)["kid"] != old_kid
    assert http.get("/v1/tools", headers=_bearer(before)).status_code == 200
    assert http.get("/v1/tools", headers=_bearer(after)).status_code == 200


def test_a_signing_key_due_for_rotation_is_replaced_before_it_signs(stack: Stack) -> None:
    # With a rotation period of 0 every key is due at once: each login is signed by a new key.
    with (
        stack.extra_control_plane(AF_SIGNING_KEY_ROTATION_HOURS="0") as url,
        httpx.Client(base_url=url, timeout=30) as rotating,
    ):
        first = _login(rotating, stack.token)["access_token"]
        second = _login(rotating, stack.token)["access_token"]
        kids = [jwt.get_unverified_header(token)["kid"] for token in (first, second)]
        assert kids[0] != kids[1]
        assert set(kids) <= {k["kid"] for k in rotating.get("/.well-known/jwks.json").json()["keys"]}
        assert all(rotating.get("/v1/tools", headers=_bearer(token)).status_code == 200 for token in (first, second))
