// ddb_seed.js - seed 000's own write path, hand-written with the official
// @aws-sdk/client-dynamodb (tests/aws/node_modules), for bench/run_ddb.sh:
// a table keyed (aggregateId S, version N); each client owns one aggregate
// and appends with a conditional PutItem (attribute_not_exists(version):
// optimistic concurrency) or, with BATCH > 1, a TransactWriteItems of BATCH
// conditional Puts (seed 000's atomic batch append, at most 100). CLIENTS
// run concurrently in this one process (each with one request in flight).
// ReturnConsumedCapacity TOTAL: the capacity units are summed.
//
//   node ddb_seed.js ENDPOINT TABLE CLIENTS BATCH SECONDS WARMUP
// prints one line: seed clients=.. batch=.. events_per_s=.. cu_per_event=.. errors=..
"use strict";
const http = require("http");
const path = require("path");
const mods = path.join(__dirname, "..", "tests", "aws", "node_modules");
const ddbmod = require(path.join(mods, "@aws-sdk", "client-dynamodb"));
const { NodeHttpHandler } = require(path.join(mods, "@smithy", "node-http-handler"));
const { DynamoDBClient, PutItemCommand, TransactWriteItemsCommand, CreateTableCommand } = ddbmod;

const [endpoint, table, clientsS, batchS, secondsS, warmupS] = process.argv.slice(2);
const clients = +clientsS, batch = +batchS, seconds = +secondsS, warmup = +warmupS;
const db = new DynamoDBClient({
  endpoint, region: process.env.AWS_REGION || "us-east-1",
  requestHandler: new NodeHttpHandler({ httpAgent: new http.Agent({ keepAlive: true, maxSockets: clients }) }),
});
const data = JSON.stringify({ amount: 42, note: "x".repeat(60) });

function item(agg, version) {
  return {
    aggregateId: { S: agg }, version: { N: String(version) }, eventType: { S: "Deposited" },
    data: { S: data }, timestamp: { S: new Date().toISOString() },
  };
}

async function main() {
  try {
    await db.send(new CreateTableCommand({
      TableName: table, BillingMode: "PAY_PER_REQUEST",
      AttributeDefinitions: [{ AttributeName: "aggregateId", AttributeType: "S" },
                             { AttributeName: "version", AttributeType: "N" }],
      KeySchema: [{ AttributeName: "aggregateId", KeyType: "HASH" }, { AttributeName: "version", KeyType: "RANGE" }],
    }));
  } catch (e) {
    if (e.name !== "ResourceInUseException") throw e;
  }
  let counting = false, stop = false, events = 0, cu = 0, errors = 0;
  const cond = "attribute_not_exists(version)";
  async function client(k) {
    const agg = `seed-${process.pid}-${clients}x${batch}-${k}`;
    let v = 1;
    while (!stop) {
      try {
        let r;
        if (batch === 1) {
          r = await db.send(new PutItemCommand({ TableName: table, Item: item(agg, v), ConditionExpression: cond,
                                                ReturnConsumedCapacity: "TOTAL" }));
        } else {
          const items = [];
          for (let i = 0; i < batch; i++)
            items.push({ Put: { TableName: table, Item: item(agg, v + i), ConditionExpression: cond } });
          r = await db.send(new TransactWriteItemsCommand({ TransactItems: items, ReturnConsumedCapacity: "TOTAL" }));
        }
        v += batch;
        if (counting) {
          events += batch;
          const c = r.ConsumedCapacity;
          cu += Array.isArray(c) ? c.reduce((a, x) => a + (x.CapacityUnits || 0), 0) : (c ? c.CapacityUnits || 0 : 0);
        }
      } catch (e) {
        if (counting) errors++;
      }
    }
  }
  const all = [];
  for (let k = 0; k < clients; k++) all.push(client(k));
  await new Promise((r) => setTimeout(r, warmup * 1000));
  counting = true;
  const t0 = Date.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  counting = false;
  const dt = (Date.now() - t0) / 1000;
  const ev = events, c = cu;
  stop = true;
  await Promise.all(all);
  console.log(`seed clients=${clients} batch=${batch} events_per_s=${(ev / dt).toFixed(0)} ` +
              `cu_per_event=${ev ? (c / ev).toFixed(2) : "n/a"} events=${ev} errors=${errors}`);
  db.destroy();
}
main().catch((e) => { console.error(e); process.exit(1); });
