//! A real Prometheus (Debian's) for canary analysis, started once per test process and dying
//! with it, scraping every second an exporter that reports each slot's success rate as the
//! tests set it: the blue slot 42 %, the green one 99.5 %.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The success rates the exporter reports, as Prometheus' text format.
const METRICS: &str = "# TYPE plumb_test_success_percent gauge\n\
plumb_test_success_percent{service=\"api\",slot=\"blue\"} 42\n\
plumb_test_success_percent{service=\"api\",slot=\"green\"} 99.5\n";

/// The query the tests' canaries are judged by.
pub const QUERY: &str = r#"plumb_test_success_percent{service="{{service}}",slot="{{slot}}"}"#;

/// Prometheus' address, once it holds both slots' rates.
pub fn url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(start)
}

fn start() -> String {
    let exporter = TcpListener::bind("127.0.0.1:0").unwrap();
    let scraped = exporter.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in exporter.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{METRICS}",
                METRICS.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    let dir = plumb::lab::run_dir("plumb-test-prometheus-", |_| ()).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: canary\n    static_configs: [{{targets: [\"{scraped}\"]}}]\n"
        ),
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut prometheus = Command::new("prometheus");
    prometheus
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap());
    plumb::lab::spawn_tied(prometheus).expect("Prometheus is installed (.ci/run installs it)");
    let url = format!("http://127.0.0.1:{port}");
    // Ready once a query sees both slots' rates.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let asked = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import json,urllib.request;print(len(json.load(urllib.request.urlopen('{url}/api/v1/query?query=plumb_test_success_percent'))['data']['result']))"
            ))
            .output()
            .unwrap();
        if String::from_utf8_lossy(&asked.stdout).trim() == "2" {
            return url;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the exporter in time: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
