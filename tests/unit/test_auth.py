from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastchat import auth
from fastchat.auth import (
    Claims,
    PasswordHasher,
    TokenService,
    bearer_token,
    normalize_email,
    resolve_jwt_secret,
    validate_login,
    validate_registration,
)
from fastchat.errors import AuthRequired, InvalidToken, ValidationError

SECRET = "s" * 40


@pytest.fixture
def hasher() -> Iterator[PasswordHasher]:
    h = PasswordHasher(rounds=4, threads=2)
    yield h
    h.close()


@pytest.fixture
def bcrypt_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads bcrypt's real hashpw/checkpw ran on, recorded by a pass-through."""
    seen: list[str] = []
    for name in ("hashpw", "checkpw"):
        real = getattr(bcrypt, name)

        def spy(*args: object, _real=real) -> object:
            seen.append(threading.current_thread().name)
            return _real(*args)

        monkeypatch.setattr(bcrypt, name, spy)
    return seen


# --- PasswordHasher ---------------------------------------------------------------


async def test_hash_verify_round_trip(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash("correct horse")
    assert hashed.startswith("$2b$04$")
    assert await hasher.verify("correct horse", hashed)


async def test_wrong_password(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash("correct horse")
    assert not await hasher.verify("correct horsE", hashed)


async def test_unicode_password(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash("pässwörd✓")
    assert await hasher.verify("pässwörd✓", hashed)
    assert not await hasher.verify("passwörd✓", hashed)


async def test_bcrypt_runs_off_the_loop_thread(bcrypt_threads: list[str]) -> None:
    h = PasswordHasher(rounds=4, threads=1)
    try:
        hashed = await h.hash("password1")
        assert await h.verify("password1", hashed)
        assert not await h.verify("password1", None)
    finally:
        h.close()
    loop_thread = threading.current_thread().name
    # dummy hash at start, hash, check, dummy check
    assert len(bcrypt_threads) == 4
    assert all(name.startswith("bcrypt") for name in bcrypt_threads)
    assert loop_thread not in bcrypt_threads


async def test_unknown_user_checks_against_dummy_hash(
    hasher: PasswordHasher, bcrypt_threads: list[str]
) -> None:
    assert not await hasher.verify("whatever1", None)
    # A real bcrypt check ran, on the pool, against the dummy hash.
    assert len(bcrypt_threads) == 1
    assert bcrypt_threads[0].startswith("bcrypt")


async def test_unknown_user_costs_about_as_much_as_a_wrong_password() -> None:
    # rounds=8 makes one bcrypt check ~15 ms, well above scheduling noise.
    h = PasswordHasher(rounds=8, threads=1)
    try:
        hashed = await h.hash("password1")
        await h.verify("password1", None)  # the dummy hash is ready from here on

        async def timed(stored: str | None) -> float:
            start = time.perf_counter()
            assert not await h.verify("wrong-password", stored)
            return time.perf_counter() - start

        known = min([await timed(hashed) for _ in range(3)])
        unknown = min([await timed(None) for _ in range(3)])
    finally:
        h.close()
    assert unknown > known / 3
    assert known > unknown / 3


async def test_password_over_72_bytes(hasher: PasswordHasher) -> None:
    long = "é" * 36 + "x"  # 73 bytes, 37 characters
    with pytest.raises(ValidationError) as exc:
        await hasher.hash(long)
    assert exc.value.field == "password"
    hashed = await hasher.hash(long[:-1])  # exactly 72 bytes is fine
    assert not await hasher.verify(long, hashed)
    assert not await hasher.verify(long, None)


async def test_unencodable_password(hasher: PasswordHasher) -> None:
    with pytest.raises(ValidationError):
        await hasher.hash("password\ud800")
    assert not await hasher.verify("password\ud800", await hasher.hash("password1"))


async def test_corrupt_stored_hash_is_a_mismatch(hasher: PasswordHasher) -> None:
    assert not await hasher.verify("password1", "not-a-bcrypt-hash")


# --- TokenService -------------------------------------------------------------------


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "userId": "u-1",
        "username": "alice",
        "role": "user",
        "iat": now,
        "exp": now + 60,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _reason(tokens: TokenService, token: object) -> str:
    with pytest.raises(InvalidToken) as exc:
        tokens.verify(token)
    return exc.value.message


def test_token_round_trip() -> None:
    tokens = TokenService(SECRET, ttl_seconds=3600)
    before = int(time.time())
    claims = tokens.verify(tokens.issue("u-1", "alice", "moderator"))
    assert claims.user_id == "u-1"
    assert claims.username == "alice"
    assert claims.role == "moderator"
    assert before <= claims.issued_at <= int(time.time())
    assert claims.expires_at == claims.issued_at + 3600
    assert isinstance(claims, Claims)


def test_token_uses_the_seed_claim_names() -> None:
    token = TokenService(SECRET, ttl_seconds=60).issue("u-1", "alice", "user")
    header = jwt.get_unverified_header(token)
    payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert header["alg"] == "HS256"
    assert {"userId", "username", "role", "iat", "exp"} <= payload.keys()


def test_token_signed_with_another_secret() -> None:
    token = TokenService("t" * 40, ttl_seconds=60).issue("u-1", "alice", "user")
    assert _reason(TokenService(SECRET, 60), token) == "Bad token signature"


def test_expired_token() -> None:
    token = jwt.encode(_claims(iat=1_000, exp=2_000), SECRET, algorithm="HS256")
    assert _reason(TokenService(SECRET, 60), token) == "Token expired"


def test_tampered_signature() -> None:
    token = TokenService(SECRET, 60).issue("u-1", "alice", "user")
    head, payload, sig = token.split(".")
    flipped = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")
    assert _reason(TokenService(SECRET, 60), f"{head}.{payload}.{flipped}") == (
        "Bad token signature"
    )


def test_tampered_payload() -> None:
    tokens = TokenService(SECRET, 60)
    head, _, sig = tokens.issue("u-1", "alice", "user").split(".")
    forged = _b64(_claims(role="admin"))
    assert _reason(tokens, f"{head}.{forged}.{sig}") == "Bad token signature"


def test_alg_none_token() -> None:
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(role='admin'))}."
    assert _reason(TokenService(SECRET, 60), token) == "Malformed token"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_other_hmac_algorithm_with_same_secret() -> None:
    token = jwt.encode(_claims(), SECRET, algorithm="HS512")
    assert _reason(TokenService(SECRET, 60), token) == "Malformed token"


def test_rs256_header_signed_with_the_secret() -> None:
    # The algorithm-confusion attack: header says RS256, HMAC-signed with the shared secret.
    signing_input = f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(_claims(role='admin'))}"
    mac = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert _reason(TokenService(SECRET, 60), token) == "Malformed token"


@pytest.mark.parametrize("missing", ["exp", "iat", "userId"])
def test_required_claims(missing: str) -> None:
    token = jwt.encode(_claims(**{missing: None}), SECRET, algorithm="HS256")
    assert _reason(TokenService(SECRET, 60), token) == "Malformed token"


@pytest.mark.parametrize(
    "overrides", [{"userId": 42}, {"userId": ""}, {"username": ["x"]}, {"role": "root"}]
)
def test_claims_of_the_wrong_shape(overrides: dict[str, object]) -> None:
    token = jwt.encode(_claims(**overrides), SECRET, algorithm="HS256")
    assert _reason(TokenService(SECRET, 60), token) == "Malformed token"


def test_seed_style_token_without_role_is_a_plain_user() -> None:
    token = jwt.encode(_claims(role=None), SECRET, algorithm="HS256")
    assert TokenService(SECRET, 60).verify(token).role == "user"


@pytest.mark.parametrize("token", [None, 123, b"bytes", "", "abc", "a.b.c", "x" * 5000])
def test_malformed_tokens(token: object) -> None:
    assert _reason(TokenService(SECRET, 60), token) == "Malformed token"


def test_oversize_token_refused_before_decoding() -> None:
    tokens = TokenService(SECRET, 60)
    padded = tokens.issue("u-1", "a" * 4096, "user")
    assert len(padded) > 4096
    assert _reason(tokens, padded) == "Malformed token"


def test_error_never_contains_the_token() -> None:
    token = jwt.encode(_claims(iat=1_000, exp=2_000), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken) as exc:
        TokenService(SECRET, 60).verify(token)
    assert token not in str(exc.value)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


@given(st.text(max_size=300))
def test_arbitrary_strings_only_raise_invalid_token(token: str) -> None:
    with pytest.raises(InvalidToken):
        TokenService(SECRET, 60).verify(token)


@pytest.mark.parametrize("secret", ["", "short", "x" * 31, "é" * 15])
def test_short_secret_refused(secret: str) -> None:
    with pytest.raises(ValueError):
        TokenService(secret, 60)


def test_secret_length_counts_bytes() -> None:
    TokenService("é" * 16, 60)  # 16 characters, 32 bytes


# --- resolve_jwt_secret -----------------------------------------------------------


def test_configured_secret_wins(tmp_path: Path) -> None:
    assert resolve_jwt_secret("c" * 32, tmp_path) == "c" * 32
    assert not (tmp_path / "jwt_secret").exists()


def test_generated_secret_persists_and_is_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data" / "nested"
    first = resolve_jwt_secret("", data_dir)
    path = data_dir / "jwt_secret"
    assert len(first.encode()) >= 32
    assert path.read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_jwt_secret("", data_dir) == first
    assert sorted(p.name for p in data_dir.iterdir()) == ["jwt_secret"]  # no temp files left


def test_existing_secret_file_is_used(tmp_path: Path) -> None:
    (tmp_path / "jwt_secret").write_text("k" * 40 + "\n")
    assert resolve_jwt_secret("", tmp_path) == "k" * 40


def test_short_secret_file_refused(tmp_path: Path) -> None:
    (tmp_path / "jwt_secret").write_text("short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        resolve_jwt_secret("", tmp_path)


def test_concurrent_creation_keeps_the_first_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process writes its secret between our existence check and our link().
    real_create = auth._create_secret_file

    def racing_create(path: Path, secret: str) -> None:
        path.write_text("w" * 40)
        real_create(path, secret)

    monkeypatch.setattr(auth, "_create_secret_file", racing_create)
    assert resolve_jwt_secret("", tmp_path) == "w" * 40


# --- validators ---------------------------------------------------------------------

VALID = {"username": "alice_01", "email": "Alice@Example.COM", "password": "hunter22"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
shaped_bodies = st.fixed_dictionaries(
    {}, optional={k: json_values | st.text() for k in ("username", "email", "password")}
)
usernames = st.from_regex(r"[A-Za-z0-9_.\-]{3,32}", fullmatch=True)
labels = st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True)
emails = st.builds(lambda local, dom, tld: f"{local}@{dom}.{tld}", labels, labels, labels)
passwords = st.text(min_size=8, max_size=24).filter(lambda p: len(p.encode()) <= 72)


def test_valid_registration_normalizes_email() -> None:
    reg = validate_registration(VALID)
    assert (reg.username, reg.email, reg.password) == ("alice_01", "alice@example.com", "hunter22")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("username", "ab"),
        ("username", "a" * 33),
        ("username", "has space"),
        ("username", "émile"),
        ("username", "alice\n"),
        ("username", 123),
        ("email", "no-at-sign"),
        ("email", "a@localhost"),
        ("email", "a b@example.com"),
        ("email", "a@@example.com"),
        ("email", "a@example..com"),
        ("email", "a@example.com\n"),
        ("email", "a" * 250 + "@b.co"),
        ("email", None),
        ("password", "short"),
        ("password", "x" * 73),
        ("password", "é" * 37),
        ("password", "password\ud800"),
        ("password", ["hunter22"]),
    ],
)
def test_invalid_registration_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        validate_registration({**VALID, field: value})
    assert exc.value.field == field


@pytest.mark.parametrize("field", ["username", "email", "password"])
def test_missing_registration_field(field: str) -> None:
    body = {k: v for k, v in VALID.items() if k != field}
    with pytest.raises(ValidationError) as exc:
        validate_registration(body)
    assert exc.value.field == field


def test_registration_limits_are_inclusive() -> None:
    validate_registration({**VALID, "username": "abc", "password": "12345678"})
    validate_registration({**VALID, "username": "a" * 32, "password": "é" * 36})


@pytest.mark.parametrize("body", [None, [], "text", 1, [VALID]])
def test_body_must_be_an_object(body: object) -> None:
    with pytest.raises(ValidationError):
        validate_registration(body)
    with pytest.raises(ValidationError):
        validate_login(body)


@given(json_values | shaped_bodies)
def test_arbitrary_json_only_raises_validation_error(body: object) -> None:
    for validate in (validate_registration, validate_login):
        with contextlib.suppress(ValidationError):
            validate(body)


@given(usernames, emails, passwords)
def test_valid_registrations_are_accepted(username: str, email: str, password: str) -> None:
    reg = validate_registration({"username": username, "email": email, "password": password})
    assert (reg.username, reg.email, reg.password) == (username, email.lower(), password)


@given(st.text(), st.text())
def test_login_accepts_any_strings(username: str, password: str) -> None:
    login = validate_login({"username": username, "password": password, "extra": 1})
    assert (login.username, login.password) == (username, password)


@pytest.mark.parametrize(
    "body",
    [
        {"password": "x"},
        {"username": "x"},
        {"username": 1, "password": "x"},
        {"username": "x", "password": None},
    ],
)
def test_login_requires_string_fields(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as exc:
        validate_login(body)
    assert exc.value.field in {"username", "password"}


def test_normalize_email() -> None:
    assert normalize_email("Bob@Example.Org") == "bob@example.org"


# --- bearer_token -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer tok", "tok"), ("BEARER  tok ", "tok")],
)
def test_bearer_token(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc", "tok"])
def test_bearer_token_missing(header: str | None) -> None:
    with pytest.raises(AuthRequired):
        bearer_token(header)
