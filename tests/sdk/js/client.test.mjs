// The AWS SDK for JavaScript v3 against ddbcache: unchanged clients, pointed at the proxy by
// AWS_ENDPOINT_URL_DYNAMODB only.
//
// Covers DynamoDBClient (@aws-sdk/client-dynamodb) and DynamoDBDocumentClient (@aws-sdk/lib-dynamodb):
// table creation, item CRUD, Query, Scan, batches and, when DDBCACHE_SDK_TRANSACTIONS=1 (the engine
// supports them: moto), transactions and PartiQL. Every answer is checked, every read after a write
// must see the write, and repeated reads must be cache hits: the raw `x-ddbcache` response header
// (captured by a middleware) says `hit`, and `ddbcache_cache_hits_total` on the admin port goes up.
//
// Environment:
//   AWS_ENDPOINT_URL_DYNAMODB  the proxy (required: the suite never talks to real AWS)
//   DDBCACHE_ADMIN             the proxy's admin address; when unset (running straight against an
//                              engine while developing the suite) the cache checks are skipped
//   DDBCACHE_SDK_TRANSACTIONS  "1" to run the transaction and PartiQL tests
//
// Run by tests/sdk_clients.rs; by hand: node --test tests/sdk/js/
// The SDK packages live in scripts/upstream/node_modules (installed by scripts/setup.sh).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../../../scripts/upstream/package.json', import.meta.url));
const ddb = require('@aws-sdk/client-dynamodb');
const doc = require('@aws-sdk/lib-dynamodb');

const ENDPOINT = process.env.AWS_ENDPOINT_URL_DYNAMODB;
const ADMIN = process.env.DDBCACHE_ADMIN;
const TRANSACTIONS = process.env.DDBCACHE_SDK_TRANSACTIONS === '1';

if (!ENDPOINT) throw new Error('set AWS_ENDPOINT_URL_DYNAMODB to the ddbcache endpoint');
// Test credentials, unless the caller set others; the proxy re-signs with its own.
process.env.AWS_ACCESS_KEY_ID ??= 'test';
process.env.AWS_SECRET_ACCESS_KEY ??= 'test';
process.env.AWS_REGION ??= 'us-east-1';

const TABLE = `sdk_js_${randomUUID().slice(0, 10)}`;
const needsTransactions = {
  skip: TRANSACTIONS ? false : 'DDBCACHE_SDK_TRANSACTIONS=1 is set only for engines with transactions',
};

// ---------------------------------------------------------------------------------------------
// Clients, and what the cache said about the last response

const client = new ddb.DynamoDBClient({});
const docClient = doc.DynamoDBDocumentClient.from(client);

// The document client sends through `client`'s middleware stack, so this sees both.
let lastCacheHeader;
client.middlewareStack.add(
  (next) => async (args) => {
    const result = await next(args);
    lastCacheHeader = result.response?.headers?.['x-ddbcache'];
    return result;
  },
  { step: 'deserialize', name: 'ddbcacheHeader' },
);

async function send(command, via = client) {
  lastCacheHeader = undefined;
  return via.send(command);
}

function expectHeader(outcome) {
  if (ADMIN) assert.equal(lastCacheHeader, outcome, 'x-ddbcache header');
}

async function cacheHits(cache) {
  const answer = await fetch(`${ADMIN}/metrics`);
  assert.equal(answer.status, 200);
  const pattern = new RegExp(`^ddbcache_cache_hits_total\\{[^}]*cache="${cache}"[^}]*\\}\\s+(\\S+)$`, 'gm');
  let total = 0;
  for (const match of (await answer.text()).matchAll(pattern)) total += Number(match[1]);
  return total;
}

// Counts cache hits from now until `expect`; inert without DDBCACHE_ADMIN.
async function hitCounter(cache) {
  const start = ADMIN ? await cacheHits(cache) : 0;
  return {
    async expect(atLeast) {
      if (!ADMIN) return;
      const delta = (await cacheHits(cache)) - start;
      assert.ok(delta >= atLeast, `${cache} cache hits went up by ${delta}, expected at least ${atLeast}`);
    },
  };
}

const key = (pk, sk) => ({ pk: { S: pk }, sk: { S: sk } });
const getItem = (k, extra = {}) => send(new ddb.GetItemCommand({ TableName: TABLE, Key: k, ...extra }));
const putItem = (item) => send(new ddb.PutItemCommand({ TableName: TABLE, Item: item }));

// ---------------------------------------------------------------------------------------------
// Table lifecycle

before(async () => {
  const created = await send(
    new ddb.CreateTableCommand({
      TableName: TABLE,
      AttributeDefinitions: [
        { AttributeName: 'pk', AttributeType: 'S' },
        { AttributeName: 'sk', AttributeType: 'S' },
      ],
      KeySchema: [
        { AttributeName: 'pk', KeyType: 'HASH' },
        { AttributeName: 'sk', KeyType: 'RANGE' },
      ],
      BillingMode: 'PAY_PER_REQUEST',
    }),
  );
  assert.equal(created.TableDescription.TableName, TABLE);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const { Table } = await send(new ddb.DescribeTableCommand({ TableName: TABLE }));
    if (Table.TableStatus === 'ACTIVE') break;
    assert.ok(Date.now() < deadline, `table ${TABLE} did not become ACTIVE`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const names = [];
  for await (const page of ddb.paginateListTables({ client }, {})) names.push(...page.TableNames);
  assert.ok(names.includes(TABLE), 'ListTables shows the new table');
});

after(async () => {
  await send(new ddb.DeleteTableCommand({ TableName: TABLE }));
  client.destroy();
});

// ---------------------------------------------------------------------------------------------
// DynamoDBClient

test('repeated GetItem is a cache hit', async () => {
  const item = { ...key('user#1', 'profile'), name: { S: 'Ada' }, age: { N: '36' } };
  await putItem(item);
  const first = await getItem(key('user#1', 'profile'));
  assert.deepEqual(first.Item, item);
  expectHeader('miss');

  const hits = await hitCounter('item');
  const second = await getItem(key('user#1', 'profile'));
  assert.deepEqual(second.Item, item);
  expectHeader('hit');
  await hits.expect(1);
});

test('ConsistentRead bypasses the cache', async () => {
  await putItem({ ...key('user#2', 'profile'), name: { S: 'Grace' } });
  for (let i = 0; i < 2; i++) {
    const answer = await getItem(key('user#2', 'profile'), { ConsistentRead: true });
    assert.deepEqual(answer.Item.name, { S: 'Grace' });
    expectHeader('bypass');
  }
});

test('a missing item is answered without Item', async () => {
  for (let i = 0; i < 2; i++) {
    assert.equal((await getItem(key('nobody', 'profile'))).Item, undefined);
  }
});

test('a read after a write sees the write', async () => {
  const k = key('user#3', 'profile');
  await putItem({ ...k, visits: { N: '1' } });
  assert.deepEqual((await getItem(k)).Item.visits, { N: '1' });
  assert.deepEqual((await getItem(k)).Item.visits, { N: '1' }); // cached now

  const updated = await send(
    new ddb.UpdateItemCommand({
      TableName: TABLE,
      Key: k,
      UpdateExpression: 'SET visits = visits + :one, #s = :status',
      ExpressionAttributeNames: { '#s': 'status' },
      ExpressionAttributeValues: { ':one': { N: '1' }, ':status': { S: 'active' } },
      ReturnValues: 'ALL_NEW',
    }),
  );
  assert.deepEqual(updated.Attributes.visits, { N: '2' });
  const afterUpdate = (await getItem(k)).Item;
  assert.deepEqual(afterUpdate.visits, { N: '2' });
  assert.deepEqual(afterUpdate.status, { S: 'active' });

  await putItem({ ...k, visits: { N: '10' } });
  assert.deepEqual((await getItem(k)).Item, { ...k, visits: { N: '10' } });

  const deleted = await send(new ddb.DeleteItemCommand({ TableName: TABLE, Key: k, ReturnValues: 'ALL_OLD' }));
  assert.deepEqual(deleted.Attributes.visits, { N: '10' });
  assert.equal((await getItem(k)).Item, undefined);
});

test('Query and Scan are cached and see writes', async () => {
  for (const sk of ['order#1', 'order#2', 'order#3']) {
    await putItem({ ...key('cust#1', sk), amount: { N: sk.at(-1) } });
  }
  const query = () =>
    send(
      new ddb.QueryCommand({
        TableName: TABLE,
        KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
        ExpressionAttributeValues: { ':pk': { S: 'cust#1' }, ':prefix': { S: 'order#' } },
      }),
    );
  const sks = (answer) => answer.Items.map((item) => item.sk.S);

  const first = await query();
  assert.deepEqual(sks(first), ['order#1', 'order#2', 'order#3']);
  assert.equal(first.Count, 3);

  let hits = await hitCounter('query');
  const second = await query();
  assert.deepEqual(second.Items, first.Items);
  expectHeader('hit');
  await hits.expect(1);

  // A write invalidates the table's cached queries: the next Query sees the new item.
  await putItem({ ...key('cust#1', 'order#4'), amount: { N: '4' } });
  assert.deepEqual(sks(await query()), ['order#1', 'order#2', 'order#3', 'order#4']);

  const descending = await send(
    new ddb.QueryCommand({
      TableName: TABLE,
      KeyConditionExpression: 'pk = :pk',
      ExpressionAttributeValues: { ':pk': { S: 'cust#1' } },
      ScanIndexForward: false,
      Limit: 2,
    }),
  );
  assert.deepEqual(sks(descending), ['order#4', 'order#3']);
  assert.deepEqual(descending.LastEvaluatedKey, key('cust#1', 'order#3'));

  const scan = () =>
    send(
      new ddb.ScanCommand({
        TableName: TABLE,
        FilterExpression: 'pk = :pk AND amount >= :min',
        ExpressionAttributeValues: { ':pk': { S: 'cust#1' }, ':min': { N: '3' } },
      }),
    );
  const scanned = await scan();
  assert.deepEqual(sks(scanned).sort(), ['order#3', 'order#4']);
  hits = await hitCounter('query');
  const again = await scan();
  assert.deepEqual(again.Items, scanned.Items);
  expectHeader('hit');
  await hits.expect(1);

  await send(new ddb.DeleteItemCommand({ TableName: TABLE, Key: key('cust#1', 'order#4') }));
  assert.deepEqual(sks(await scan()), ['order#3']);
});

// BatchGetItem until no key is left unprocessed; returns the items sorted by sk.
async function batchGet(keys) {
  let items = [];
  let request = { [TABLE]: { Keys: keys } };
  while (Object.keys(request).length > 0) {
    const answer = await send(new ddb.BatchGetItemCommand({ RequestItems: request }));
    items = items.concat(answer.Responses[TABLE] ?? []);
    request = answer.UnprocessedKeys ?? {};
  }
  return items.sort((a, b) => a.sk.S.localeCompare(b.sk.S));
}

test('BatchWriteItem and BatchGetItem', async () => {
  const keys = [0, 1, 2, 3, 4].map((i) => key('batch', `item#${i}`));
  const written = await send(
    new ddb.BatchWriteItemCommand({
      RequestItems: { [TABLE]: keys.map((k, i) => ({ PutRequest: { Item: { ...k, n: { N: String(i) } } } })) },
    }),
  );
  assert.equal(Object.keys(written.UnprocessedItems ?? {}).length, 0);

  const first = await batchGet(keys);
  assert.deepEqual(first.map((item) => item.n.N), ['0', '1', '2', '3', '4']);

  const hits = await hitCounter('item');
  assert.deepEqual(await batchGet(keys), first);
  await hits.expect(keys.length);

  // Deletes and an overwrite through BatchWriteItem are seen by the next BatchGetItem.
  await send(
    new ddb.BatchWriteItemCommand({
      RequestItems: {
        [TABLE]: [
          { DeleteRequest: { Key: keys[0] } },
          { DeleteRequest: { Key: keys[1] } },
          { PutRequest: { Item: { ...keys[2], n: { N: '20' } } } },
        ],
      },
    }),
  );
  assert.deepEqual(
    (await batchGet(keys)).map((item) => [item.sk.S, item.n.N]),
    [
      ['item#2', '20'],
      ['item#3', '3'],
      ['item#4', '4'],
    ],
  );
});

// ---------------------------------------------------------------------------------------------
// DynamoDBDocumentClient

test('document client: CRUD, Query, Scan, batches', async () => {
  const dsend = (command) => send(command, docClient);
  const k = { pk: 'doc', sk: 'a' };

  await dsend(new doc.PutCommand({ TableName: TABLE, Item: { ...k, tags: new Set(['x', 'y']), price: 9.5 } }));
  const first = await dsend(new doc.GetCommand({ TableName: TABLE, Key: k }));
  assert.deepEqual(first.Item, { ...k, tags: new Set(['x', 'y']), price: 9.5 });
  const hits = await hitCounter('item');
  const second = await dsend(new doc.GetCommand({ TableName: TABLE, Key: k }));
  assert.deepEqual(second.Item, first.Item);
  expectHeader('hit');
  await hits.expect(1);

  const updated = await dsend(
    new doc.UpdateCommand({
      TableName: TABLE,
      Key: k,
      UpdateExpression: 'SET price = :p REMOVE tags',
      ExpressionAttributeValues: { ':p': 12 },
      ReturnValues: 'UPDATED_NEW',
    }),
  );
  assert.deepEqual(updated.Attributes, { price: 12 });
  assert.deepEqual((await dsend(new doc.GetCommand({ TableName: TABLE, Key: k }))).Item, { ...k, price: 12 });

  const written = await dsend(
    new doc.BatchWriteCommand({
      RequestItems: {
        [TABLE]: ['b', 'c', 'd'].map((sk, i) => ({ PutRequest: { Item: { pk: 'doc', sk, price: i + 1 } } })),
      },
    }),
  );
  assert.equal(Object.keys(written.UnprocessedItems ?? {}).length, 0);
  const batch = await dsend(
    new doc.BatchGetCommand({ RequestItems: { [TABLE]: { Keys: ['b', 'c', 'd'].map((sk) => ({ pk: 'doc', sk })) } } }),
  );
  assert.deepEqual(batch.Responses[TABLE].map((item) => item.price).sort(), [1, 2, 3]);

  const query = () =>
    dsend(
      new doc.QueryCommand({
        TableName: TABLE,
        KeyConditionExpression: 'pk = :pk AND sk BETWEEN :from AND :to',
        ExpressionAttributeValues: { ':pk': 'doc', ':from': 'b', ':to': 'd' },
      }),
    );
  const queried = await query();
  assert.deepEqual(queried.Items.map((item) => item.sk), ['b', 'c', 'd']);
  const queryHits = await hitCounter('query');
  assert.deepEqual((await query()).Items, queried.Items);
  expectHeader('hit');
  await queryHits.expect(1);

  const scanned = await dsend(
    new doc.ScanCommand({
      TableName: TABLE,
      FilterExpression: 'pk = :pk AND price > :min',
      ExpressionAttributeValues: { ':pk': 'doc', ':min': 2 },
    }),
  );
  assert.deepEqual(scanned.Items.map((item) => item.sk).sort(), ['a', 'd']);

  await dsend(new doc.DeleteCommand({ TableName: TABLE, Key: { pk: 'doc', sk: 'c' } }));
  assert.equal((await dsend(new doc.GetCommand({ TableName: TABLE, Key: { pk: 'doc', sk: 'c' } }))).Item, undefined);
  assert.deepEqual((await query()).Items.map((item) => item.sk), ['b', 'd']);
});

// ---------------------------------------------------------------------------------------------
// Transactions and PartiQL (pass through the proxy, but must invalidate what they write)

test('TransactWriteItems and TransactGetItems', needsTransactions, async () => {
  const [k1, k2, k3] = [key('tx', '1'), key('tx', '2'), key('tx', '3')];
  await putItem({ ...k2, balance: { N: '100' } });
  await putItem({ ...k3, doomed: { BOOL: true } });
  for (const k of [k1, k2, k3]) {
    // warm the cache with the values the transaction replaces
    await getItem(k);
    await getItem(k);
  }
  const withdraw = (amount) => ({
    Update: {
      TableName: TABLE,
      Key: k2,
      UpdateExpression: 'SET balance = balance - :x',
      ConditionExpression: 'balance >= :x',
      ExpressionAttributeValues: { ':x': { N: String(amount) } },
    },
  });

  await send(
    new ddb.TransactWriteItemsCommand({
      TransactItems: [
        { Put: { TableName: TABLE, Item: { ...k1, balance: { N: '50' } } } },
        withdraw(50),
        { Delete: { TableName: TABLE, Key: k3 } },
      ],
    }),
  );
  assert.deepEqual((await getItem(k1)).Item.balance, { N: '50' });
  assert.deepEqual((await getItem(k2)).Item.balance, { N: '50' });
  assert.equal((await getItem(k3)).Item, undefined);

  const got = await send(
    new ddb.TransactGetItemsCommand({ TransactItems: [k1, k2, k3].map((k) => ({ Get: { TableName: TABLE, Key: k } })) }),
  );
  assert.deepEqual(
    got.Responses.map((response) => response.Item?.balance),
    [{ N: '50' }, { N: '50' }, undefined],
  );

  await assert.rejects(
    send(new ddb.TransactWriteItemsCommand({ TransactItems: [withdraw(500)] })),
    (error) => error.name === 'TransactionCanceledException',
  );
  assert.deepEqual((await getItem(k2)).Item.balance, { N: '50' });
});

test('ExecuteStatement with Parameters', needsTransactions, async () => {
  const k = key('partiql', '1');
  const statement = (Statement, Parameters) => send(new ddb.ExecuteStatementCommand({ Statement, Parameters }));

  // Literals in INSERT and DELETE, parameters elsewhere: moto's PartiQL parser takes `?` only
  // in SELECT and UPDATE.
  await statement(`INSERT INTO "${TABLE}" VALUE {'pk': 'partiql', 'sk': '1', 'color': 'red'}`);
  // Cache the item, then change it with PartiQL: the next GetItem must see the change.
  assert.deepEqual((await getItem(k)).Item.color, { S: 'red' });
  assert.deepEqual((await getItem(k)).Item.color, { S: 'red' });

  const selected = await statement(`SELECT * FROM "${TABLE}" WHERE pk = ? AND sk = ?`, [{ S: 'partiql' }, { S: '1' }]);
  assert.deepEqual(selected.Items, [{ ...k, color: { S: 'red' } }]);

  await statement(`UPDATE "${TABLE}" SET color = ? WHERE pk = ? AND sk = ?`, [
    { S: 'blue' },
    { S: 'partiql' },
    { S: '1' },
  ]);
  assert.deepEqual((await getItem(k)).Item.color, { S: 'blue' });

  await statement(`DELETE FROM "${TABLE}" WHERE pk = 'partiql' AND sk = '1'`);
  assert.equal((await getItem(k)).Item, undefined);
});
