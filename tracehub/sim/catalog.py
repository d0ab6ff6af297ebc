"""The kinds of log each simulated service writes: levels, relative frequencies,
message templates and fields. A service without a catalog of its own uses GENERIC."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

Fields = Callable[[random.Random], dict[str, Any]]


@dataclass(frozen=True)
class Event:
    """One kind of log a service writes."""

    name: str
    level: str
    weight: float  # relative frequency within its mix
    text: str  # message template, filled from the event's fields
    fields: Fields
    traced: bool = True  # carries a request id
    incident: bool = False  # belongs to the mix of an error burst


# --- field makers -------------------------------------------------------------------


def _user(rng: random.Random) -> str:
    return f"u-{rng.randint(10_000, 99_999)}"


def _order(rng: random.Random) -> str:
    return f"o-{rng.randint(100_000, 999_999)}"


def _ip(rng: random.Random) -> str:
    return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _amount(rng: random.Random) -> str:
    return f"{rng.uniform(2, 400):.2f}"


def _email(rng: random.Random) -> str:
    name = rng.choice(("ana", "ben", "chloe", "dev", "emil", "farah", "gus"))
    domain = rng.choice(("example.com", "mail.test", "corp.example"))
    return f"{name}{rng.randint(1, 99)}@{domain}"


def _latency(rng: random.Random, low: int = 3, high: int = 250) -> int:
    return int(rng.triangular(low, high, low + (high - low) / 8))


def _card(rng: random.Random) -> dict[str, Any]:
    return {
        "brand": rng.choice(("visa", "mastercard", "amex")),
        "last4": f"{rng.randint(0, 9999):04d}",
    }


# --- catalogs ------------------------------------------------------------------------


AUTH = (
    Event(
        "token.issued",
        "info",
        40,
        "issued access token for {user_id} (ttl {ttl_s}s)",
        lambda r: {
            "user_id": _user(r),
            "ttl_s": r.choice((900, 3600)),
            "latency_ms": _latency(r),
        },
    ),
    Event(
        "login.succeeded",
        "info",
        25,
        "{user_id} logged in with {method} from {ip}",
        lambda r: {
            "user_id": _user(r),
            "method": r.choice(("password", "sso", "passkey")),
            "ip": _ip(r),
        },
    ),
    Event(
        "jwks.cache_hit",
        "debug",
        10,
        "signing keys served from cache (age {age_s}s)",
        lambda r: {"age_s": r.randint(1, 600)},
        traced=False,
    ),
    Event(
        "login.failed",
        "warn",
        8,
        "login failed for {user_id}: invalid password (attempt {attempt} of 5)",
        lambda r: {"user_id": _user(r), "attempt": r.randint(1, 4), "ip": _ip(r)},
    ),
    Event(
        "token.refresh_rejected",
        "warn",
        4,
        "refresh token expired for session s-{session}",
        lambda r: {"session": f"{r.getrandbits(32):08x}"},
    ),
    Event(
        "account.locked",
        "error",
        2,
        "account {user_id} locked after 5 failed logins",
        lambda r: {"user_id": _user(r), "ip": _ip(r)},
        incident=True,
    ),
    Event(
        "idp.timeout",
        "error",
        1,
        "identity provider did not answer within {timeout_ms} ms",
        lambda r: {"timeout_ms": 2000, "provider": r.choice(("okta", "azure-ad"))},
        incident=True,
    ),
)

PAYMENT = (
    Event(
        "charge.created",
        "info",
        40,
        "charged {amount} {currency} to {card[brand]} ending {card[last4]}"
        " for {order_id}",
        lambda r: {
            "amount": _amount(r),
            "currency": r.choice(("EUR", "USD", "GBP")),
            "card": _card(r),
            "order_id": _order(r),
        },
    ),
    Event(
        "refund.issued",
        "info",
        8,
        "refunded {amount} {currency} for {order_id}",
        lambda r: {
            "amount": _amount(r),
            "currency": r.choice(("EUR", "USD")),
            "order_id": _order(r),
        },
    ),
    Event(
        "idempotency.hit",
        "debug",
        8,
        "repeated charge request answered from the idempotency store",
        lambda r: {"order_id": _order(r)},
    ),
    Event(
        "card.declined",
        "warn",
        10,
        "card declined: {reason} ({card[brand]} ending {card[last4]})",
        lambda r: {
            "reason": r.choice(("insufficient_funds", "expired_card", "do_not_honor")),
            "card": _card(r),
            "order_id": _order(r),
        },
        incident=True,
    ),
    Event(
        "fraud.review",
        "warn",
        3,
        "{order_id} held for fraud review (score {score})",
        lambda r: {"order_id": _order(r), "score": round(r.uniform(0.7, 0.99), 2)},
    ),
    Event(
        "gateway.error",
        "error",
        2,
        "payment gateway returned {status} for charge ch-{charge}",
        lambda r: {
            "status": r.choice((502, 503, 504)),
            "charge": f"{r.getrandbits(40):010x}",
        },
        incident=True,
    ),
    Event(
        "ledger.write_failed",
        "fatal",
        0.05,
        "could not write the ledger entry for {order_id}; stopping payouts",
        lambda r: {"order_id": _order(r)},
        incident=True,
    ),
)

NOTIFICATION = (
    Event(
        "email.sent",
        "info",
        35,
        "sent {template} email to {to}",
        lambda r: {
            "template": r.choice(("receipt", "welcome", "password-reset")),
            "to": _email(r),
            "latency_ms": _latency(r, 20, 900),
        },
    ),
    Event(
        "push.sent",
        "info",
        20,
        "sent push notification to {devices} devices of {user_id}",
        lambda r: {"devices": r.randint(1, 3), "user_id": _user(r)},
    ),
    Event(
        "template.rendered",
        "debug",
        10,
        "rendered template {template} in {latency_ms} ms",
        lambda r: {
            "template": r.choice(("receipt", "welcome")),
            "latency_ms": _latency(r, 1, 40),
        },
    ),
    Event(
        "email.deferred",
        "warn",
        5,
        "email to {to} deferred by the receiving server: {reason}",
        lambda r: {"to": _email(r), "reason": "421 try again later"},
    ),
    Event(
        "email.bounced",
        "warn",
        5,
        "email to {to} bounced: {reason}",
        lambda r: {
            "to": _email(r),
            "reason": r.choice(("mailbox full", "no such user")),
        },
        incident=True,
    ),
    Event(
        "smtp.unavailable",
        "error",
        1,
        "SMTP relay {relay} refused the connection",
        lambda r: {"relay": r.choice(("smtp-1", "smtp-2"))},
        traced=False,
        incident=True,
    ),
)

INVENTORY = (
    Event(
        "stock.reserved",
        "info",
        40,
        "reserved {quantity} of {sku} for {order_id}",
        lambda r: {
            "quantity": r.randint(1, 5),
            "sku": f"SKU-{r.randint(1000, 9999)}",
            "order_id": _order(r),
        },
    ),
    Event(
        "reservation.released",
        "info",
        10,
        "released the reservation of {order_id}",
        lambda r: {"order_id": _order(r)},
    ),
    Event(
        "stock.low",
        "warn",
        5,
        "{sku} is low: {left} left in {warehouse}",
        lambda r: {
            "sku": f"SKU-{r.randint(1000, 9999)}",
            "left": r.randint(1, 9),
            "warehouse": r.choice(("ams-1", "fra-2")),
        },
        traced=False,
    ),
    Event(
        "stock.out",
        "error",
        2,
        "cannot reserve {sku} for {order_id}: out of stock",
        lambda r: {"sku": f"SKU-{r.randint(1000, 9999)}", "order_id": _order(r)},
        incident=True,
    ),
)

SEARCH = (
    Event(
        "query.served",
        "info",
        45,
        "served query with {hits} hits in {latency_ms} ms",
        lambda r: {"hits": r.randint(0, 500), "latency_ms": _latency(r, 2, 120)},
    ),
    Event(
        "index.refreshed",
        "debug",
        5,
        "refreshed index {index} ({docs} documents)",
        lambda r: {"index": "products", "docs": r.randint(100_000, 200_000)},
        traced=False,
    ),
    Event(
        "query.slow",
        "warn",
        5,
        "slow query took {latency_ms} ms",
        lambda r: {"latency_ms": _latency(r, 800, 4000)},
        incident=True,
    ),
    Event(
        "shard.unavailable",
        "error",
        1,
        "shard {shard} of index products did not answer",
        lambda r: {"shard": r.randint(0, 11)},
        incident=True,
    ),
)

SHIPPING = (
    Event(
        "label.created",
        "info",
        30,
        "created {carrier} label for {order_id}",
        lambda r: {
            "carrier": r.choice(("dhl", "ups", "postnl")),
            "order_id": _order(r),
        },
    ),
    Event(
        "shipment.dispatched",
        "info",
        20,
        "{order_id} left warehouse {warehouse}",
        lambda r: {"order_id": _order(r), "warehouse": r.choice(("ams-1", "fra-2"))},
    ),
    Event(
        "address.invalid",
        "warn",
        4,
        "address of {order_id} failed validation: {reason}",
        lambda r: {
            "order_id": _order(r),
            "reason": r.choice(("unknown postcode", "missing house number")),
        },
    ),
    Event(
        "carrier.api_error",
        "error",
        2,
        "{carrier} API returned {status}",
        lambda r: {"carrier": r.choice(("dhl", "ups")), "status": r.choice((500, 503))},
        incident=True,
    ),
)

GENERIC = (
    Event(
        "request.completed",
        "info",
        45,
        "{method} {route} returned 200 in {latency_ms} ms",
        lambda r: {
            "method": r.choice(("GET", "POST")),
            "route": r.choice(("/items", "/status")),
            "latency_ms": _latency(r),
        },
    ),
    Event(
        "cache.miss",
        "debug",
        10,
        "cache miss for key {key}",
        lambda r: {"key": f"k-{r.getrandbits(24):06x}"},
    ),
    Event(
        "request.slow",
        "warn",
        5,
        "request took {latency_ms} ms",
        lambda r: {"latency_ms": _latency(r, 1000, 5000)},
        incident=True,
    ),
    Event(
        "upstream.failed",
        "error",
        2,
        "upstream {upstream} failed: connection reset",
        lambda r: {"upstream": r.choice(("db", "cache"))},
        incident=True,
    ),
)

CATALOGS: dict[str, tuple[Event, ...]] = {
    "auth-service": AUTH,
    "payment-service": PAYMENT,
    "notification-service": NOTIFICATION,
    "inventory-service": INVENTORY,
    "search-service": SEARCH,
    "shipping-service": SHIPPING,
}
