"""The default playbook, row by row: each seed event -> the exact Heap item(s) after ``Pipeline.prepare``.

The expected bodies are written out by hand from the seed's mapping tables
(/work/shared/seed/metarouter-heap-integration.txt) and Heap's rules: identity = anonymousId
(else userId), timestamp normalised to UTC milliseconds, event = input.event, properties
flattened (dot keys, arrays of objects by index), user agent and session id added as global
identifiers, idempotency_key = messageId.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from heap_forwarder.heap.items import Endpoint
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.mapping.playbook import Playbook, event_key
from heap_forwarder.outcome import ErrorClass, Fate
from heap_forwarder.pipeline import Pipeline, Prepared

RawEvent = Callable[[str], dict[str, Any]]

ANON = "130161d0-8fee-4167-aa4d-d151eed27c6b"
SESSION = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/125.0.6422.142 Safari/537.36"
)
SAFARI_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)
IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
HASH_KEY = re.compile(r"^[0-9a-f]{40}$")


class _NoDelivery:
    def deliver(self, *args: Any, **kwargs: Any) -> list[Any]:
        raise AssertionError("these tests never deliver")


@pytest.fixture(scope="module")
def playbook() -> Playbook:
    return build_playbook()


@pytest.fixture(scope="module")
def mapper(playbook: Playbook) -> Mapper:
    return Mapper(playbook, {"MY_APP_ID": "test-app"})


@pytest.fixture(scope="module")
def pipeline(mapper: Mapper) -> Pipeline:
    return Pipeline(mapper, _NoDelivery())


def bodies(prepared: Prepared) -> list[tuple[str, dict[str, Any]]]:
    return [(str(item.endpoint), item.body) for item in prepared.items]


def prepare_one(pipeline: Pipeline, event: dict[str, Any]) -> Prepared:
    prepared = pipeline.prepare([event])
    assert len(prepared.decided) == 1
    return prepared


def track(**fields: Any) -> dict[str, Any]:
    """A small valid track event; keyword arguments replace or add fields (None removes one)."""
    event: dict[str, Any] = {
        "type": "track",
        "event": "Video Played",
        "messageId": "msg-1",
        "anonymousId": "anon-1",
        "userId": "user-1",
        "timestamp": "2024-06-10T14:00:00.000Z",
        "properties": {"video_id": "v1"},
        "context": {"userAgent": "UA/1.0", "sessionId": "sess-1"},
    }
    for key, value in fields.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event


# ---------------------------------------------------------------------------------------------
# One row per seed event (plus screen, group and a custom track event)

# The sample identify event's traits as Heap user properties (seed row "identify").
IDENTIFY_USER_PROPERTIES = (
    "/api/add_user_properties",
    {
        "identity": ANON,
        "properties": {
            "email": "jane.doe@example.com",
            "name": "Jane Doe",
            "firstName": "Jane",
            "lastName": "Doe",
            "plan": "premium",
            "phone": "+1-555-010-4477",
            "logins": 7,
            "newsletter": "true",
            "address.street": "123 Example Street, Apt 4B",
            "address.city": "Springfield",
            "address.state": "IL",
            "address.postalCode": "62701",
            "address.country": "US",
            "createdAt": "2023-11-02T09:15:27.000Z",
        },
    },
)

SEED_ROWS = [
    pytest.param(
        "cart_viewed",
        [
            (
                "/api/track",
                {
                    "identity": ANON,
                    "timestamp": "2024-06-10T14:04:30.711Z",
                    "event": "Cart Viewed",
                    "properties": {
                        "cart_id": "cart_8d2e6a51",
                        "currency": "USD",
                        "value": 138.99,
                        "products.0.product_id": "507f1f77bcf86cd799439011",
                        "products.0.sku": "KB-PRO-900-SLV",
                        "products.0.name": "ProBlend 900 Blender",
                        "products.0.brand": "Kitchenly",
                        "products.0.variant": "Silver",
                        "products.0.price": 89.99,
                        "products.0.category": "Kitchen/Appliances",
                        "products.0.quantity": 1,
                        "products.0.position": 1,
                        "products.0.url": "https://shop.example.com/products/problend-900-blender",
                        "products.0.image_url": "https://cdn.example.com/img/problend-900-silver.jpg",
                        "products.1.product_id": "505bd76785ebb509fc183733",
                        "products.1.sku": "KB-BTL-20-BLU",
                        "products.1.name": "Insulated Bottle 20 oz",
                        "products.1.brand": "Kitchenly",
                        "products.1.variant": "Ocean Blue",
                        "products.1.price": 24.5,
                        "products.1.category": "Kitchen/Drinkware",
                        "products.1.quantity": 2,
                        "products.1.position": 2,
                        "products.1.url": "https://shop.example.com/products/insulated-bottle-20oz",
                        "products.1.image_url": "https://cdn.example.com/img/bottle-20-blue.jpg",
                        "user_agent": CHROME_UA,
                    },
                    "session_id": SESSION,
                    "idempotency_key": "d9769353-e7cd-4b75-a776-42b4c37f6a31",
                },
            )
        ],
        id="cart_viewed",
    ),
    pytest.param(
        "checkout_started",
        [
            (
                "/api/track",
                {
                    "identity": "c10f865b-4511-48be-b1c5-50243f3756cc",
                    "timestamp": "2024-06-10T14:05:01.239Z",
                    "event": "Checkout Started",
                    "properties": {
                        "checkout_id": "chk_9a04e2d7",
                        "order_id": "ord_50319",
                        "affiliation": "Kitchenly Online Store DE",
                        "value": 160.68,
                        "revenue": 129.99,
                        "shipping": 5.99,
                        "tax": 24.7,
                        "discount": 9.0,
                        "coupon": "SOMMER10",
                        "currency": "EUR",
                        "products.0.product_id": "507f1f77bcf86cd799439011",
                        "products.0.sku": "KB-PRO-900-SLV",
                        "products.0.name": "ProBlend 900 Standmixer",
                        "products.0.brand": "Kitchenly",
                        "products.0.variant": "Silver",
                        "products.0.price": 89.99,
                        "products.0.category": "Kitchen/Appliances",
                        "products.0.quantity": 1,
                        "products.0.coupon": "SOMMER10",
                        "products.0.position": 1,
                        "products.0.url": "https://shop.example.com/products/problend-900-blender",
                        "products.0.image_url": "https://cdn.example.com/img/problend-900-silver.jpg",
                        "products.1.product_id": "505bd76785ebb509fc183733",
                        "products.1.sku": "KB-BTL-20-BLU",
                        "products.1.name": "Isolierflasche 20 oz \u2013 Ozeanblau",
                        "products.1.brand": "Kitchenly",
                        "products.1.variant": "Ozeanblau",
                        "products.1.price": 24.5,
                        "products.1.category": "Kitchen/Drinkware",
                        "products.1.quantity": 2,
                        "products.1.position": 2,
                        "products.1.url": "https://shop.example.com/products/insulated-bottle-20oz",
                        "products.1.image_url": "https://cdn.example.com/img/bottle-20-blue.jpg",
                        "user_agent": SAFARI_UA,
                    },
                    "session_id": "d5e5b2c3-429f-4f71-847e-6624afed01ac",
                    "idempotency_key": "17366d46-6eb9-4b96-a007-89d9d7e81ad5",
                },
            )
        ],
        id="checkout_started",
    ),
    pytest.param(
        "order_completed",
        [
            (
                "/api/track",
                {
                    "identity": ANON,
                    "timestamp": "2024-06-10T14:07:05.017Z",
                    "event": "Order Completed",
                    "properties": {
                        "checkout_id": "chk_3b7f91c0",
                        "order_id": "ord_50314",
                        "affiliation": "Kitchenly Online Store",
                        "total": 146.1,
                        "subtotal": 138.99,
                        "revenue": 129.99,
                        "shipping": 5.99,
                        "tax": 10.12,
                        "discount": 9.0,
                        "coupon": "SUMMER10",
                        "currency": "USD",
                        "shipping_address.name": "Jane Doe",
                        "shipping_address.street": "123 Example Street, Apt 4B",
                        "shipping_address.city": "Springfield",
                        "shipping_address.state": "IL",
                        "shipping_address.postalCode": "62701",
                        "shipping_address.country": "US",
                        "shipping_method": "UPS Ground",
                        "payment_method": "Visa",
                        "products.0.product_id": "507f1f77bcf86cd799439011",
                        "products.0.sku": "KB-PRO-900-SLV",
                        "products.0.name": "ProBlend 900 Blender",
                        "products.0.price": 89.99,
                        "products.0.quantity": 1,
                        "products.0.category": "Kitchen/Appliances",
                        "products.0.brand": "Kitchenly",
                        "products.0.variant": "Silver",
                        "products.0.coupon": "SUMMER10",
                        "products.1.product_id": "505bd76785ebb509fc183733",
                        "products.1.sku": "KB-BTL-20-BLU",
                        "products.1.name": "Insulated Bottle 20 oz",
                        "products.1.price": 24.5,
                        "products.1.quantity": 2,
                        "products.1.category": "Kitchen/Drinkware",
                        "products.1.brand": "Kitchenly",
                        "products.1.variant": "Ocean Blue",
                        "user_agent": CHROME_UA,
                    },
                    "session_id": SESSION,
                    "idempotency_key": "c7b602b0-8bd5-40d3-888a-bc46bb3443e4",
                },
            )
        ],
        id="order_completed",
    ),
    pytest.param(
        "payment_info_entered",
        [
            (
                "/api/track",
                {
                    "identity": ANON,
                    "timestamp": "2024-06-10T14:06:22.560Z",
                    "event": "Payment Info Entered",
                    "properties": {
                        "checkout_id": "chk_3b7f91c0",
                        "order_id": "ord_50314",
                        "step": 3,
                        "shipping_method": "UPS Ground",
                        "payment_method": "Visa",
                        "user_agent": CHROME_UA,
                    },
                    "session_id": SESSION,
                    "idempotency_key": "8bd34da6-1da2-4bb3-bbaf-a723375ffc95",
                },
            )
        ],
        id="payment_info_entered",
    ),
    pytest.param(
        "product_added",
        [
            (
                "/api/track",
                {
                    "identity": ANON,
                    "timestamp": "2024-06-10T14:04:02.088Z",
                    "event": "Product Added",
                    "properties": {
                        "cart_id": "cart_8d2e6a51",
                        "product_id": "507f1f77bcf86cd799439011",
                        "sku": "KB-PRO-900-SLV",
                        "name": "ProBlend 900 Blender",
                        "brand": "Kitchenly",
                        "variant": "Silver",
                        "price": 89.99,
                        "category": "Kitchen/Appliances",
                        "quantity": 1,
                        "position": 1,
                        "url": "https://shop.example.com/products/problend-900-blender",
                        "image_url": "https://cdn.example.com/img/problend-900-silver.jpg",
                        "coupon": "SUMMER10",
                        "currency": "USD",
                        "user_agent": CHROME_UA,
                    },
                    "session_id": SESSION,
                    "idempotency_key": "ef218b33-4d44-47b8-acd5-9c38b8af9e31",
                },
            )
        ],
        id="product_added",
    ),
    pytest.param(
        "product_clicked",
        [
            (
                "/api/track",
                {
                    "identity": ANON,
                    "timestamp": "2024-06-10T14:03:15.123Z",
                    "event": "Product Clicked",
                    "properties": {
                        "product_id": "507f1f77bcf86cd799439011",
                        "sku": "KB-PRO-900-SLV",
                        "name": "ProBlend 900 Blender",
                        "brand": "Kitchenly",
                        "variant": "Silver",
                        "price": 89.99,
                        "category": "Kitchen/Appliances",
                        "quantity": 1,
                        "position": 1,
                        "url": "https://shop.example.com/products/problend-900-blender",
                        "image_url": "https://cdn.example.com/img/problend-900-silver.jpg",
                        "list_id": "search_results_blender",
                        "user_agent": CHROME_UA,
                    },
                    "session_id": SESSION,
                    "idempotency_key": "f65a0871-0a2d-4ab5-a379-d8d485745a32",
                },
            )
        ],
        id="product_clicked",
    ),
    pytest.param(
        "product_list_viewed",
        [
            (
                "/api/track",
                {
                    "identity": ANON,
                    "timestamp": "2024-06-10T14:02:42.305Z",
                    "event": "Product List Viewed",
                    "properties": {
                        "list_id": "search_results_blender",
                        "category": "Kitchen/Appliances",
                        "products.0.product_id": "507f1f77bcf86cd799439011",
                        "products.0.sku": "KB-PRO-900-SLV",
                        "products.0.name": "ProBlend 900 Blender",
                        "products.0.brand": "Kitchenly",
                        "products.0.variant": "Silver",
                        "products.0.price": 89.99,
                        "products.0.category": "Kitchen/Appliances",
                        "products.0.position": 1,
                        "products.0.url": "https://shop.example.com/products/problend-900-blender",
                        "products.0.image_url": "https://cdn.example.com/img/problend-900-silver.jpg",
                        "products.1.product_id": "60d5ec49f1a2b3c4d5e6f7a8",
                        "products.1.sku": "KB-IMM-300-BLK",
                        "products.1.name": "Immersion Blender 300W",
                        "products.1.brand": "Kitchenly",
                        "products.1.variant": "Black",
                        "products.1.price": 39.99,
                        "products.1.category": "Kitchen/Appliances",
                        "products.1.position": 2,
                        "products.1.url": "https://shop.example.com/products/immersion-blender-300w",
                        "products.1.image_url": "https://cdn.example.com/img/immersion-300-black.jpg",
                        "products.2.product_id": "60d5ec49f1a2b3c4d5e6f7b9",
                        "products.2.sku": "KB-PB-600-RED",
                        "products.2.name": "Personal Blender 600",
                        "products.2.brand": "Kitchenly",
                        "products.2.variant": "Red",
                        "products.2.price": 49.0,
                        "products.2.category": "Kitchen/Appliances",
                        "products.2.position": 3,
                        "products.2.url": "https://shop.example.com/products/personal-blender-600",
                        "products.2.image_url": "https://cdn.example.com/img/personal-600-red.jpg",
                        "user_agent": CHROME_UA,
                    },
                    "session_id": SESSION,
                    "idempotency_key": "3bdf8ae1-5857-46a6-bb01-aeb4cc57671c",
                },
            )
        ],
        id="product_list_viewed",
    ),
    pytest.param(
        "product_viewed",
        [
            (
                "/api/track",
                {
                    "identity": ANON,
                    "timestamp": "2024-06-10T14:03:16.644Z",
                    "event": "Product Viewed",
                    "properties": {
                        "product_id": "507f1f77bcf86cd799439011",
                        "sku": "KB-PRO-900-SLV",
                        "name": "ProBlend 900 Blender",
                        "brand": "Kitchenly",
                        "variant": "Silver",
                        "price": 89.99,
                        "category": "Kitchen/Appliances",
                        "quantity": 1,
                        "position": 1,
                        "url": "https://shop.example.com/products/problend-900-blender",
                        "image_url": "https://cdn.example.com/img/problend-900-silver.jpg",
                        "currency": "USD",
                        "value": 89.99,
                        "coupon": "SUMMER10",
                        "user_agent": CHROME_UA,
                    },
                    "session_id": SESSION,
                    "idempotency_key": "b971b2d3-08a1-4712-ad62-24679d030459",
                },
            )
        ],
        id="product_viewed",
    ),
    pytest.param(
        "products_searched",
        [
            (
                "/api/track",
                {
                    "identity": ANON,
                    "timestamp": "2024-06-10T14:02:40.917Z",
                    "event": "Products Searched",
                    "properties": {"query": "blender", "session_id": SESSION, "user_agent": CHROME_UA},
                    "session_id": SESSION,
                    "idempotency_key": "004754fb-ec36-4e91-aa5c-fab858d42c4f",
                },
            )
        ],
        id="products_searched",
    ),
    pytest.param(
        "page",
        [
            (
                "/api/track",
                {
                    "identity": ANON,
                    "timestamp": "2024-06-10T14:02:11.482Z",
                    "event": "Pageview",
                    "properties": {
                        "path": "/",
                        "referrer": "https://www.google.com/",
                        "search": "?utm_source=google&utm_medium=cpc",
                        "title": "Kitchenly | Kitchen Gear That Lasts",
                        "url": "https://shop.example.com/?utm_source=google&utm_medium=cpc",
                        "name": "Home",
                        "category": "Landing",
                        "user_agent": CHROME_UA,
                    },
                    "session_id": SESSION,
                    "idempotency_key": "6ff9bd48-70e6-4d2c-96b2-d6453663ebf1",
                },
            )
        ],
        id="page",
    ),
    pytest.param(
        "identify",
        [
            IDENTIFY_USER_PROPERTIES,
            (
                "/api/v1/identify",
                {"user_id": "8267308474930012", "identity": ANON, "timestamp": "2024-06-10T14:05:40.129Z"},
            ),
        ],
        id="identify",
    ),
    pytest.param(
        "screen",
        [
            (
                "/api/track",
                {
                    "identity": "a1976756-297c-4444-bd70-8c012cdc8620",
                    "timestamp": "2024-06-11T07:41:26.810Z",
                    "event": "Screenview",
                    "properties": {
                        "name": "Product Detail",
                        "product_id": "505bd76785ebb509fc183733",
                        "sku": "KB-BTL-20-BLU",
                        "category": "Kitchen/Drinkware",
                        "from_screen": "Search Results",
                        "user_agent": IPHONE_UA,
                    },
                    "session_id": "2c46738e-565d-4255-bf3f-297772d8d428",
                    "idempotency_key": "5f9a3694-6240-40ec-add8-f03837775aca",
                },
            )
        ],
        id="screen",
    ),
    pytest.param(
        "group",
        [
            (
                "/api/add_account_properties",
                {
                    "account_id": "org_7731",
                    "properties": {
                        "name": "Example Bistro Group",
                        "industry": "Food & Beverage",
                        "employees": 240,
                        "plan": "business",
                        "website": "https://bistro.example.com",
                    },
                },
            )
        ],
        id="group",
    ),
    pytest.param(
        "custom_track",
        [
            (
                "/api/track",
                {
                    "identity": ANON,
                    "timestamp": "2024-06-10T14:12:09.376Z",
                    "event": "Video Played",
                    "properties": {
                        "video_id": "vid_blend_101",
                        "title": "5 Smoothies in 5 Minutes",
                        "video_player": "html5",
                        "position": 0,
                        "total_length": 312,
                        "sound": 80,
                        "full_screen": "false",
                        "autoplay": "false",
                        "quality": "1080p",
                        "chapters": "intro||berry-blast||green-machine",
                        "user_agent": CHROME_UA,
                    },
                    "session_id": SESSION,
                    "idempotency_key": "381ce717-6b42-45eb-873e-702fbeccd73f",
                },
            )
        ],
        id="custom_track",
    ),
]


@pytest.mark.parametrize(("name", "expected"), SEED_ROWS)
def test_seed_row_maps_to_exact_heap_items(
    pipeline: Pipeline, raw_event: RawEvent, name: str, expected: list[tuple[str, dict[str, Any]]]
) -> None:
    prepared = prepare_one(pipeline, raw_event(name))
    assert prepared.decided == [None], prepared.problems
    assert prepared.problems == []
    assert bodies(prepared) == expected
    assert all(item.source == 0 for item in prepared.items)


def test_every_seed_event_has_a_row() -> None:
    seeded = {
        "cart_viewed",
        "checkout_started",
        "order_completed",
        "payment_info_entered",
        "product_added",
        "product_clicked",
        "product_list_viewed",
        "product_viewed",
        "products_searched",
        "page",
        "identify",
    }
    assert seeded <= {p.values[0] for p in SEED_ROWS}


def test_request_fields_carry_the_app_id(mapper: Mapper) -> None:
    assert mapper.request_fields == {"app_id": "test-app"}


def test_a_batch_keeps_each_item_tied_to_its_event(pipeline: Pipeline, raw_event: RawEvent) -> None:
    prepared = pipeline.prepare([raw_event("page"), raw_event("alias"), raw_event("identify")])
    assert prepared.decided[0] is None
    assert prepared.decided[1] is not None
    assert prepared.decided[2] is None
    assert [(str(i.endpoint), i.source) for i in prepared.items] == [
        ("/api/track", 0),
        ("/api/add_user_properties", 2),
        ("/api/v1/identify", 2),
    ]


# ---------------------------------------------------------------------------------------------
# Event names match ignoring case and separators


@pytest.mark.parametrize(
    "name",
    [
        "Cart Viewed",
        "cart_viewed",
        "CART-VIEWED",
        "CartViewed",
        "cartViewed",
        "cart.viewed",
        " cart  viewed ",
    ],
)
def test_event_names_match_ignoring_case_and_separators(playbook: Playbook, name: str) -> None:
    assert event_key(name) == "cartviewed"
    assert "cartviewed" in playbook.events


@pytest.mark.parametrize("name", ["Cart Viewed", "cart_viewed", "CART-VIEWED", "CartViewed"])
def test_name_matching_picks_the_event_mapping_not_the_default(name: str) -> None:
    # A marker row on the event's own mapping shows which mapping ran.
    override = {
        "events": {
            "cart viewed": {
                "endpoint": "track",
                "rows": [
                    {"key": "event", "from": "event", "required": True},
                    {"key": "properties", "from": "properties"},
                    {"key": "properties.mapped_by", "value": "cart_viewed row"},
                ],
            }
        }
    }
    mapper = Mapper(build_playbook(parameter_text=yaml.safe_dump(override)), {"MY_APP_ID": "test-app"})
    prepared = Pipeline(mapper, _NoDelivery()).prepare([track(event=name)])
    assert bodies(prepared) == [
        (
            "/api/track",
            {
                "event": name,
                "properties": {"video_id": "v1", "mapped_by": "cart_viewed row", "user_agent": "UA/1.0"},
                "identity": "anon-1",
                "timestamp": "2024-06-10T14:00:00.000Z",  # the global row holds: not restated
                "session_id": "sess-1",
                "idempotency_key": "msg-1",
            },
        )
    ]


def test_an_unknown_track_event_uses_the_default_mapping(pipeline: Pipeline) -> None:
    assert bodies(prepare_one(pipeline, track())) == [
        (
            "/api/track",
            {
                "identity": "anon-1",
                "timestamp": "2024-06-10T14:00:00.000Z",
                "event": "Video Played",
                "properties": {"video_id": "v1", "user_agent": "UA/1.0"},
                "session_id": "sess-1",
                "idempotency_key": "msg-1",
            },
        )
    ]


@pytest.mark.parametrize("name", ["Group", "Identify", "Page", "screen"])
def test_a_track_event_named_like_an_event_type_is_a_custom_track_event(
    pipeline: Pipeline, name: str
) -> None:
    prepared = prepare_one(pipeline, track(event=name))
    assert prepared.decided == [None], prepared.problems
    assert bodies(prepared) == [
        (
            "/api/track",
            {
                "identity": "anon-1",
                "timestamp": "2024-06-10T14:00:00.000Z",
                "event": name,
                "properties": {"video_id": "v1", "user_agent": "UA/1.0"},
                "session_id": "sess-1",
                "idempotency_key": "msg-1",
            },
        )
    ]


# ---------------------------------------------------------------------------------------------
# Global identifiers: identity, user agent, session id, idempotency key


def test_identity_is_the_anonymous_id_even_when_a_user_id_is_present(pipeline: Pipeline) -> None:
    [(_, body)] = bodies(prepare_one(pipeline, track()))
    assert body["identity"] == "anon-1"
    assert "user_id" not in body


@pytest.mark.parametrize("anonymous_id", [None, "", "   "])
def test_identity_falls_back_to_the_user_id(pipeline: Pipeline, anonymous_id: str | None) -> None:
    event = track(anonymousId=None)
    if anonymous_id is not None:
        event["anonymousId"] = anonymous_id
    [(_, body)] = bodies(prepare_one(pipeline, event))
    assert body["identity"] == "user-1"
    assert "user_id" not in body


def test_seed_event_without_anonymous_id_uses_the_user_id(pipeline: Pipeline, raw_event: RawEvent) -> None:
    event = raw_event("order_completed")
    del event["anonymousId"]
    [(_, body)] = bodies(prepare_one(pipeline, event))
    assert body["identity"] == "usr_4f9c2a71e3"


def test_no_identity_at_all_is_rejected_naming_the_field(pipeline: Pipeline) -> None:
    prepared = prepare_one(pipeline, track(anonymousId=None, userId=None))
    assert prepared.items == []
    outcome = prepared.decided[0]
    assert outcome is not None
    assert outcome.fate is Fate.REJECTED
    assert outcome.error_class is ErrorClass.HEAP_RULE
    assert [(p.index, p.field) for p in prepared.problems] == [(0, "identity")]


def test_user_agent_is_added_as_a_property(pipeline: Pipeline) -> None:
    [(_, body)] = bodies(prepare_one(pipeline, track()))
    assert body["properties"]["user_agent"] == "UA/1.0"


def test_no_user_agent_no_property(pipeline: Pipeline) -> None:
    [(_, body)] = bodies(prepare_one(pipeline, track(context={"sessionId": "sess-1"})))
    assert body["properties"] == {"video_id": "v1"}


def test_the_events_own_user_agent_property_wins(pipeline: Pipeline) -> None:
    event = track(properties={"user_agent": "own"})
    [(_, body)] = bodies(prepare_one(pipeline, event))
    assert body["properties"] == {"user_agent": "own"}


def test_session_id_comes_from_context_session_id_first(pipeline: Pipeline) -> None:
    event = track(properties={"session_id": "from-properties"})
    [(_, body)] = bodies(prepare_one(pipeline, event))
    assert body["session_id"] == "sess-1"
    assert body["properties"]["session_id"] == "from-properties"


def test_session_id_falls_back_to_properties_session_id(pipeline: Pipeline) -> None:
    event = track(context={"userAgent": "UA/1.0"}, properties={"session_id": "from-properties"})
    [(_, body)] = bodies(prepare_one(pipeline, event))
    assert body["session_id"] == "from-properties"


def test_no_session_id_no_field(pipeline: Pipeline) -> None:
    [(_, body)] = bodies(prepare_one(pipeline, track(context={"userAgent": "UA/1.0"})))
    assert "session_id" not in body


def test_session_id_is_not_added_to_other_endpoints(pipeline: Pipeline, raw_event: RawEvent) -> None:
    # The identify sample carries context.sessionId and a user agent: neither is a user property.
    for endpoint, body in bodies(prepare_one(pipeline, raw_event("identify"))):
        assert "session_id" not in body, endpoint
        assert "idempotency_key" not in body, endpoint
        assert "user_agent" not in body.get("properties", {}), endpoint


def test_idempotency_key_is_the_message_id(pipeline: Pipeline) -> None:
    [(_, body)] = bodies(prepare_one(pipeline, track(messageId="mid-42")))
    assert body["idempotency_key"] == "mid-42"


@pytest.mark.parametrize("message_id", [None, ""])
def test_idempotency_key_without_message_id_is_a_stable_hash(
    pipeline: Pipeline, message_id: str | None
) -> None:
    event = track(messageId=None)
    if message_id is not None:
        event["messageId"] = message_id
    [(_, first)] = bodies(prepare_one(pipeline, event))
    [(_, again)] = bodies(prepare_one(pipeline, copy.deepcopy(event)))
    assert HASH_KEY.match(first["idempotency_key"])
    assert again["idempotency_key"] == first["idempotency_key"]


def test_the_hash_ignores_key_order(pipeline: Pipeline) -> None:
    event = track(messageId=None)
    reordered = dict(reversed(list(event.items())))
    [(_, first)] = bodies(prepare_one(pipeline, event))
    [(_, second)] = bodies(prepare_one(pipeline, reordered))
    assert first["idempotency_key"] == second["idempotency_key"]


@pytest.mark.parametrize(
    "change",
    [
        {"properties": {"video_id": "v2"}},
        {"timestamp": "2024-06-10T14:00:00.001Z"},
        {"anonymousId": "anon-2"},
        {"event": "Video Paused"},
    ],
)
def test_different_events_get_different_hashes(pipeline: Pipeline, change: dict[str, Any]) -> None:
    [(_, first)] = bodies(prepare_one(pipeline, track(messageId=None)))
    [(_, second)] = bodies(prepare_one(pipeline, track(messageId=None, **change)))
    assert first["idempotency_key"] != second["idempotency_key"]


def test_a_blank_message_id_still_gets_an_idempotency_key(pipeline: Pipeline) -> None:
    [(_, body)] = bodies(prepare_one(pipeline, track(messageId="   ")))
    assert HASH_KEY.match(body.get("idempotency_key", ""))


# ---------------------------------------------------------------------------------------------
# identify, alias, page, screen, group


def test_identify_without_heap_user_id_only_adds_user_properties(
    pipeline: Pipeline, raw_event: RawEvent
) -> None:
    event = raw_event("identify")
    del event["context"]["heap"]
    assert bodies(prepare_one(pipeline, event)) == [IDENTIFY_USER_PROPERTIES]


def test_identify_with_numeric_heap_user_id_links_it_as_a_string(pipeline: Pipeline) -> None:
    event = {
        "type": "identify",
        "userId": "user-9",
        "timestamp": "2024-06-10T14:00:00Z",
        "traits": {"plan": "pro"},
        "context": {"heap": {"user_id": 8267308474930012}},
    }
    assert bodies(prepare_one(pipeline, event)) == [
        ("/api/add_user_properties", {"identity": "user-9", "properties": {"plan": "pro"}}),
        (
            "/api/v1/identify",
            {"user_id": "8267308474930012", "identity": "user-9", "timestamp": "2024-06-10T14:00:00.000Z"},
        ),
    ]


def test_identify_with_a_non_numeric_heap_user_id_is_rejected(pipeline: Pipeline) -> None:
    event = {
        "type": "identify",
        "anonymousId": "anon-1",
        "traits": {"plan": "pro"},
        "context": {"heap": {"user_id": "not-a-number"}},
    }
    prepared = prepare_one(pipeline, event)
    outcome = prepared.decided[0]
    assert outcome is not None
    assert outcome.error_class is ErrorClass.HEAP_RULE
    assert [p.field for p in prepared.problems] == ["user_id"]


def test_alias_is_rejected_as_unsupported(pipeline: Pipeline, raw_event: RawEvent) -> None:
    prepared = prepare_one(pipeline, raw_event("alias"))
    assert prepared.items == []
    outcome = prepared.decided[0]
    assert outcome is not None
    assert outcome.fate is Fate.REJECTED
    assert outcome.error_class is ErrorClass.UNSUPPORTED
    assert "alias" in outcome.reason
    assert [(p.index, p.field) for p in prepared.problems] == [(0, "type")]


def test_page_is_a_pageview_and_screen_a_screenview(pipeline: Pipeline) -> None:
    page = {"type": "page", "anonymousId": "a", "messageId": "m1", "timestamp": "2024-06-10T14:00:00Z"}
    screen = {**page, "type": "screen", "name": "Settings", "messageId": "m2"}
    assert bodies(pipeline.prepare([page, screen])) == [
        (
            "/api/track",
            {
                "identity": "a",
                "timestamp": "2024-06-10T14:00:00.000Z",
                "event": "Pageview",
                "properties": {},
                "idempotency_key": "m1",
            },
        ),
        (
            "/api/track",
            {
                "identity": "a",
                "timestamp": "2024-06-10T14:00:00.000Z",
                "event": "Screenview",
                "properties": {"name": "Settings"},
                "idempotency_key": "m2",
            },
        ),
    ]


def test_a_track_event_without_timestamp_is_rejected_as_invalid(pipeline: Pipeline) -> None:
    prepared = prepare_one(pipeline, track(timestamp=None))
    outcome = prepared.decided[0]
    assert outcome is not None
    assert outcome.error_class is ErrorClass.INVALID_EVENT
    assert [p.field for p in prepared.problems] == ["timestamp"]


def test_group_without_traits_still_names_the_account(pipeline: Pipeline) -> None:
    event = {"type": "group", "groupId": 7731, "anonymousId": "a"}
    assert bodies(prepare_one(pipeline, event)) == [
        (str(Endpoint.ADD_ACCOUNT_PROPERTIES), {"account_id": "7731", "properties": {}})
    ]


def test_the_default_playbook_leaves_the_input_event_untouched(
    pipeline: Pipeline, raw_event: RawEvent
) -> None:
    events = [raw_event(n) for n in ("order_completed", "identify", "page", "group")]
    before = copy.deepcopy(events)
    pipeline.prepare(events)
    assert events == before


def test_a_nested_output_key_does_not_change_the_input_event() -> None:
    override = {
        "events": {
            "Video Played": {
                "endpoint": "track",
                "rows": [
                    {"key": "event", "from": "event"},
                    {"key": "properties", "from": "properties"},
                    {"key": "properties.video.source", "value": "forwarder"},
                ],
            }
        }
    }
    mapper = Mapper(build_playbook(parameter_text=yaml.safe_dump(override)), {"MY_APP_ID": "test-app"})
    event = track(properties={"video": {"id": "v1"}})
    before = copy.deepcopy(event)
    prepared = Pipeline(mapper, _NoDelivery()).prepare([event])
    assert bodies(prepared)[0][1]["properties"]["video.source"] == "forwarder"
    assert event == before
