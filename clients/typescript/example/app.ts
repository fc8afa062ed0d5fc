// The example service of plumb's TypeScript client: an HTTP server whose configuration comes
// from the agent (with the token plumb gives it) and changes while it runs.
//
// It listens on $PORT (at $HOST, loopback by default) and answers:
// - `/` with who it is: its service, release (`$EXAMPLE_RELEASE`) and slot;
// - `/health` with 200 once its configuration is read;
// - `/config` with its configuration now (decrypted values included: do not do this in a real
//   service), and where it comes from;
// - `/changes` with every change it was told, in order.

import { createServer } from "node:http";

import { ConfigurationManager, type ConfigurationChange } from "@plumb/config";

const configurationManager = new ConfigurationManager();
const changes: ConfigurationChange[] = [];
configurationManager.on("configurationChanged", (change) => {
  changes.push(change);
  console.log(`configuration changed: ${change.path} (${change.commit?.slice(0, 7) ?? "file"})`);
});
await configurationManager.initialize();
const status = configurationManager.getStatus();
console.log(`configuration read from the ${status.source} at ${status.commit ?? "the file"}`);

const identity = [
  process.env.PLUMB_SERVICE ?? "example",
  process.env.EXAMPLE_RELEASE ?? process.env.PLUMB_VERSION ?? "",
  process.env.PLUMB_SLOT ?? "",
].join(" ");

const server = createServer((request, response) => {
  const send = (type: string, text: string) => {
    response.writeHead(200, { "content-type": type, "content-length": Buffer.byteLength(text) });
    response.end(text);
  };
  const json = (value: unknown) => send("application/json", `${JSON.stringify(value)}\n`);
  switch (request.url) {
    case "/":
      send("text/plain", `${identity}\n`);
      break;
    case "/health":
      send("text/plain", "ok\n");
      break;
    case "/config":
      json({ status: configurationManager.getStatus(), value: configurationManager.getConfiguration() });
      break;
    case "/changes":
      json(changes);
      break;
    default:
      response.writeHead(404).end();
  }
});
server.listen(Number(process.env.PORT), process.env.HOST ?? "127.0.0.1", () => {
  console.log(`listening on ${process.env.HOST ?? "127.0.0.1"}:${process.env.PORT}`);
});
process.on("SIGTERM", () => {
  server.close();
  void configurationManager.close();
});
