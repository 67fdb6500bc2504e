// A Sparkplug B edge node built on Eclipse Tahu's reference client (sparkplug-client), driven by
// a JSON scenario, for Tiangong's interoperability tests: the platform must ingest what a node
// it did not write publishes, and a node it did not write must understand its commands.
//
// Usage: node tahu_node.mjs '<scenario JSON>'     (or the scenario on stdin)
//
// Scenario (only broker, groupId and edgeNode are required):
//   broker         {url, username, password, clientId}
//   groupId        Sparkplug group id (the platform's site id)
//   edgeNode       edge node id (a registered gateway; its MQTT user name)
//   nodeMetrics    NBIRTH metrics besides bdSeq and Node Control/Rebirth, which are always sent
//   devices        {deviceId: [{name, type, value, timestamp?, alias?}]}: one DBIRTH each, in
//                  this order; data and commands may then address a metric by alias alone
//   births         publish NBIRTH and the DBIRTHs on connect (default true; false misbehaves,
//                  as a node restarted without births)
//   data           [{device?, timestamp?, compress?, metrics: [{name, type, value}]}]: NDATA
//                  (no device) or DDATA messages published once after connecting (and the
//                  births); compress ("DEFLATE" or "GZIP") uses Tahu's payload compression
//   deviceDeaths   [deviceId]: DDEATHs published after the data
//   answerRebirth  answer NCMD Node Control/Rebirth with the births (default true)
//   dataAfterRebirth  messages like `data`, published after each answered rebirth
//   applyCommands  report each DCMD's metrics back as DDATA, as a device that applied them
//   until          {ncmd, dcmd, rebirths}: counts to receive before the scenario is done
//   afterDone      "disconnect" (NDEATH, then DISCONNECT; the default) or "hold" (stay
//                  connected until killed: the broker then publishes the NDEATH Will)
//   timeoutMs      give up (exit 3) when not done and closed by then (default 15000)
//
// Output: one JSON line per event on stdout: connected, published {type, device, seq},
// ncmd {metrics}, dcmd {device, metrics}, rebirth, done, closed; then exit 0. On an error an
// "error" line {message}, the message on stderr too, and a non-zero exit (1 error, 2 bad
// scenario, 3 timeout).

import { readFileSync } from "node:fs";
import sparkplug from "sparkplug-client";

const REBIRTH = "Node Control/Rebirth";

function emit(event, fields = {}) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

function fail(message, code = 1) {
  emit("error", { message });
  process.stderr.write(`tahu_node: ${message}\n`);
  process.exit(code);
}

function readScenario() {
  const text = process.argv[2] ?? readFileSync(0, "utf8");
  let scenario;
  try {
    scenario = JSON.parse(text);
  } catch (error) {
    fail(`the scenario is not JSON: ${error.message}`, 2);
  }
  for (const key of ["broker", "groupId", "edgeNode"]) {
    if (scenario[key] === undefined) fail(`the scenario lacks "${key}"`, 2);
  }
  for (const key of ["url", "username", "clientId"]) {
    if (scenario.broker[key] === undefined) fail(`the scenario lacks "broker.${key}"`, 2);
  }
  const afterDone = scenario.afterDone ?? "disconnect";
  if (!["disconnect", "hold"].includes(afterDone)) {
    fail(`afterDone must be "disconnect" or "hold", not ${JSON.stringify(afterDone)}`, 2);
  }
  return {
    nodeMetrics: [],
    devices: {},
    births: true,
    data: [],
    deviceDeaths: [],
    answerRebirth: true,
    dataAfterRebirth: [],
    applyCommands: false,
    until: {},
    timeoutMs: 15000,
    ...scenario,
    afterDone,
  };
}

// Decoded values as JSON can carry them: 64-bit integers arrive as Long objects, bytes as arrays.
function plain(value) {
  if (value !== null && typeof value === "object") {
    if (typeof value.toNumber === "function") {
      const number = value.toNumber();
      return Number.isSafeInteger(number) ? number : value.toString();
    }
    if (value instanceof Uint8Array) return Buffer.from(value).toString("base64");
  }
  return value;
}

function describe(metrics = []) {
  return metrics.map((m) => ({
    name: m.name ?? null,
    alias: plain(m.alias ?? null),
    type: m.type,
    value: plain(m.value),
  }));
}

const scenario = readScenario();
const received = { ncmd: 0, dcmd: 0, rebirths: 0 };
// The current value of every metric, so that a rebirth repeats them as the specification asks.
const current = {
  node: new Map(scenario.nodeMetrics.map((m) => [m.name, m])),
  devices: new Map(
    Object.entries(scenario.devices).map(([id, metrics]) => [
      id,
      new Map(metrics.map((m) => [m.name, m])),
    ]),
  ),
};
let done = false;
let stopping = false;

const timer = setTimeout(() => {
  const waiting = JSON.stringify({ until: scenario.until, received });
  fail(`timed out after ${scenario.timeoutMs} ms (done: ${done}; ${waiting})`, 3);
}, scenario.timeoutMs);

const client = sparkplug.newClient({
  serverUrl: scenario.broker.url,
  username: scenario.broker.username,
  password: scenario.broker.password ?? "",
  groupId: scenario.groupId,
  edgeNode: scenario.edgeNode,
  clientId: scenario.broker.clientId,
  version: "spBv1.0",
  publishDeath: scenario.afterDone === "disconnect",
  // One connection per run: a reconnect would publish new births the test did not ask for.
  mqttOptions: { reconnectPeriod: 0 },
});

function published(type, device, payload) {
  emit("published", { type, device: device ?? null, seq: payload.seq });
}

function publishBirths() {
  const now = Date.now();
  const nodeMetrics = [...current.node.values(), { name: REBIRTH, type: "Boolean", value: false }];
  const nbirth = { timestamp: now, metrics: nodeMetrics.map((m) => ({ ...m })) };
  client.publishNodeBirth(nbirth);
  published("NBIRTH", null, nbirth);
  for (const [device, metrics] of current.devices) {
    const dbirth = { timestamp: now, metrics: [...metrics.values()].map((m) => ({ ...m })) };
    client.publishDeviceBirth(device, dbirth);
    published("DBIRTH", device, dbirth);
  }
}

function publishData(message) {
  const timestamp = message.timestamp ?? Date.now();
  const payload = { timestamp, metrics: message.metrics.map((m) => ({ ...m })) };
  // A later birth repeats each value with the time it was sampled.
  const known = message.device === undefined ? current.node : current.devices.get(message.device);
  for (const metric of message.metrics) {
    const name = metric.name ?? [...(known ?? [])].find(([, m]) => m.alias === metric.alias)?.[0];
    if (name !== undefined) known.set(name, { ...known.get(name), timestamp, ...metric });
  }
  // Tahu's own extension: the payload deflated or gzipped into another payload's body.
  const options = message.compress ? { compress: true, algorithm: message.compress } : undefined;
  if (message.device === undefined) {
    client.publishNodeData(payload, options);
    published("NDATA", null, payload);
  } else {
    client.publishDeviceData(message.device, payload, options);
    published("DDATA", message.device, payload);
  }
}

function finishWhenDone() {
  if (done) return;
  const reached = Object.entries(scenario.until).every(([kind, count]) => received[kind] >= count);
  if (!reached) return;
  done = true;
  emit("done", { received });
  if (scenario.afterDone === "hold") {
    clearTimeout(timer); // the timeout is for reaching "done"; now held until the test kills it
    return;
  }
  stopping = true;
  client.stop(); // NDEATH first (publishDeath), then DISCONNECT
}

client.on("error", (error) => fail(`MQTT error: ${error.message}`));

client.on("close", () => {
  if (!stopping) fail("the MQTT connection closed before the scenario was done");
  clearTimeout(timer);
  emit("closed");
  process.exit(0);
});

client.on("connect", () => emit("connected"));

client.on("birth", () => {
  if (scenario.births) publishBirths();
  for (const message of scenario.data) publishData(message);
  for (const device of scenario.deviceDeaths) {
    const ddeath = { timestamp: Date.now(), metrics: [] };
    client.publishDeviceDeath(device, ddeath);
    published("DDEATH", device, ddeath);
  }
  finishWhenDone();
});

client.on("ncmd", (payload) => {
  received.ncmd += 1;
  emit("ncmd", { metrics: describe(payload.metrics) });
  const rebirth = (payload.metrics ?? []).some((m) => m.name === REBIRTH && m.value === true);
  if (rebirth && scenario.answerRebirth) {
    received.rebirths += 1;
    emit("rebirth");
    publishBirths();
    for (const message of scenario.dataAfterRebirth) publishData(message);
  }
  finishWhenDone();
});

client.on("dcmd", (device, payload) => {
  received.dcmd += 1;
  emit("dcmd", { device, metrics: describe(payload.metrics) });
  if (scenario.applyCommands) {
    const metrics = (payload.metrics ?? []).map(({ name, alias, type, value }) => ({
      name,
      alias,
      type,
      value,
    }));
    publishData({ device, metrics });
  }
  finishWhenDone();
});

process.on("uncaughtException", (error) => fail(`uncaught: ${error.stack ?? error}`));
