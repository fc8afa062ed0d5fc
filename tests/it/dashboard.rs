//! The dashboard in a real browser (`crate::browser`: Chromium over WebDriver), against a real
//! agent on the local target: the overview lists the environment with what it runs; its link,
//! reached with the keyboard, opens the environment's page — the last attempt step by step, the
//! history, the configuration as a tree; axe-core finds no serious or critical accessibility
//! violation on either page; each page's screenshot is kept.

use std::net::SocketAddr;
use std::time::Duration;

use plumb::agent::Settings;
use plumb::ledger::Outcome;

use crate::agent::{Running, eventually, outcomes};
use crate::browser::Browser;
use crate::harness::{Web, agent_settings, trusted};
use crate::keys::TestKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_each_environment_in_a_real_browser() {
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    Web {
        extra: "config:\n  values: {greeting: hello, limits: {rate: 5}}\n",
        ..Web::new(port, "r1", "blueGreen: {keepOldVersion: 0s}")
    }
    .write(&upstream);
    let first = upstream.commit_signed("web r1", &alice);
    let state = tempfile::tempdir().unwrap();
    let settings = Settings {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..agent_settings(&upstream, &root, state.path())
    };
    let agent = Running::start(settings).await;
    let api = agent.handle.api.unwrap();
    let applied = eventually(Duration::from_secs(60), || async {
        outcomes(state.path())
            .iter()
            .any(|(commit, outcome)| commit == &first && outcome == &Some(Outcome::Succeeded))
            .then_some(())
    })
    .await;
    assert!(applied.is_some(), "r1 is applied");

    let url = format!("http://{api}/");
    let short = first[..12].to_owned();
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start();
        browser.goto(&url);
        assert_eq!(browser.title(), "Environments · plumb");
        assert_eq!(browser.texts("table.environments tbody th"), ["dev"]);
        let cells = browser.texts("table.environments tbody td");
        assert_eq!(cells[0], "synced", "{cells:?}");
        assert_eq!(cells[1], short, "{cells:?}");
        assert_eq!(cells[3], "alice", "{cells:?}");
        assert!(cells[4].starts_with("succeeded blueGreen"), "{cells:?}");
        browser.screenshot("overview");
        assert_eq!(browser.serious_accessibility_violations(), Vec::<String>::new());

        // The keyboard reaches the environment: the trail's link first, then the environment's.
        browser.tab_and_enter(2);
        assert_eq!(browser.title(), "dev · plumb");
        let steps = browser.texts("ol.steps .step");
        assert!(steps.iter().any(|s| s == "web: switch traffic to blue"), "{steps:?}");
        let history = browser.texts("table.history tbody tr");
        assert_eq!(history.len(), 1, "{history:?}");
        assert!(
            history[0].contains(&short) && history[0].ends_with("succeeded"),
            "{history:?}"
        );
        assert_eq!(browser.texts("#configuration ~ details summary"), ["web"]);
        let tree = browser.texts("ul.tree > li");
        assert!(tree.contains(&"greeting hello".to_owned()), "{tree:?}");
        browser.screenshot("environment");
        assert_eq!(browser.serious_accessibility_violations(), Vec::<String>::new());

        // An environment the agent does not apply is a 404 page, not an empty one.
        browser.goto(&format!("{url}environments/nowhere"));
        assert_eq!(browser.title(), "Not found · plumb");
        assert_eq!(
            browser.texts("main p"),
            ["This agent applies no environment named `nowhere`."]
        );
    })
    .await
    .unwrap();
    agent.stop().await;
}
