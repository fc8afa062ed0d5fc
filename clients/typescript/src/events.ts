// Server-Sent Events, as the agent's `…/config/events` stream sends them.

/** One event of the stream. */
export interface ServerEvent {
  id: string | undefined;
  event: string;
  data: string;
}

/**
 * Cuts a stream of text into events. `push` takes each chunk as it arrives and returns the
 * events it completed; `retry` is the reconnection delay the server last advised.
 */
export class EventParser {
  private buffer = "";
  private id: string | undefined;
  private event = "";
  private data: string[] = [];
  retry: number | undefined;

  push(chunk: string): ServerEvent[] {
    this.buffer += chunk;
    const done: ServerEvent[] = [];
    for (;;) {
      const end = this.buffer.search(/\r\n|\r|\n/);
      if (end < 0) {
        return done;
      }
      const line = this.buffer.slice(0, end);
      const width = this.buffer.startsWith("\r\n", end) ? 2 : 1;
      this.buffer = this.buffer.slice(end + width);
      const event = this.line(line);
      if (event) {
        done.push(event);
      }
    }
  }

  private line(line: string): ServerEvent | undefined {
    if (line === "") {
      const event =
        this.data.length > 0 ? { id: this.id, event: this.event || "message", data: this.data.join("\n") } : undefined;
      this.event = "";
      this.data = [];
      return event;
    }
    if (line.startsWith(":")) {
      return undefined;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) {
      value = value.slice(1);
    }
    switch (field) {
      case "id":
        this.id = value;
        break;
      case "event":
        this.event = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "retry":
        if (/^\d+$/.test(value)) {
          this.retry = Number(value);
        }
        break;
    }
    return undefined;
  }
}
