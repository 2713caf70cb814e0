"""boto3 against ddbcache: an unchanged client, pointed at the proxy by AWS_ENDPOINT_URL_DYNAMODB only.

Covers the low-level client and the resource (Table) API: table creation, item CRUD, Query, Scan,
batches and, when DDBCACHE_SDK_TRANSACTIONS=1 (the engine supports them: moto), transactions and
PartiQL. Every answer is checked, every read after a write must see the write, and repeated reads
must be cache hits: the `x-ddbcache` response header says `hit`, and `ddbcache_cache_hits_total`
on the admin port ($DDBCACHE_ADMIN/metrics) goes up. boto3 validates `x-amz-crc32` itself, so a
hit with a wrong checksum fails here too.

Environment:
  AWS_ENDPOINT_URL_DYNAMODB  the proxy (required: the suite never talks to real AWS)
  DDBCACHE_ADMIN             the proxy's admin address; when unset (running straight against an
                             engine while developing the suite) the cache checks are skipped
  DDBCACHE_SDK_TRANSACTIONS  "1" to run the transaction and PartiQL tests

Run by tests/sdk_clients.rs; by hand: .venv/bin/python -m pytest -q tests/sdk/python
"""

import os
import re
import time
import urllib.request
import uuid
from decimal import Decimal

import boto3
import pytest
from boto3.dynamodb.conditions import Attr, Key
from botocore.config import Config

ENDPOINT = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
ADMIN = os.environ.get("DDBCACHE_ADMIN")
TRANSACTIONS = os.environ.get("DDBCACHE_SDK_TRANSACTIONS") == "1"

if not ENDPOINT:
    raise RuntimeError("set AWS_ENDPOINT_URL_DYNAMODB to the ddbcache endpoint")

# Test credentials, unless the caller set others; the proxy re-signs with its own.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ.setdefault("AWS_DEFAULT_REGION", os.environ["AWS_REGION"])

needs_transactions = pytest.mark.skipif(
    not TRANSACTIONS, reason="DDBCACHE_SDK_TRANSACTIONS=1 is set only for engines with transactions"
)

CONFIG = Config(retries={"max_attempts": 3, "mode": "standard"})


# ---------------------------------------------------------------------------------------------
# Cache observations


def cache_header(response):
    return response["ResponseMetadata"]["HTTPHeaders"].get("x-ddbcache")


def cache_hits(cache):
    """Current ddbcache_cache_hits_total{cache=...} from the admin port."""
    with urllib.request.urlopen(f"{ADMIN}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    pattern = re.compile(r'^ddbcache_cache_hits_total\{[^}]*cache="%s"[^}]*\}\s+(\S+)$' % cache, re.M)
    return sum(float(value) for value in pattern.findall(text))


class HitCounter:
    """Counts cache hits between construction and `delta()`; inert without DDBCACHE_ADMIN."""

    def __init__(self, cache):
        self.cache = cache
        self.start = cache_hits(cache) if ADMIN else 0

    def delta(self):
        return cache_hits(self.cache) - self.start


def expect_header(response, outcome):
    if ADMIN:
        assert cache_header(response) == outcome, response["ResponseMetadata"]["HTTPHeaders"]


def expect_hits(counter, at_least):
    if ADMIN:
        assert counter.delta() >= at_least, f"{counter.cache} cache hits went up by {counter.delta()}"


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def client():
    return boto3.client("dynamodb", config=CONFIG)


@pytest.fixture(scope="module")
def resource():
    return boto3.resource("dynamodb", config=CONFIG)


def wait_until(check, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def table_name(client):
    """A fresh hash+range table (pk S, sk S), deleted at the end."""
    name = f"sdk_py_{uuid.uuid4().hex[:10]}"
    created = client.create_table(
        TableName=name,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    assert created["TableDescription"]["TableName"] == name
    wait_until(
        lambda: client.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE",
        f"table {name} to become ACTIVE",
    )
    listed = client.get_paginator("list_tables").paginate().build_full_result()["TableNames"]
    assert name in listed
    yield name
    client.delete_table(TableName=name)


def key(pk, sk):
    return {"pk": {"S": pk}, "sk": {"S": sk}}


# ---------------------------------------------------------------------------------------------
# Low-level client


def test_get_item_repeated_is_a_cache_hit(client, table_name):
    client.put_item(
        TableName=table_name,
        Item={**key("user#1", "profile"), "name": {"S": "Ada"}, "age": {"N": "36"}},
    )
    first = client.get_item(TableName=table_name, Key=key("user#1", "profile"))
    assert first["Item"] == {**key("user#1", "profile"), "name": {"S": "Ada"}, "age": {"N": "36"}}
    expect_header(first, "miss")

    hits = HitCounter("item")
    second = client.get_item(TableName=table_name, Key=key("user#1", "profile"))
    assert second["Item"] == first["Item"]
    expect_header(second, "hit")
    expect_hits(hits, 1)


def test_consistent_read_bypasses_cache(client, table_name):
    client.put_item(TableName=table_name, Item={**key("user#2", "profile"), "name": {"S": "Grace"}})
    for _ in range(2):
        answer = client.get_item(TableName=table_name, Key=key("user#2", "profile"), ConsistentRead=True)
        assert answer["Item"]["name"] == {"S": "Grace"}
        expect_header(answer, "bypass")


def test_missing_item_is_answered_without_item(client, table_name):
    for _ in range(2):
        answer = client.get_item(TableName=table_name, Key=key("nobody", "profile"))
        assert "Item" not in answer


def test_read_after_write_sees_the_write(client, table_name):
    k = key("user#3", "profile")
    client.put_item(TableName=table_name, Item={**k, "visits": {"N": "1"}})
    assert client.get_item(TableName=table_name, Key=k)["Item"]["visits"] == {"N": "1"}
    assert client.get_item(TableName=table_name, Key=k)["Item"]["visits"] == {"N": "1"}  # cached now

    updated = client.update_item(
        TableName=table_name,
        Key=k,
        UpdateExpression="SET visits = visits + :one, #s = :status",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":one": {"N": "1"}, ":status": {"S": "active"}},
        ReturnValues="ALL_NEW",
    )
    assert updated["Attributes"]["visits"] == {"N": "2"}
    after_update = client.get_item(TableName=table_name, Key=k)["Item"]
    assert after_update["visits"] == {"N": "2"} and after_update["status"] == {"S": "active"}

    client.put_item(TableName=table_name, Item={**k, "visits": {"N": "10"}})
    assert client.get_item(TableName=table_name, Key=k)["Item"] == {**k, "visits": {"N": "10"}}

    deleted = client.delete_item(TableName=table_name, Key=k, ReturnValues="ALL_OLD")
    assert deleted["Attributes"]["visits"] == {"N": "10"}
    assert "Item" not in client.get_item(TableName=table_name, Key=k)


def test_query_and_scan(client, table_name):
    for sk in ("order#1", "order#2", "order#3"):
        client.put_item(TableName=table_name, Item={**key("cust#1", sk), "amount": {"N": sk[-1]}})

    def query():
        return client.query(
            TableName=table_name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": "cust#1"}, ":prefix": {"S": "order#"}},
        )

    first = query()
    assert [item["sk"]["S"] for item in first["Items"]] == ["order#1", "order#2", "order#3"]
    assert first["Count"] == 3

    hits = HitCounter("query")
    second = query()
    assert second["Items"] == first["Items"]
    expect_header(second, "hit")
    expect_hits(hits, 1)

    # A write invalidates the table's cached queries: the next Query sees the new item.
    client.put_item(TableName=table_name, Item={**key("cust#1", "order#4"), "amount": {"N": "4"}})
    third = query()
    assert [item["sk"]["S"] for item in third["Items"]] == ["order#1", "order#2", "order#3", "order#4"]

    descending = client.query(
        TableName=table_name,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "cust#1"}},
        ScanIndexForward=False,
        Limit=2,
    )
    assert [item["sk"]["S"] for item in descending["Items"]] == ["order#4", "order#3"]
    assert descending["LastEvaluatedKey"] == key("cust#1", "order#3")

    def scan():
        return client.scan(
            TableName=table_name,
            FilterExpression="pk = :pk AND amount >= :min",
            ExpressionAttributeValues={":pk": {"S": "cust#1"}, ":min": {"N": "3"}},
        )

    scanned = scan()
    assert sorted(item["sk"]["S"] for item in scanned["Items"]) == ["order#3", "order#4"]
    hits = HitCounter("query")
    again = scan()
    assert again["Items"] == scanned["Items"]
    expect_header(again, "hit")
    expect_hits(hits, 1)

    client.delete_item(TableName=table_name, Key=key("cust#1", "order#4"))
    assert sorted(item["sk"]["S"] for item in scan()["Items"]) == ["order#3"]


def batch_get(client, table_name, keys):
    """BatchGetItem until no key is left unprocessed; returns the items sorted by sk."""
    items, request = [], {table_name: {"Keys": keys}}
    while request:
        answer = client.batch_get_item(RequestItems=request)
        items += answer["Responses"].get(table_name, [])
        request = answer.get("UnprocessedKeys") or {}
    return sorted(items, key=lambda item: item["sk"]["S"])


def test_batch_write_and_batch_get(client, table_name):
    keys = [key("batch", f"item#{i}") for i in range(5)]
    written = client.batch_write_item(
        RequestItems={table_name: [{"PutRequest": {"Item": {**k, "n": {"N": str(i)}}}} for i, k in enumerate(keys)]}
    )
    assert not written.get("UnprocessedItems")

    first = batch_get(client, table_name, keys)
    assert [item["n"]["N"] for item in first] == ["0", "1", "2", "3", "4"]

    hits = HitCounter("item")
    second = batch_get(client, table_name, keys)
    assert second == first
    expect_hits(hits, len(keys))

    # Deletes and an overwrite through BatchWriteItem are seen by the next BatchGetItem.
    client.batch_write_item(
        RequestItems={
            table_name: [
                {"DeleteRequest": {"Key": keys[0]}},
                {"DeleteRequest": {"Key": keys[1]}},
                {"PutRequest": {"Item": {**keys[2], "n": {"N": "20"}}}},
            ]
        }
    )
    third = batch_get(client, table_name, keys)
    assert [(item["sk"]["S"], item["n"]["N"]) for item in third] == [
        ("item#2", "20"),
        ("item#3", "3"),
        ("item#4", "4"),
    ]


# ---------------------------------------------------------------------------------------------
# Resource (Table) API


def test_table_resource_crud_query_scan_batch(resource, table_name):
    table = resource.Table(table_name)
    table.put_item(Item={"pk": "res", "sk": "a", "tags": {"x", "y"}, "price": Decimal("9.5")})

    first = table.get_item(Key={"pk": "res", "sk": "a"})
    assert first["Item"] == {"pk": "res", "sk": "a", "tags": {"x", "y"}, "price": Decimal("9.5")}
    hits = HitCounter("item")
    second = table.get_item(Key={"pk": "res", "sk": "a"})
    assert second["Item"] == first["Item"]
    expect_header(second, "hit")
    expect_hits(hits, 1)

    updated = table.update_item(
        Key={"pk": "res", "sk": "a"},
        UpdateExpression="SET price = :p REMOVE tags",
        ExpressionAttributeValues={":p": Decimal("12")},
        ReturnValues="UPDATED_NEW",
    )
    assert updated["Attributes"] == {"price": Decimal("12")}
    assert table.get_item(Key={"pk": "res", "sk": "a"})["Item"] == {"pk": "res", "sk": "a", "price": Decimal("12")}

    with table.batch_writer() as batch:
        for sk in ("b", "c", "d"):
            batch.put_item(Item={"pk": "res", "sk": sk, "price": Decimal(ord(sk) - ord("a"))})

    queried = table.query(KeyConditionExpression=Key("pk").eq("res") & Key("sk").between("b", "d"))
    assert [item["sk"] for item in queried["Items"]] == ["b", "c", "d"]
    hits = HitCounter("query")
    again = table.query(KeyConditionExpression=Key("pk").eq("res") & Key("sk").between("b", "d"))
    assert again["Items"] == queried["Items"]
    expect_header(again, "hit")
    expect_hits(hits, 1)

    scanned = table.scan(FilterExpression=Attr("pk").eq("res") & Attr("price").gt(Decimal(2)))
    assert sorted(item["sk"] for item in scanned["Items"]) == ["a", "d"]

    table.delete_item(Key={"pk": "res", "sk": "c"})
    assert "Item" not in table.get_item(Key={"pk": "res", "sk": "c"})
    after_delete = table.query(KeyConditionExpression=Key("pk").eq("res") & Key("sk").between("b", "d"))
    assert [item["sk"] for item in after_delete["Items"]] == ["b", "d"]


# ---------------------------------------------------------------------------------------------
# Transactions and PartiQL (pass through the proxy, but must invalidate what they write)


@needs_transactions
def test_transact_write_and_get(client, table_name):
    k1, k2, k3 = key("tx", "1"), key("tx", "2"), key("tx", "3")
    client.put_item(TableName=table_name, Item={**k2, "balance": {"N": "100"}})
    client.put_item(TableName=table_name, Item={**k3, "doomed": {"BOOL": True}})
    for k in (k1, k2, k3):  # warm the cache with the values the transaction replaces
        client.get_item(TableName=table_name, Key=k)
        client.get_item(TableName=table_name, Key=k)

    client.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table_name, "Item": {**k1, "balance": {"N": "50"}}}},
            {
                "Update": {
                    "TableName": table_name,
                    "Key": k2,
                    "UpdateExpression": "SET balance = balance - :x",
                    "ConditionExpression": "balance >= :x",
                    "ExpressionAttributeValues": {":x": {"N": "50"}},
                }
            },
            {"Delete": {"TableName": table_name, "Key": k3}},
        ]
    )
    assert client.get_item(TableName=table_name, Key=k1)["Item"]["balance"] == {"N": "50"}
    assert client.get_item(TableName=table_name, Key=k2)["Item"]["balance"] == {"N": "50"}
    assert "Item" not in client.get_item(TableName=table_name, Key=k3)

    got = client.transact_get_items(
        TransactItems=[{"Get": {"TableName": table_name, "Key": k}} for k in (k1, k2, k3)]
    )
    balances = [response.get("Item", {}).get("balance") for response in got["Responses"]]
    assert balances == [{"N": "50"}, {"N": "50"}, None]

    with pytest.raises(client.exceptions.TransactionCanceledException):
        client.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": table_name,
                        "Key": k2,
                        "UpdateExpression": "SET balance = balance - :x",
                        "ConditionExpression": "balance >= :x",
                        "ExpressionAttributeValues": {":x": {"N": "500"}},
                    }
                }
            ]
        )
    assert client.get_item(TableName=table_name, Key=k2)["Item"]["balance"] == {"N": "50"}


@needs_transactions
def test_execute_statement_with_parameters(client, table_name):
    k = key("partiql", "1")
    # Literals in INSERT and DELETE, parameters elsewhere: moto's PartiQL parser takes `?` only
    # in SELECT and UPDATE.
    client.execute_statement(Statement=f"INSERT INTO \"{table_name}\" VALUE {{'pk': 'partiql', 'sk': '1', 'color': 'red'}}")
    # Cache the item, then change it with PartiQL: the next GetItem must see the change.
    assert client.get_item(TableName=table_name, Key=k)["Item"]["color"] == {"S": "red"}
    assert client.get_item(TableName=table_name, Key=k)["Item"]["color"] == {"S": "red"}

    selected = client.execute_statement(
        Statement=f'SELECT * FROM "{table_name}" WHERE pk = ? AND sk = ?',
        Parameters=[{"S": "partiql"}, {"S": "1"}],
    )
    assert selected["Items"] == [{**k, "color": {"S": "red"}}]

    client.execute_statement(
        Statement=f'UPDATE "{table_name}" SET color = ? WHERE pk = ? AND sk = ?',
        Parameters=[{"S": "blue"}, {"S": "partiql"}, {"S": "1"}],
    )
    assert client.get_item(TableName=table_name, Key=k)["Item"]["color"] == {"S": "blue"}

    client.execute_statement(Statement=f"DELETE FROM \"{table_name}\" WHERE pk = 'partiql' AND sk = '1'")
    assert "Item" not in client.get_item(TableName=table_name, Key=k)
