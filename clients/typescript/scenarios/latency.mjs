// The client as plumb's configuration benchmark (benches/app_config.rs) runs it: subscribed with
// a replica's variables, it prints "ready" once its stream is open, then one line per change:
// the change and when it was told (milliseconds since the epoch). It ends with its input.
import { ConfigurationManager } from "../dist/index.js";

const manager = new ConfigurationManager({ retryMs: 100, signal: null, watchFile: false });
manager.on("configurationChanged", (change) => {
  const at = performance.timeOrigin + performance.now();
  process.stdout.write(`${JSON.stringify({ path: change.path, value: change.newValue, at })}\n`);
});
await manager.initialize();
while (!manager.getStatus().connected) {
  await new Promise((resolve) => setTimeout(resolve, 5));
}
process.stdout.write("ready\n");
process.stdin.resume();
process.stdin.on("end", async () => {
  await manager.close();
  process.exit(0);
});
