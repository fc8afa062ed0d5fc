// A service's configuration as plumb delivers it: read from the agent's API and followed live
// over its event stream, with the file plumb writes (`PLUMB_CONFIG`) as the fallback, so a
// service starts, and keeps its last configuration, with no agent reachable.

import { EventEmitter } from "node:events";
import { readFileSync, watch, type FSWatcher } from "node:fs";

import { EventParser } from "./events.js";
import { at, differences, same, type Value } from "./values.js";

export { at, differences, type Value } from "./values.js";

/** One change of the configuration, as `configurationChanged` tells it. */
export interface ConfigurationChange {
  /** Where: keys joined by dots, array items by index (`""` for all of it). */
  path: string;
  /** The value before (`null` when it did not exist). */
  oldValue: Value;
  /** The value after (`null` when it no longer exists). */
  newValue: Value;
  /** The commit applied; `null` for a change read from the file. */
  commit: string | null;
  /** Who signed that commit, when the agent knows. */
  signer: string | null;
}

/** Where the configuration comes from now, and how its source is doing. */
export interface Status {
  /** `agent`: read from the agent's API; `file`: from the file; `none`: not initialized. */
  source: "agent" | "file" | "none";
  /** Whether the event stream from the agent is open. */
  connected: boolean;
  /** The commit the configuration was read at (`null` from the file). */
  commit: string | null;
  /** The last event received from the agent. */
  lastEventId: number | null;
  /** When the configuration last changed. */
  lastChange: Date | null;
  /** The last failure to reach the agent, in words (`null` once it answers again). */
  agentError: string | null;
  /** The last failure to read the file, in words (`null` once it is read again). */
  fileError: string | null;
}

/** Where the configuration is read; each defaults to the variable plumb sets in the replica. */
export interface Options {
  /** `…/api/v1/environments/{env}/services/{svc}/config`; default `PLUMB_CONFIG_URL`. */
  url?: string | undefined;
  /** The service's read token; default `PLUMB_CONFIG_TOKEN`. */
  token?: string | undefined;
  /** The configuration file (JSON); default `PLUMB_CONFIG`. */
  file?: string | undefined;
  /** The signal that says the file changed (`reload: signal`); default `SIGHUP`, `null` for none. */
  signal?: NodeJS.Signals | null;
  /** Watch the file for changes (`reload: watch`); default true. */
  watchFile?: boolean;
  /** How long to wait before reaching the agent again, in milliseconds; default 2000. */
  retryMs?: number;
}

interface Served {
  commit: string;
  value: Value;
  etag: string | null;
}

/**
 * A service's configuration. `initialize()` reads it (from the agent, else from the file);
 * `getConfiguration(path)` answers from memory; `configurationChanged` tells each change.
 */
export class ConfigurationManager extends EventEmitter {
  private readonly url: string | undefined;
  private readonly token: string | undefined;
  private readonly file: string | undefined;
  private readonly signal: NodeJS.Signals | null;
  private readonly watchFile: boolean;
  private retryMs: number;
  private document: Value | undefined;
  /** The configuration before the commit read last, for the values of that commit's events. */
  private before: Value | undefined;
  private etag: string | null = null;
  private state: Status = {
    source: "none",
    connected: false,
    commit: null,
    lastEventId: null,
    lastChange: null,
    agentError: null,
    fileError: null,
  };
  private readonly abort = new AbortController();
  private watcher: FSWatcher | undefined;
  private readonly onSignal = () => this.reloadFile();
  private following: Promise<void> | undefined;

  constructor(options: Options = {}) {
    super();
    this.url = options.url ?? process.env.PLUMB_CONFIG_URL ?? undefined;
    this.token = options.token ?? process.env.PLUMB_CONFIG_TOKEN ?? undefined;
    this.file = options.file ?? process.env.PLUMB_CONFIG ?? undefined;
    this.signal = options.signal === undefined ? "SIGHUP" : options.signal;
    this.watchFile = options.watchFile ?? true;
    this.retryMs = options.retryMs ?? 2000;
  }

  /**
   * Reads the configuration: from the agent when it answers, else from the file; then follows
   * it (the agent's stream, reconnecting; the file's signal and changes). Rejects when neither
   * can be read.
   */
  async initialize(): Promise<void> {
    let fileError: string | null = null;
    if (this.file) {
      try {
        this.document = readJson(this.file);
        this.state.source = "file";
      } catch (e) {
        fileError = `the file ${this.file}: ${message(e)}`;
      }
    }
    let agentError: string | null = null;
    if (this.url) {
      try {
        this.meet(await this.read(), false);
      } catch (e) {
        agentError = `the agent at ${this.url}: ${message(e)}`;
      }
    }
    if (this.state.source === "none") {
      const why = [agentError, fileError].filter((e) => e !== null).join("; ");
      throw new Error(why || "no configuration: neither PLUMB_CONFIG_URL nor PLUMB_CONFIG is set");
    }
    this.state.agentError = agentError;
    this.state.fileError = fileError;
    if (this.file) {
      if (this.signal) {
        process.on(this.signal, this.onSignal);
      }
      if (this.watchFile) {
        this.watcher = watch(this.file, { persistent: false }, () => this.reloadFile());
        this.watcher.on("error", () => undefined);
      }
    }
    if (this.url) {
      this.following = this.follow();
    }
  }

  /** The value at `path` (keys joined by dots, array items by index; all of it when absent). */
  getConfiguration<T = Value>(path = ""): T | undefined {
    return at(this.document, path) as T | undefined;
  }

  /** Where the configuration comes from now. */
  getStatus(): Status {
    return { ...this.state };
  }

  /** Stops following: the stream closes, the file is no longer watched. */
  async close(): Promise<void> {
    this.abort.abort();
    this.watcher?.close();
    if (this.signal) {
      process.off(this.signal, this.onSignal);
    }
    await this.following;
  }

  override on(event: "configurationChanged", listener: (change: ConfigurationChange) => void): this;
  override on(event: "error", listener: (error: Error) => void): this;
  override on(event: string | symbol, listener: (...args: any[]) => void): this {
    return super.on(event, listener);
  }

  private headers(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}` } : {};
  }

  /** The configuration as the agent serves it now (unchanged: `null`, with an entity tag). */
  private async read(conditional = false): Promise<Served | null> {
    const headers = this.headers();
    if (conditional && this.etag) {
      headers["if-none-match"] = this.etag;
    }
    const answer = await fetch(this.url as string, { headers, signal: this.abort.signal });
    if (answer.status === 304) {
      return null;
    }
    const body = (await answer.json()) as { commit?: string; value?: Value; error?: string };
    if (!answer.ok) {
      throw new Error(`${answer.status}: ${body.error ?? answer.statusText}`);
    }
    return { commit: body.commit as string, value: body.value as Value, etag: answer.headers.get("etag") };
  }

  /**
   * The agent's configuration, read at the start or on a reconnection. Without a file it is
   * taken (and, when `tell`, what changed told). With one, the file — what plumb deployed to
   * this replica — stays until the agent serves the same: the agent serves the environment's
   * last healthy commit, which during a rollout is older than the replica's own.
   */
  private meet(served: Served | null, tell: boolean): void {
    if (served && (this.document === undefined || this.state.source === "agent" || same(served.value, this.document))) {
      this.take(served, tell);
    }
  }

  /** Takes what the agent served; tells what changed when `tell`. */
  private take(served: Served | null, tell: boolean, signer: string | null = null): void {
    if (!served) {
      return;
    }
    const before = this.document;
    this.document = served.value;
    this.etag = served.etag;
    this.state.commit = served.commit;
    this.state.source = "agent";
    // Changes told here are not told again by the commit's events.
    this.before = tell ? served.value : before;
    if (tell) {
      for (const change of differences(before, served.value)) {
        this.tell({ ...change, commit: served.commit, signer });
      }
    }
  }

  private tell(change: ConfigurationChange): void {
    this.state.lastChange = new Date();
    this.emit("configurationChanged", change);
  }

  /** Follows the agent's stream until closed, reconnecting after each loss. */
  private async follow(): Promise<void> {
    while (!this.abort.signal.aborted) {
      try {
        await this.stream();
      } catch (e) {
        if (this.abort.signal.aborted) {
          return;
        }
        this.state.agentError = message(e);
      }
      this.state.connected = false;
      // The file may have changed while the stream told nothing yet.
      this.reloadFile();
      await sleep(this.retryMs, this.abort.signal);
    }
  }

  /** One connection to the event stream: what was missed first, then each change. */
  private async stream(): Promise<void> {
    const headers: Record<string, string> = { ...this.headers(), accept: "text/event-stream" };
    if (this.state.lastEventId !== null) {
      headers["last-event-id"] = String(this.state.lastEventId);
    }
    const answer = await fetch(`${this.url}/events`, { headers, signal: this.abort.signal });
    if (!answer.ok || !answer.body) {
      throw new Error(`the event stream answered ${answer.status}`);
    }
    this.state.connected = true;
    this.state.agentError = null;
    // What changed while no stream was open is read whole and told, once the stream listens.
    if (this.state.lastEventId === null || this.state.source !== "agent") {
      this.meet(await this.read(true), true);
    }
    const parser = new EventParser();
    const decoder = new TextDecoder();
    for await (const chunk of answer.body as unknown as AsyncIterable<Uint8Array>) {
      for (const event of parser.push(decoder.decode(chunk, { stream: true }))) {
        if (event.event === "configurationChanged") {
          await this.changed(event.id, JSON.parse(event.data));
        }
      }
      if (parser.retry !== undefined) {
        this.retryMs = parser.retry;
      }
    }
  }

  /**
   * One change the agent told: the configuration is read again (encrypted values come in clear
   * to the service's own token only, never in events) and the change told with its values.
   */
  private async changed(id: string | undefined, told: ConfigurationChange): Promise<void> {
    if (id !== undefined && /^\d+$/.test(id)) {
      this.state.lastEventId = Number(id);
    }
    if (told.commit !== this.state.commit) {
      this.take(await this.read(true), false);
    }
    // Values from the documents when they are the commit's; as told otherwise.
    const current = this.state.commit === told.commit;
    const oldValue = current ? (at(this.before, told.path) ?? null) : told.oldValue;
    const newValue = current ? (at(this.document, told.path) ?? null) : told.newValue;
    if (!same(oldValue, newValue)) {
      this.tell({ path: told.path, oldValue, newValue, commit: told.commit, signer: told.signer ?? null });
    }
  }

  /** The file changed (signal or watch): read it again when the agent is not followed. */
  private reloadFile(): void {
    if (!this.file || this.state.connected) {
      return;
    }
    let after: Value;
    try {
      after = readJson(this.file);
    } catch (e) {
      // Half-written or invalid: the last configuration stays.
      this.state.fileError = `the file ${this.file}: ${message(e)}`;
      return;
    }
    this.state.fileError = null;
    const changes = differences(this.document, after);
    if (changes.length === 0) {
      return;
    }
    this.document = after;
    this.state.source = "file";
    this.state.commit = null;
    for (const change of changes) {
      this.tell({ ...change, commit: null, signer: null });
    }
  }
}

function readJson(file: string): Value {
  const text = readFileSync(file, "utf8");
  try {
    return JSON.parse(text) as Value;
  } catch (e) {
    const yaml = /\.ya?ml$/.test(file) ? " (this client reads JSON files: set `config.format: json`)" : "";
    throw new Error(`not JSON${yaml}: ${message(e)}`);
  }
}

function message(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    return cause instanceof Error ? `${e.message}: ${cause.message}` : e.message;
  }
  return String(e);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done);
  });
}
