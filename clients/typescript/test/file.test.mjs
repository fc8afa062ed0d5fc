// The client with no agent reachable: it starts from the file plumb writes and follows it.
import assert from "node:assert/strict";
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { ConfigurationManager } from "../dist/index.js";

/** A directory of its own for the test `t`, removed when it ends. */
function scratch(t) {
  const dir = mkdtempSync(join(tmpdir(), "plumb-config-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** An address nothing listens on. */
async function closedPort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Writes `value` to `file` as plumb does: whole, then renamed over it. */
function replace(file, value) {
  writeFileSync(`${file}.tmp`, JSON.stringify(value));
  renameSync(`${file}.tmp`, file);
}

/** Waits until `done()` holds (10 s at most). */
async function until(done) {
  const deadline = Date.now() + 10000;
  while (!done()) {
    assert.ok(Date.now() < deadline, "waited in vain");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The next `count` changes `manager` tells. */
function next(manager, count) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const timer = setTimeout(() => reject(new Error(`waited in vain; seen ${JSON.stringify(seen)}`)), 10000);
    manager.on("configurationChanged", (change) => {
      seen.push(change);
      if (seen.length === count) {
        clearTimeout(timer);
        resolve(seen);
      }
    });
  });
}

test("with no agent it starts from the file and follows its changes", async (t) => {
  const dir = scratch(t);
  const file = join(dir, "config.json");
  replace(file, { database: { pool: 10 }, features: { newTimeline: false } });
  const url = `http://127.0.0.1:${await closedPort()}/api/v1/environments/dev/services/web/config`;
  const manager = new ConfigurationManager({ url, token: "plumbcfg.x.y.z", file, watchFile: false, retryMs: 50 });
  await manager.initialize();
  assert.equal(manager.getConfiguration("database.pool"), 10);
  const status = manager.getStatus();
  assert.equal(status.source, "file");
  assert.equal(status.connected, false);
  assert.match(status.agentError, /the agent at http:\/\/127\.0\.0\.1/);
  assert.equal(status.fileError, null);

  // A signal says the file changed: each change is told, without a commit.
  const told = next(manager, 2);
  replace(file, { database: { pool: 20 }, features: { newTimeline: true } });
  process.kill(process.pid, "SIGHUP");
  assert.deepEqual(await told, [
    { path: "database.pool", oldValue: 10, newValue: 20, commit: null, signer: null },
    { path: "features.newTimeline", oldValue: false, newValue: true, commit: null, signer: null },
  ]);
  assert.equal(manager.getConfiguration("features.newTimeline"), true);

  // A file that is not JSON leaves the last configuration in place.
  writeFileSync(file, "{ half");
  process.kill(process.pid, "SIGHUP");
  await until(() => manager.getStatus().fileError !== null);
  assert.match(manager.getStatus().fileError, /not JSON/);
  assert.equal(manager.getConfiguration("database.pool"), 20);
  await manager.close();
});

test("a watched file is followed without a signal", async (t) => {
  const dir = scratch(t);
  const file = join(dir, "config.json");
  writeFileSync(file, JSON.stringify({ level: "info" }));
  const manager = new ConfigurationManager({ file, signal: null });
  await manager.initialize();
  const told = next(manager, 1);
  writeFileSync(file, JSON.stringify({ level: "debug" }));
  assert.deepEqual(await told, [{ path: "level", oldValue: "info", newValue: "debug", commit: null, signer: null }]);
  await manager.close();
});

test("with neither an agent nor a file it says why", async (t) => {
  const url = `http://127.0.0.1:${await closedPort()}/config`;
  const manager = new ConfigurationManager({ url, file: "/nonexistent/config.json", signal: null });
  await assert.rejects(manager.initialize(), (e) => {
    assert.match(e.message, /the agent at http:\/\/127\.0\.0\.1:\d+\/config: .*; the file \/nonexistent\/config\.json: ENOENT/);
    return true;
  });
  const yaml = join(scratch(t), "config.yaml");
  writeFileSync(yaml, "level: info\n");
  await assert.rejects(new ConfigurationManager({ file: yaml, signal: null }).initialize(), /config\.format: json/);
});
