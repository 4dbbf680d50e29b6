// toxiproxy's own Node client (toxiproxy-node-client, unchanged) driving
// echoapp-proxy; every effect is measured on a real socket and printed as
// one JSON object for tests/proxy/test_clients.py to check.
// Usage: node drive.js API_URL ECHO_HOST:PORT WEB_HOST:PORT UDP_HOST:PORT
"use strict";
const dgram = require("dgram");
const net = require("net");
const { Toxiproxy } = require("toxiproxy-node-client");

const [api, echo, web, udp] = process.argv.slice(2);

// One datagram to a UDP proxy: every reply that comes within half a second.
function ask(address, payload) {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
  return new Promise((resolve) => {
    const socket = dgram.createSocket("udp4");
    const replies = [];
    socket.on("message", (message) => replies.push(message.toString("latin1")));
    socket.on("error", () => {});
    socket.send(payload, port, host);
    setTimeout(() => { socket.close(); resolve(replies); }, 500);
  });
}

function exchange(address, payload) {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
  return new Promise((resolve) => {
    const chunks = [];
    const socket = net.connect({ host, port }, () => socket.end(payload));
    socket.setTimeout(20000, () => socket.destroy(new Error("timeout")));
    socket.on("data", (data) => chunks.push(data));
    socket.on("error", (error) => resolve(error.code === "ECONNREFUSED" ? "refused" : error.code === "ECONNRESET" ? "reset" : String(error)));
    socket.on("close", () => resolve(Buffer.concat(chunks).toString("latin1")));
  });
}

async function main() {
  const toxiproxy = new Toxiproxy(api);
  const seen = {};
  seen.version = await toxiproxy.getVersion();
  const proxy = await toxiproxy.createProxy({ name: "node_echo", listen: "127.0.0.1:0", upstream: echo });
  seen.plain = await exchange(proxy.listen, "hello");
  const limit = await proxy.addToxic({ type: "limit_data", stream: "downstream", toxicity: 1, attributes: { bytes: 2 } });
  seen.limited = await exchange(proxy.listen, "hello");
  await limit.update({ toxicity: 1, attributes: { bytes: 4 } });
  seen.updated = await exchange(proxy.listen, "hello");
  await limit.remove();
  seen.removed = await exchange(proxy.listen, "hello");
  await proxy.update({ enabled: false, listen: proxy.listen, upstream: proxy.upstream });
  seen.disabled = await exchange(proxy.listen, "hello");
  await proxy.update({ enabled: true, listen: proxy.listen, upstream: proxy.upstream });
  seen.enabled = await exchange(proxy.listen, "hello");
  await proxy.addToxic({ type: "reset_peer", stream: "upstream", toxicity: 1, attributes: { timeout: 0 } });
  seen.reset_peer = await exchange(proxy.listen, "hello");
  await toxiproxy.reset();
  seen.after_reset = await exchange(proxy.listen, "hello");
  const front = await toxiproxy.createProxy({ name: "node_web", listen: "127.0.0.1:0", upstream: web });
  const request = "GET /page.txt HTTP/1.0\r\nHost: x\r\n\r\n";
  seen.web = (await exchange(front.listen, request)).split("\r\n")[0];
  await front.addToxic({ type: "limit_data", stream: "downstream", toxicity: 1, attributes: { bytes: 12 } });
  seen.web_limited = await exchange(front.listen, request);
  const datagrams = await toxiproxy.createProxy({ name: "node_udp", listen: "udp:127.0.0.1:0", upstream: `udp:${udp}` });
  seen.udp = await ask(datagrams.listen, "Ned");
  await datagrams.addToxic({ type: "echoapp", stream: "downstream", toxicity: 1, attributes: { duplicate: 1 } });
  seen.udp_duplicated = await ask(datagrams.listen, "Ned");
  seen.names = Object.keys(await toxiproxy.getAll()).sort();
  await proxy.remove();
  await front.remove();
  await datagrams.remove();
  seen.names_after = Object.keys(await toxiproxy.getAll()).sort();
  process.stdout.write(JSON.stringify(seen) + "\n");
}

main().catch((error) => {
  process.stderr.write(`drive.js: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
