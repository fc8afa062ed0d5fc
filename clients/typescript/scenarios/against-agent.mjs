// The client against a real agent, run by plumb's integration tests (tests/it/clients.rs), which
// start the agent, hand this program a replica's variables and change the repository when it
// asks: each step is a file in PLUMB_TEST_DIR.
import assert from "node:assert/strict";
import { copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { ConfigurationManager } from "../dist/index.js";

const dir = process.env.PLUMB_TEST_DIR;

/** Waits until `done()` holds (60 s at most). */
async function until(done, what) {
  const deadline = Date.now() + 60000;
  while (!done()) {
    assert.ok(Date.now() < deadline, `waited in vain for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Says `step` is reached, then waits for the test's `answer`; its content. */
async function handshake(step, answer) {
  writeFileSync(join(dir, step), "");
  await until(() => existsSync(join(dir, answer)), answer);
  return readFileSync(join(dir, answer), "utf8").trim();
}

test("a service reads its configuration from the agent, follows it, and keeps it when the agent is gone", async () => {
  assert.ok(dir, "PLUMB_TEST_DIR names the steps' folder");
  const manager = new ConfigurationManager({ retryMs: 100 });
  const changes = [];
  manager.on("configurationChanged", (change) => changes.push(change));
  await manager.initialize();
  // Read from the agent, with the decrypted value the service's own token is given.
  assert.equal(manager.getStatus().source, "agent");
  assert.equal(manager.getStatus().commit, process.env.PLUMB_TEST_FIRST);
  assert.equal(manager.getConfiguration("database.pool"), 10);
  assert.equal(manager.getConfiguration("password"), "hunter2-the-first");
  assert.deepEqual(manager.getConfiguration("hosts"), ["a", "b"]);
  await until(() => manager.getStatus().connected, "the event stream");

  // A commit changes the pool, adds a flag, drops a list and changes the password.
  const second = await handshake("ready-for-change", "changed");
  await until(() => changes.length >= 4, "four changes");
  assert.deepEqual(
    changes.map(({ path, oldValue, newValue, commit, signer }) => ({ path, oldValue, newValue, commit, signer })),
    [
      { path: "database.pool", oldValue: 10, newValue: 20, commit: second, signer: "alice" },
      { path: "feature", oldValue: null, newValue: { newFeature: true }, commit: second, signer: "alice" },
      { path: "hosts", oldValue: ["a", "b"], newValue: null, commit: second, signer: "alice" },
      { path: "password", oldValue: "hunter2-the-first", newValue: "hunter2-the-second", commit: second, signer: "alice" },
    ],
  );
  assert.equal(manager.getConfiguration("feature.newFeature"), true);
  assert.equal(manager.getStatus().commit, second);
  const copy = join(dir, "config.json");
  copyFileSync(process.env.PLUMB_CONFIG, copy);

  // The agent stops: the service keeps its configuration, and another starts from the file.
  await handshake("ready-for-stop", "stopped");
  await until(() => !manager.getStatus().connected, "the stream to end");
  await until(() => manager.getStatus().agentError !== null, "a failed reconnection");
  assert.equal(manager.getConfiguration("database.pool"), 20);
  const restarted = new ConfigurationManager({ file: copy, signal: null, watchFile: false });
  await restarted.initialize();
  assert.equal(restarted.getStatus().source, "file");
  assert.match(restarted.getStatus().agentError, /the agent at http/);
  assert.equal(restarted.getConfiguration("password"), "hunter2-the-second");
  assert.equal(restarted.getConfiguration("database.pool"), 20);
  await restarted.close();
  await manager.close();
});
