//! The dashboard in a real browser (`crate::browser`: Chromium over WebDriver), against a real
//! agent on the local target: the overview lists the environment with what it runs; its link,
//! reached with the keyboard, opens the environment's page — the last attempt step by step, the
//! history, the configuration as a tree; axe-core finds no serious or critical accessibility
//! violation on either page; each page's screenshot is kept. Then the actions: refused without a
//! session or without the session's anti-forgery token; signed in with the agent's token, sync
//! and rollback start attempts that appear in the timeline, by whom.

use std::net::SocketAddr;
use std::time::Duration;

use plumb::agent::Settings;
use plumb::ledger::Outcome;
use plumb::secret::Secret;

use crate::agent::{Running, eventually, outcomes};
use crate::browser::Browser;
use crate::harness::{Web, agent_settings, trusted};
use crate::keys::TestKey;

/// The agent's API token, an admin identity named `api-token`.
const TOKEN: &str = "dashboard-test-token-0123456789";

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
        api_token: Some(Secret::new(TOKEN)),
        // The services' slots are shown as the last drift check saw them.
        heal_every: Duration::from_millis(300),
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
        // What it runs, with the commit's subject; its head is the same.
        assert_eq!(cells[1], format!("{short}\nweb r1"), "{cells:?}");
        assert_eq!(cells[2], "the same", "{cells:?}");
        assert_eq!(cells[3], "alice", "{cells:?}");
        assert!(cells[4].starts_with("succeeded blueGreen"), "{cells:?}");
        let ledger = browser.texts("#ledger + p");
        assert!(
            ledger[0].starts_with("verified ") && ledger[0].contains(" entries, each hash chained"),
            "{ledger:?}"
        );
        browser.screenshot("overview");
        assert_eq!(browser.serious_accessibility_violations(), Vec::<String>::new());

        // The keyboard reaches the environment: the trail's link, the sign-in link, then the
        // environment's.
        browser.tab_and_enter(3);
        browser.wait_for_title("dev · plumb");
        let steps = browser.texts("ol.steps .step");
        assert!(steps.iter().any(|s| s == "web: switch traffic to blue"), "{steps:?}");
        // The page follows the agent: its first drift check fills the services' table.
        let started = std::time::Instant::now();
        let services = loop {
            let rows = browser.texts("table.services tbody tr");
            if !rows.is_empty() || started.elapsed() > Duration::from_secs(10) {
                break rows;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(services.len(), 1, "{services:?}");
        assert!(
            services[0].starts_with("web\tblue\t")
                && services[0].contains("2 of 2: 2 running")
                && services[0].contains(" 100 %\t")
                // The check, probed at each replica.
                && services[0].contains("passing ready#0")
                && services[0].contains("passing ready#1"),
            "{services:?}"
        );
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

        // Services filtered by name: none holds `api`.
        browser.type_into("#service-filter", "api");
        browser.click("form.filter button");
        browser.wait_for_url("/environments/dev?service=api");
        assert!(browser.texts("table.services tbody tr").is_empty());
        assert!(browser.texts("#configuration ~ details summary").is_empty());

        // What a sync would do: nothing, the environment runs its head.
        browser.click("a[href='/environments/dev/plan']");
        browser.wait_for_title("What syncing dev would do · plumb");
        assert_eq!(browser.texts("main p")[1], "Nothing: the environment runs its head.");

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

    // Acting needs a session, and the session's anti-forgery token.
    let form = [("Content-Type", "application/x-www-form-urlencoded".to_owned())];
    let anonymous = crate::http::post(api, "/environments/dev/sync", &form, b"csrf=x").await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let wrong = crate::http::post(api, "/sign-in", &form, b"token=guess").await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let signed = crate::http::post(api, "/sign-in", &form, format!("token={TOKEN}").as_bytes()).await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let cookie = signed.header("set-cookie").unwrap().to_owned();
    assert!(
        cookie.contains("; HttpOnly") && cookie.contains("; SameSite=Strict") && !cookie.contains("Secure"),
        "{cookie}"
    );
    let session = [
        form[0].clone(),
        ("Cookie", cookie.split(';').next().unwrap().to_owned()),
    ];
    let forged = crate::http::post(api, "/environments/dev/sync", &session, b"csrf=0000").await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    let missing = crate::http::post(api, "/environments/dev/sync", &session, b"").await;
    assert_eq!(missing.status, 403, "{}", missing.body);
    assert_eq!(outcomes(state.path()).len(), 1, "nothing was started");

    // r2 is applied, so that there is something to roll back to.
    Web {
        extra: "config:\n  values: {greeting: hello again, limits: {rate: 5}}\n",
        ..Web::new(port, "r2", "blueGreen: {keepOldVersion: 0s}")
    }
    .write(&upstream);
    let second = upstream.commit_signed("web r2", &alice);
    agent.push();
    let applied = eventually(Duration::from_secs(60), || async {
        outcomes(state.path())
            .iter()
            .any(|(commit, outcome)| commit == &second && outcome == &Some(Outcome::Succeeded))
            .then_some(())
    })
    .await;
    assert!(applied.is_some(), "r2 is applied");

    let url = format!("http://{api}/");
    let first_short = first[..12].to_owned();
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start();
        browser.goto(&format!("{url}sign-in"));
        browser.type_into("#token", TOKEN);
        browser.click("form[action='/sign-in'] button");
        browser.wait_for_title("Environments · plumb");
        assert_eq!(browser.texts("header .viewer strong"), ["api-token"]);
        browser.goto(&format!("{url}environments/dev"));
        browser.screenshot("environment-signed-in");
        assert_eq!(browser.serious_accessibility_violations(), Vec::<String>::new());

        browser.click("form[action='/environments/dev/sync'] button");
        browser.wait_for_title("Sync of dev · plumb");
        assert!(
            browser.texts("main p")[0].starts_with("Done: "),
            "{:?}",
            browser.texts("main")
        );
        browser.goto(&format!("{url}environments/dev"));
        let history = browser.texts("table.history tbody tr");
        assert_eq!(history.len(), 3, "{history:?}");
        assert!(history[0].contains("sync by api-token"), "{history:?}");

        // The rollback's choices are the commits the environment ran before: r1.
        assert_eq!(
            browser.texts("#rollback-to option"),
            ["the commit before the rollback point", first_short.as_str()]
        );
        browser.click("form[action='/environments/dev/rollback'] button");
        browser.wait_for_title("Rollback of dev · plumb");
        let said = browser.texts("main");
        assert!(said[0].contains("Done: succeeded"), "{said:?}");
        assert!(said[0].contains("git revert"), "{said:?}");
        browser.screenshot("rolled-back");
        browser.goto(&format!("{url}environments/dev"));
        let history = browser.texts("table.history tbody tr");
        // The rollback's attempt (r1 again, by whom), and r2 marked as rolled back on request.
        assert!(
            history[1].contains(&first_short)
                && history[1].contains("rollback by api-token")
                && history[1].ends_with("succeeded"),
            "{history:?}"
        );
        assert!(history[0].contains("rolled back on request"), "{history:?}");

        // The head (r2, rolled back) against the rollback point (r1), field by field.
        browser.click("a[href='/environments/dev/plan']");
        browser.wait_for_title("What syncing dev would do · plumb");
        assert_eq!(browser.texts("main h3"), ["web — rollout"]);
        let rows = browser.texts("table.changes tbody tr");
        assert!(
            rows.contains(&"config.values.greeting\thello\thello again".to_owned()),
            "{rows:?}"
        );
        assert!(
            rows.iter().any(|r| r.starts_with("env[EXAMPLE_RELEASE].value\tr1\tr2")),
            "{rows:?}"
        );
        browser.screenshot("plan");
        assert_eq!(browser.serious_accessibility_violations(), Vec::<String>::new());

        // Signed out, the actions are gone.
        browser.click("form[action='/sign-out'] button");
        browser.goto(&format!("{url}environments/dev"));
        assert!(browser.texts("#actions").is_empty());
        assert_eq!(browser.texts("header .viewer"), ["Sign in"]);
    })
    .await
    .unwrap();
    agent.stop().await;
}

/// An environment's page follows a canary as it runs, without a reload: its steps appear as
/// they start — the traffic shifted to the canary, held, then the canary promoted — and the
/// attempt's outcome when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_page_follows_a_canary_live() {
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let canary = "canary: {steps: [{weight: 50, pause: 3s}], successThreshold: 0}";
    Web::new(port, "r1", canary).write(&upstream);
    let first = upstream.commit_signed("web r1", &alice);
    let state = tempfile::tempdir().unwrap();
    let settings = Settings {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..agent_settings(&upstream, &root, state.path())
    };
    let agent = Running::start(settings).await;
    let api = agent.handle.api.unwrap();
    let succeeded = |commit: String| {
        let state = state.path().to_owned();
        move || {
            let state = state.clone();
            let commit = commit.clone();
            async move {
                outcomes(&state)
                    .iter()
                    .any(|(c, outcome)| c == &commit && outcome == &Some(Outcome::Succeeded))
                    .then_some(())
            }
        }
    };
    assert!(eventually(Duration::from_secs(60), succeeded(first)).await.is_some());

    let browser = tokio::task::spawn_blocking(move || {
        let browser = Browser::start();
        browser.goto(&format!("http://{api}/environments/dev"));
        // A mark a reload would wipe out.
        browser.script("window.plumbMark = 'kept'; return null;");
        browser
    })
    .await
    .unwrap();
    // Requests through the stable port all along, for the canary's answers to count.
    let asking = tokio_util::sync::CancellationToken::new();
    let traffic = tokio::spawn({
        let asking = asking.clone();
        async move {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            while !asking.is_cancelled() {
                let _ = crate::http::try_get(addr, "/").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    Web::new(port, "r2", canary).write(&upstream);
    let second = upstream.commit_signed("web r2", &alice);
    agent.push();
    let short = second[..12].to_owned();
    let (seen, routed) = tokio::task::spawn_blocking(move || {
        // Every step the page showed, in the order it showed them, until it shows r2's success;
        // and the traffic rows it showed on the way.
        let mut seen: Vec<String> = Vec::new();
        let mut routed: Vec<String> = Vec::new();
        let started = std::time::Instant::now();
        loop {
            for row in browser.texts("table.traffic tbody tr") {
                if row.starts_with("web\tgreen\t 50 %\t")
                    && row.contains(" % successful")
                    && !routed.iter().any(|r| r.contains(" % successful"))
                {
                    browser.screenshot("environment-canary");
                }
                if !routed.contains(&row) {
                    routed.push(row);
                }
            }
            let attempt = browser.texts("#attempt + p");
            let done = attempt
                .first()
                .is_some_and(|a| a.starts_with("succeeded") && a.contains(&short));
            for step in browser.texts("ol.steps .step") {
                if !seen.contains(&step) {
                    seen.push(step);
                }
            }
            if done {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the page did not follow: {seen:?} {attempt:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            browser.script("return window.plumbMark;"),
            "kept",
            "the page was reloaded"
        );
        browser.screenshot("environment-live");
        (seen, routed)
    })
    .await
    .unwrap();
    asking.cancel();
    traffic.await.unwrap();
    // The weights as the canary set them, and the canary's answers counted while it was judged.
    assert!(routed.iter().any(|r| r.starts_with("web\tblue\t 50 %\t")), "{routed:?}");
    assert!(
        routed
            .iter()
            .any(|r| r.starts_with("web\tgreen\t 50 %\t") && r.contains(" requests, 100.0 % successful")),
        "{routed:?}"
    );
    let at = |name: &str| {
        seen.iter()
            .position(|s| s == name)
            .unwrap_or_else(|| panic!("{name}: {seen:?}"))
    };
    assert!(at("web: shift 50% to green") < at("web: promote green"), "{seen:?}");
    agent.stop().await;
}

/// Production waits for an approval; the approver's signed tag, printed by `plumb approve
/// --print`, is pasted into the environment's page by a signed-in identity and handed over: the
/// agent verifies it, records who handed it over, and applies the commit — which the overview,
/// open in another browser all along, shows without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_handed_over_from_the_page_and_the_overview_follows() {
    use crate::governance::{approve, clone, production, secret_key_file, waiting};
    use crate::keys::{ALL, policy};

    let (alice, bob) = (TestKey::new("alice"), TestKey::new("bob"));
    let (mut upstream, root) = trusted(&alice);
    upstream.write(
        "openpgp-policy.toml",
        &policy(&[(&alice, ALL), (&bob, &["sign_tag"][..])]),
    );
    let port = crate::reconcile::free_port();
    production(&upstream, port, "r1", 1);
    let first = upstream.commit_signed("web r1: one approval", &alice);
    let keys = tempfile::tempdir().unwrap();
    let bob_key = keys.path().join("bob.key");
    secret_key_file(&bob, &bob_key);
    // Bob's clone: the approval stays there (`--push none`), the agent cannot fetch it.
    let work = keys.path().join("work");
    clone(upstream.path(), &work);
    let approval = approve(
        &[
            "--env",
            "production",
            "--repo",
            work.to_str().unwrap(),
            "--key",
            bob_key.to_str().unwrap(),
            "--push",
            "none",
            "--print",
            &first,
        ],
        &[],
    );
    assert!(
        approval.starts_with(&format!("object {first}\ntype commit\n"))
            && approval.contains("-----BEGIN PGP SIGNATURE-----"),
        "{approval}"
    );

    let state = tempfile::tempdir().unwrap();
    let settings = Settings {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        api_token: Some(Secret::new(TOKEN)),
        ..agent_settings(&upstream, &root, state.path())
    };
    let agent = Running::start(settings).await;
    let api = agent.handle.api.unwrap();
    let held = eventually(Duration::from_secs(30), || async {
        waiting(api, "production")
            .await
            .filter(|w| w.contains("approval: 0 of 1 approvals"))
    })
    .await;
    assert!(held.is_some(), "production waits for its approval");

    let url = format!("http://{api}/");
    let short = first[..12].to_owned();
    let approved = first.clone();
    tokio::task::spawn_blocking(move || {
        let first = approved;
        let overview = Browser::start();
        overview.goto(&url);
        let cells = overview.texts("table.environments tbody td");
        assert_eq!(cells[0], "out of sync", "{cells:?}");
        assert!(cells[2].ends_with("web r1: one approval"), "{cells:?}");
        assert!(cells[5].starts_with("approval: 0 of 1 approvals"), "{cells:?}");
        overview.script("window.plumbMark = 'kept'; return null;");

        let browser = Browser::start();
        browser.goto(&format!("{url}environments/production"));
        // Not signed in: nothing to act with.
        assert!(browser.texts("#approval").is_empty());
        browser.goto(&format!("{url}sign-in"));
        browser.type_into("#token", TOKEN);
        browser.click("form[action='/sign-in'] button");
        browser.wait_for_title("Environments · plumb");
        browser.goto(&format!("{url}environments/production"));
        let help = browser.texts("#approval-help");
        assert!(
            help[0].contains(&format!("plumb approve --env production --print {first}")),
            "{help:?}"
        );
        browser.type_into("#approval", &approval);
        browser.screenshot("approval");
        assert_eq!(browser.serious_accessibility_violations(), Vec::<String>::new());
        browser.click("form[action='/environments/production/approve'] button");
        browser.wait_for_title("Approval of production · plumb");
        let said = browser.texts("main p");
        assert!(
            said[0].starts_with(&format!("Received: bob's approval of {short}")),
            "{said:?}"
        );

        // The overview follows: production runs r1, synced, without a reload.
        let started = std::time::Instant::now();
        loop {
            let cells = overview.texts("table.environments tbody td");
            if cells.first().is_some_and(|c| c == "synced") {
                assert_eq!(cells[1], format!("{short}\nweb r1: one approval"), "{cells:?}");
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{cells:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            overview.script("return window.plumbMark;"),
            "kept",
            "the overview was reloaded"
        );
    })
    .await
    .unwrap();
    // The ledger keeps the approval beside the attempt it let through.
    let history = crate::agent::api_get(api, "/api/v1/environments/production/history?limit=1").await;
    let history: serde_json::Value = serde_json::from_str(&history.body).unwrap();
    assert_eq!(history["attempts"][0]["commit"], first.as_str(), "{history:#}");
    assert_eq!(history["attempts"][0]["approvals"][0]["user"], "bob", "{history:#}");
    agent.stop().await;
}
