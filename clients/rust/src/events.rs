//! Server-Sent Events, as the agent's `…/config/events` stream sends them.

/// One event of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerEvent {
    /// Its id, when it has one.
    pub id: Option<String>,
    /// Its name (`message` when unnamed).
    pub event: String,
    /// Its data lines, joined.
    pub data: String,
}

/// Cuts a stream of bytes into events, however it is split.
#[derive(Default)]
pub struct EventParser {
    buffer: Vec<u8>,
    id: Option<String>,
    event: String,
    data: Vec<String>,
    /// The reconnection delay the server last advised, in milliseconds.
    pub retry: Option<u64>,
}

impl EventParser {
    /// Takes a chunk; the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<ServerEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut done = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n' || *b == b'\r') {
            // A `\r` at the end of the buffer may be half of `\r\n`: wait for more.
            if self.buffer[end] == b'\r' && end + 1 == self.buffer.len() {
                break;
            }
            let width = if self.buffer[end] == b'\r' && self.buffer[end + 1] == b'\n' {
                2
            } else {
                1
            };
            let line: Vec<u8> = self.buffer.drain(..end + width).take(end).collect();
            if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                done.push(event);
            }
        }
        done
    }

    fn line(&mut self, line: &str) -> Option<ServerEvent> {
        if line.is_empty() {
            let data = std::mem::take(&mut self.data);
            let event = std::mem::take(&mut self.event);
            return (!data.is_empty()).then(|| ServerEvent {
                id: self.id.clone(),
                event: if event.is_empty() { "message".to_owned() } else { event },
                data: data.join("\n"),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.id = Some(value.to_owned()),
            "event" => self.event = value.to_owned(),
            "data" => self.data.push(value.to_owned()),
            "retry" => self.retry = value.parse().ok().or(self.retry),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_from_chunks_however_the_stream_splits_them() {
        let text = "retry: 2000\n\n: keep-alive\n\nid: 7\nevent: configurationChanged\ndata: {\"path\":\"a\"}\n\nid: 8\r\nevent: configurationChanged\r\ndata: 1\r\ndata: 2\r\n\r\n";
        let mut parser = EventParser::default();
        let mut events = Vec::new();
        for chunk in text.as_bytes().chunks(3) {
            events.extend(parser.push(chunk));
        }
        assert_eq!(parser.retry, Some(2000));
        assert_eq!(
            events,
            [
                ServerEvent {
                    id: Some("7".to_owned()),
                    event: "configurationChanged".to_owned(),
                    data: "{\"path\":\"a\"}".to_owned()
                },
                ServerEvent {
                    id: Some("8".to_owned()),
                    event: "configurationChanged".to_owned(),
                    data: "1\n2".to_owned()
                },
            ]
        );
    }
}
