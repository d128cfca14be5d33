// aws_worker.js - seed 000's path, hand-written: a Node worker that reads
// Stele's SSE feed (GET /subscribe/all?from=end&type=T) and writes each
// event to Kinesis (PutRecords, up to 500 of what has arrived per call, one
// call at a time, partition key = the event's stream) or to a DynamoDB read
// model (one UpdateItem per event: ADD TransactionCount 1, Balance amount),
// with the official @aws-sdk clients (tests/aws/node_modules). Prints
// {"done": N} after each write. Used by bench/bench_aws.py.
//
//   node aws_worker.js STELE_PORT kinesis|dynamodb ENDPOINT STREAM_OR_TABLE TYPE
"use strict";
const http = require("http");
const path = require("path");
const mods = path.join(__dirname, "..", "tests", "aws", "node_modules");
const { KinesisClient, PutRecordsCommand } = require(path.join(mods, "@aws-sdk", "client-kinesis"));
const { DynamoDBClient, UpdateItemCommand } = require(path.join(mods, "@aws-sdk", "client-dynamodb"));

const [port, mode, endpoint, name, type] = process.argv.slice(2);
const { NodeHttpHandler } = require(path.join(mods, "@smithy", "node-http-handler"));
// HTTP/1.1 with keep-alive (the Kinesis client's default is HTTP/2, which
// kinesalite does not speak).
const cfg = { endpoint, region: process.env.AWS_REGION || "us-east-1",
              requestHandler: new NodeHttpHandler({ httpAgent: new http.Agent({ keepAlive: true }) }) };
const kin = mode === "kinesis" ? new KinesisClient(cfg) : null;
const ddb = mode === "dynamodb" ? new DynamoDBClient(cfg) : null;
const queue = [];
let busy = false, done = 0;

async function drain() {
  if (busy) return;
  busy = true;
  while (queue.length) {
    if (kin) {
      const batch = queue.splice(0, 500);
      let recs = batch.map((e) => ({ Data: Buffer.from(JSON.stringify(e)), PartitionKey: e.stream }));
      while (recs.length) {
        const r = await kin.send(new PutRecordsCommand({ StreamName: name, Records: recs }));
        recs = recs.filter((_, i) => r.Records[i].ErrorCode);
      }
      done += batch.length;
    } else {
      const e = queue.shift();
      await ddb.send(new UpdateItemCommand({
        TableName: name,
        Key: { AccountId: { S: e.data.accountId } },
        UpdateExpression: "ADD TransactionCount :one, Balance :amount",
        ExpressionAttributeValues: { ":one": { N: "1" }, ":amount": { N: String(e.data.amount) } },
      }));
      done++;
    }
    process.stdout.write(JSON.stringify({ done }) + "\n");
  }
  busy = false;
}

const req = http.get({ host: "127.0.0.1", port, path: `/subscribe/all?from=end&type=${encodeURIComponent(type)}` }, (res) => {
  let buf = "";
  res.setEncoding("utf8");
  res.on("data", (chunk) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const msg = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (/^event:/m.test(msg)) continue; // caught-up, checkpoint ...
      const data = msg.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) queue.push(JSON.parse(data));
    }
    drain().catch((err) => { console.error(err); process.exit(1); });
  });
});
req.on("response", () => process.stdout.write(JSON.stringify({ ready: true }) + "\n"));
req.on("error", (err) => { console.error(err); process.exit(1); });
