//! Fetching into a bare cache from real remotes: a local path, `file://`, and a `git daemon` on
//! loopback; incremental fetches; caches that are deleted or damaged; timeouts.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use plumb::source::{Cache, Remote, SourceError, Timeouts, TrackedRef, Tree};

use crate::harness::TestRepo;
use crate::servers::Daemon;

fn main_ref(repo: &TestRepo) -> TrackedRef {
    let head = repo.git().find_reference("HEAD").unwrap();
    TrackedRef::new(head.symbolic_target().unwrap().unwrap())
}

#[test]
fn fetches_a_local_path_and_reads_the_tree_without_a_checkout() {
    let mut upstream = TestRepo::example();
    let first = upstream.commit("Example");
    let cache_dir = tempfile::tempdir().unwrap();
    let tracked = main_ref(&upstream);
    let mut cache = Cache::open(
        &cache_dir.path().join("repo"),
        Remote::anonymous(upstream.path().to_str().unwrap()),
    )
    .unwrap();
    let fetched = cache.fetch(std::slice::from_ref(&tracked)).unwrap();
    assert_eq!(fetched.heads.len(), 1);
    assert_eq!(fetched.heads[0].1, None);
    assert_eq!(fetched.heads[0].2.to_string(), first);
    assert!(fetched.objects > 5, "{fetched:?}");

    let tree = cache.tree(fetched.heads[0].2, "").unwrap();
    assert!(
        tree.list("services")
            .unwrap()
            .contains(&"twikit-backend.yaml".to_owned())
    );
    let rendered = plumb::spec::render(&tree, Some("production")).unwrap();
    assert!(rendered.is_valid());

    // One new commit: only its objects travel.
    upstream.edit("environments/production.yaml", "replicas: 3", "replicas: 4");
    let second = upstream.commit("Scale production");
    let fetched = cache.fetch(std::slice::from_ref(&tracked)).unwrap();
    assert_eq!(fetched.heads[0].1.map(|o| o.to_string()), Some(first));
    assert_eq!(fetched.heads[0].2.to_string(), second);
    assert!(
        fetched.objects <= 4,
        "an incremental fetch received {} objects",
        fetched.objects
    );

    // Nothing new: nothing received.
    let fetched = cache.fetch(std::slice::from_ref(&tracked)).unwrap();
    assert_eq!(fetched.objects, 0);
}

#[test]
fn a_deleted_or_damaged_cache_is_rebuilt() {
    let mut upstream = TestRepo::example();
    let head = upstream.commit("Example");
    let url = format!("file://{}", upstream.path().display());
    let tracked = main_ref(&upstream);
    let cache_dir = tempfile::tempdir().unwrap();
    let dir = cache_dir.path().join("repo");
    let mut cache = Cache::open(&dir, Remote::anonymous(&url)).unwrap();
    cache.fetch(std::slice::from_ref(&tracked)).unwrap();

    std::fs::remove_dir_all(&dir).unwrap();
    let fetched = cache.fetch(std::slice::from_ref(&tracked)).unwrap();
    assert!(fetched.rebuilt);
    assert_eq!(fetched.heads[0].2.to_string(), head);

    // Garbage over every object file and the ref: the next open or fetch starts over.
    let generation = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    for pack in std::fs::read_dir(generation.join("objects/pack")).unwrap() {
        std::fs::write(pack.unwrap().path(), b"garbage").unwrap();
    }
    std::fs::write(generation.join("HEAD"), b"garbage").unwrap();
    let mut cache = Cache::open(&dir, Remote::anonymous(&url)).unwrap();
    let fetched = cache.fetch(std::slice::from_ref(&tracked)).unwrap();
    assert_eq!(fetched.heads[0].2.to_string(), head);
    assert!(
        cache
            .tree(fetched.heads[0].2, "")
            .unwrap()
            .read("plumb.yaml", 1 << 20)
            .unwrap()
            .is_some()
    );
}

/// Each fetch brings a pack; past fifty they are made one, every object kept — a commit the
/// remote no longer has too — and the packs made one are deleted at the next round; again and
/// again, fetches that bring nothing in between.
#[test]
fn many_fetches_leave_few_packs_and_every_object() {
    let mut upstream = TestRepo::example();
    upstream.commit("Example");
    let url = format!("file://{}", upstream.path().display());
    let tracked = main_ref(&upstream);
    let cache_dir = tempfile::tempdir().unwrap();
    let mut cache = Cache::open(&cache_dir.path().join("repo"), Remote::anonymous(&url)).unwrap();
    cache.fetch(std::slice::from_ref(&tracked)).unwrap();
    // A commit that is fetched, then force-pushed away.
    let before = upstream.head().unwrap();
    upstream.write("abandoned.txt", "force-pushed away\n");
    let abandoned = upstream.commit("Abandoned");
    cache.fetch(std::slice::from_ref(&tracked)).unwrap();
    upstream.set_branch(&before);
    std::fs::remove_file(upstream.path().join("abandoned.txt")).unwrap();

    let packs = || {
        let generation = std::fs::read_dir(cache_dir.path().join("repo"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let dir = generation.path().join("objects/pack");
        let names = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name());
        names.filter(|n| n.to_string_lossy().ends_with(".pack")).count()
    };
    let (mut commits, mut most, mut made_one, mut last) = (Vec::new(), 0, 0, 0);
    for i in 0..120 {
        upstream.write("counter.txt", &format!("{i}\n"));
        commits.push(upstream.commit(&format!("Change {i}")));
        // One fetch brings the commit, the next nothing.
        for _ in 0..2 {
            let fetched = cache.fetch(std::slice::from_ref(&tracked)).unwrap();
            assert_eq!(fetched.heads[0].2.to_string(), commits[i]);
            cache.keep_packs_few();
            let now = packs();
            made_one += usize::from(now < last);
            (most, last) = (most.max(now), now);
        }
    }
    assert!(
        most <= 52,
        "at most fifty packs, then the one made of them beside them: {most}"
    );
    assert_eq!(made_one, 2, "made one twice in 122 fetches that brought packs");
    // Every commit reads back, the one the remote no longer has among them.
    for (i, commit) in commits.iter().enumerate() {
        let tree = cache.tree(commit.parse().unwrap(), "").unwrap();
        let counter = tree.read("counter.txt", 1 << 10).unwrap().unwrap();
        assert_eq!(String::from_utf8(counter).unwrap(), format!("{i}\n"));
    }
    let tree = cache.tree(abandoned.parse().unwrap(), "").unwrap();
    assert!(tree.read("abandoned.txt", 1 << 10).unwrap().is_some());
}

#[test]
fn a_missing_ref_is_named() {
    let mut upstream = TestRepo::example();
    upstream.commit("Example");
    let cache_dir = tempfile::tempdir().unwrap();
    let mut cache = Cache::open(cache_dir.path(), Remote::anonymous(upstream.path().to_str().unwrap())).unwrap();
    let error = cache.fetch(&[TrackedRef::new("release")]).unwrap_err();
    assert!(matches!(error, SourceError::MissingRef { .. }), "{error:?}");
    assert!(error.to_string().contains("has no ref `refs/heads/release`"), "{error}");
}

#[test]
fn fetches_over_the_git_protocol_from_a_real_daemon() {
    let mut upstream = TestRepo::example();
    let first = upstream.commit("Example");
    let daemon = Daemon::serve(upstream.path());
    let url = format!("git://127.0.0.1:{}/", daemon.port);
    let tracked = main_ref(&upstream);
    let cache_dir = tempfile::tempdir().unwrap();
    let mut cache = Cache::open(cache_dir.path(), Remote::anonymous(&url)).unwrap();
    let fetched = cache.fetch(std::slice::from_ref(&tracked)).unwrap();
    assert_eq!(fetched.heads[0].2.to_string(), first);

    upstream.write("README.md", "new\n");
    let second = upstream.commit("Another");
    let fetched = cache.fetch(std::slice::from_ref(&tracked)).unwrap();
    assert_eq!(fetched.heads[0].2.to_string(), second);
    assert!(fetched.objects <= 3, "{fetched:?}");
}

#[test]
fn a_silent_server_times_out() {
    // Fault injection: a listener that accepts and never answers, which no real git server does
    // on demand.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let held = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let _ = finished.recv_timeout(Duration::from_secs(30));
        drop(stream);
    });
    let remote = Remote {
        timeouts: Timeouts {
            connect: Duration::from_millis(500),
            idle: Duration::from_millis(500),
            total: Duration::from_secs(3),
        },
        ..Remote::anonymous(format!("git://127.0.0.1:{port}/repo"))
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let mut cache = Cache::open(cache_dir.path(), remote).unwrap();
    let started = Instant::now();
    let error = cache.fetch(&[TrackedRef::new("main")]).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(error, SourceError::Fetch { .. } | SourceError::Timeout { .. }),
        "{error:?}"
    );
    done.send(()).unwrap();
    held.join().unwrap();
    assert!(took < Duration::from_secs(4), "the fetch hung for {took:?}");
}
