import assert from "node:assert/strict";
import { test } from "node:test";

import { EventParser } from "../dist/events.js";
import { at, differences } from "../dist/values.js";

test("a part is found by its dotted path", () => {
  const value = { database: { pool: 10, hosts: ["a", "b"] } };
  assert.equal(at(value, "database.pool"), 10);
  assert.equal(at(value, "database.hosts.1"), "b");
  assert.deepEqual(at(value, ""), value);
  assert.equal(at(value, "database.port"), undefined);
  assert.equal(at(value, "database.pool.size"), undefined);
  assert.equal(at(value, "database.hosts.x"), undefined);
  assert.equal(at(value, "toString"), undefined);
});

test("differences are leaves or whole subtrees, keys in order, as the agent tells them", () => {
  const before = { database: { pool: 10, password: "s1" }, feature: { a: true }, gone: 1 };
  const after = { database: { pool: 20, password: "s2" }, feature: { a: true }, added: { x: 1 } };
  assert.deepEqual(differences(before, after), [
    { path: "added", oldValue: null, newValue: { x: 1 } },
    { path: "database.password", oldValue: "s1", newValue: "s2" },
    { path: "database.pool", oldValue: 10, newValue: 20 },
    { path: "gone", oldValue: 1, newValue: null },
  ]);
  assert.deepEqual(differences({ hosts: ["a"] }, { hosts: ["a", "b"] }), [
    { path: "hosts", oldValue: ["a"], newValue: ["a", "b"] },
  ]);
  assert.deepEqual(differences({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }] }), []);
});

test("events are cut from chunks however the stream splits them", () => {
  const parser = new EventParser();
  const text =
    'retry: 2000\n\n: keep-alive\n\nid: 7\nevent: configurationChanged\ndata: {"path":"a"}\n\nid: 8\r\nevent: configurationChanged\r\ndata: {"path":\r\ndata: "b"}\r\n\r\n';
  const events = [];
  for (let i = 0; i < text.length; i += 5) {
    events.push(...parser.push(text.slice(i, i + 5)));
  }
  assert.equal(parser.retry, 2000);
  assert.deepEqual(events, [
    { id: "7", event: "configurationChanged", data: '{"path":"a"}' },
    { id: "8", event: "configurationChanged", data: '{"path":\n"b"}' },
  ]);
});
