//! Rendering commit after commit with a memo, as the agent does, gives what rendering each
//! commit from scratch gives — problems included — while rendering again only the services a
//! commit touches.

use std::sync::Arc;

use age::secrecy::ExposeSecret;
use plumb::source::{Entry, GitTree, SourceError, Tree};
use plumb::spec::memo::Memo;
use plumb::spec::rights::Allow;
use plumb::spec::sealed::{self, Keyring};

use crate::harness::TestRepo;

const REPOSITORY: &str = "apiVersion: plumb/v1\nkind: Repository\nenvironments: [staging, production]\n\
                          serviceDefaults:\n  progressDeadline: 10m\n";

fn service(name: &str, port: u16, extra: &str) -> String {
    format!(
        "apiVersion: plumb/v1\nkind: Service\nname: {name}\ncommand: [sleep, \"1000\"]\n\
         ports:\n  - {{name: http, port: {port}}}\n{extra}"
    )
}

const SCHEMA: &str = r#"{"type": "object", "properties": {"level": {"type": "integer", "maximum": 5}}}"#;

const STAGING: &str = "apiVersion: plumb/v1\nkind: Environment\nname: staging\ntarget:\n  local: {portOffset: 10000}\n\
                       services:\n  a:\n    replicas: 2\n  b:\n    config:\n      values: {level: 4}\n";

const PRODUCTION: &str = "apiVersion: plumb/v1\nkind: Environment\nname: production\n\
                          target:\n  local: {portOffset: 20000}\nservices:\n  c: {enabled: false}\n";

/// A repository of services a (with `a_extra` in its document), b (its configuration checked
/// against a schema) and c, in staging and production (not committed).
fn three_services(a_extra: &str) -> TestRepo {
    let repo = TestRepo::new();
    repo.write("plumb.yaml", REPOSITORY)
        .write("services/a.yaml", &service("a", 4001, a_extra))
        .write(
            "services/b.yaml",
            &service("b", 4002, "config:\n  schema: schemas/b.json\n  values: {level: 1}\n"),
        )
        .write("services/c.yaml", &service("c", 4003, ""))
        .write("schemas/b.json", SCHEMA)
        .write("environments/staging.yaml", STAGING)
        .write("environments/production.yaml", PRODUCTION);
    repo
}

/// Renders `commit` with `memo` and from scratch, asserts both give the same environments and
/// problems, and returns how many services the memo's render took from the commit before.
fn same_as_from_scratch(memo: &mut Memo, repo: &TestRepo, commit: &str, keys: &Keyring) -> (usize, usize) {
    let tree = |commit: &str| {
        let git = git2::Repository::open(repo.path()).unwrap();
        GitTree::at(git, git2::Oid::from_str(commit).unwrap(), "").unwrap()
    };
    let remembered = memo.render(&tree(commit)).unwrap();
    let scratch = plumb::spec::render_opening(&tree(commit), None, keys, &Allow::default()).unwrap();
    assert_eq!(remembered.environments, scratch.environments, "at {commit}");
    // Versions too: they tell apart what equality does not (-0.0 and 0.0).
    let versions = |r: &plumb::spec::Rendered| {
        let services = r.environments.values().flat_map(|d| d.services.values());
        services.map(|s| plumb::reconcile::version(s)).collect::<Vec<_>>()
    };
    assert_eq!(versions(&remembered), versions(&scratch), "at {commit}");
    let problems = |r: &plumb::spec::Rendered| r.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    assert_eq!(problems(&remembered), problems(&scratch), "at {commit}");
    (memo.reused(), scratch.diagnostics.len())
}

#[test]
fn a_memo_renders_what_a_fresh_render_does_and_only_what_changed() {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let key = identity.to_string().expose_secret().to_owned();
    let keys = Arc::new(Keyring::new(vec![key.parse().unwrap()]));
    let token = sealed::seal(&[recipient], "s3cret").unwrap();
    let mut memo = Memo::new(keys.clone(), Arc::new(Allow::default()));

    let mut repo = three_services(&format!("env:\n  - {{name: TOKEN, value: \"{token}\"}}\n"));
    let first = repo.commit("Three services");
    // Nothing kept yet: all six (three services in two environments) are rendered.
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &first, &keys), (0, 0));
    let git = git2::Repository::open(repo.path()).unwrap();
    let again = memo.render(&GitTree::at(git, git2::Oid::from_str(&first).unwrap(), "").unwrap());
    let a = &again.unwrap().environments["staging"].services["a"];
    assert_eq!(
        a.opened.clear_values().count(),
        1,
        "the sealed value is opened, kept or not"
    );
    assert_eq!(
        (memo.reused(), memo.kept()),
        (6, (6, 6)),
        "six documents, six renderings"
    );

    // One service changed: rendered again in both environments, the other four kept.
    repo.edit("services/c.yaml", "4003", "4013");
    let commit = repo.commit("c moves");
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &commit, &keys), (4, 0));

    // An overlay added above the others moves their lines, not their values: only c in
    // staging is rendered again.
    repo.edit(
        "environments/staging.yaml",
        "services:\n",
        "services:\n  c:\n    replicas: 3\n",
    );
    let commit = repo.commit("c scales in staging");
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &commit, &keys), (5, 0));

    // The application schema b names changed: b is checked again, and is now refused in
    // staging at its overlay's line, as a fresh render refuses it.
    repo.write("schemas/b.json", &SCHEMA.replace("\"maximum\": 5", "\"maximum\": 3"));
    let commit = repo.commit("b's levels go to 3");
    let (reused, problems) = same_as_from_scratch(&mut memo, &repo, &commit, &keys);
    assert_eq!((reused, problems), (4, 1));

    // Fixed: b rendered again where it was refused, and only there.
    repo.edit("environments/staging.yaml", "level: 4", "level: 3");
    let commit = repo.commit("b at level 3");
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &commit, &keys), (5, 0));

    // Production moves: its three services are rendered again, staging's are kept.
    repo.edit("environments/production.yaml", "20000", "21000");
    let commit = repo.commit("Production on other ports");
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &commit, &keys), (3, 0));

    // A value's sign is part of it, even zero's.
    repo.edit("environments/staging.yaml", "level: 3", "level: 3, ratio: 0.0");
    let commit = repo.commit("b's ratio");
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &commit, &keys), (5, 0));
    repo.edit("environments/staging.yaml", "ratio: 0.0", "ratio: -0.0");
    let commit = repo.commit("b's ratio signed");
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &commit, &keys), (5, 0));

    // The service defaults changed: every service is rendered again.
    repo.edit("plumb.yaml", "10m", "15m");
    let commit = repo.commit("Longer deadlines");
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &commit, &keys), (0, 0));

    // A document whose name is not its file's is refused at every commit until mended, as a
    // fresh render refuses it.
    repo.edit("services/c.yaml", "name: c", "name: d");
    let commit = repo.commit("c named d");
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &commit, &keys).1, 1);
    repo.edit("services/a.yaml", "4001", "4011");
    let commit = repo.commit("a moves, c still named d");
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &commit, &keys).1, 1);

    // A document that does not parse is refused as a fresh render refuses it, and once
    // fixed the others were still kept.
    repo.write("services/c.yaml", "name: [c\n");
    let commit = repo.commit("c broken");
    let (_, problems) = same_as_from_scratch(&mut memo, &repo, &commit, &keys);
    assert!(problems > 0);
    repo.write("services/c.yaml", &service("c", 4013, ""));
    let commit = repo.commit("c mended");
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &commit, &keys), (4, 0));
}

/// A commit's tree one of whose files cannot be read, as when git's object store breaks: a
/// fault no repository produces on demand.
struct Unreadable {
    tree: GitTree,
    path: &'static str,
}

impl Unreadable {
    fn at(repo: &TestRepo, commit: &str, path: &'static str) -> Unreadable {
        let git = git2::Repository::open(repo.path()).unwrap();
        let tree = GitTree::at(git, git2::Oid::from_str(commit).unwrap(), "").unwrap();
        Unreadable { tree, path }
    }

    fn fails(&self, path: &str) -> Result<(), SourceError> {
        if path == self.path {
            return Err(SourceError::Io {
                path: path.into(),
                source: std::io::Error::other("the object store is damaged"),
            });
        }
        Ok(())
    }
}

impl Tree for Unreadable {
    fn list(&self, dir: &str) -> Result<Vec<String>, SourceError> {
        self.tree.list(dir)
    }
    fn read(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, SourceError> {
        self.fails(path)?;
        self.tree.read(path, limit)
    }
    fn commit(&self) -> Option<git2::Oid> {
        self.tree.commit()
    }
    fn entries(&self, dir: &str) -> Result<Vec<Entry>, SourceError> {
        self.tree.entries(dir)
    }
    fn blobs(&self, dir: &str) -> Result<Option<Vec<(String, git2::Oid)>>, SourceError> {
        self.tree.blobs(dir)
    }
    fn blob(&self, path: &str) -> Result<Option<git2::Oid>, SourceError> {
        self.fails(path)?;
        self.tree.blob(path)
    }
}

/// A render that stops on a file it cannot read keeps what the memo held — the documents, and
/// the services rendered — and the next render of the same commit gives what a fresh render
/// gives, overlays changed after the file it stopped at included.
#[test]
fn a_render_stopped_by_an_unreadable_file_loses_nothing_the_memo_kept() {
    let keys = Arc::new(Keyring::new(Vec::new()));
    let mut memo = Memo::new(keys.clone(), Arc::new(Allow::default()));
    let mut repo = three_services("");
    let first = repo.commit("Three services");
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &first, &keys), (0, 0));

    // A changed service document that cannot be read: the last render's documents stay kept.
    repo.edit("services/c.yaml", "4003", "4013");
    let moved = repo.commit("c moves");
    stopped_at(
        memo.render(&Unreadable::at(&repo, &moved, "services/c.yaml")),
        "services/c.yaml",
    );
    assert_eq!(memo.kept(), (6, 6), "the documents and the renderings are kept");
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &moved, &keys), (4, 0));

    // Staging's overlays of a (before b) and c (after b) change, and b's schema cannot be read:
    // the render stops at b in each environment. Rendered again, c takes its new overlay.
    repo.edit("environments/staging.yaml", "replicas: 2", "replicas: 4")
        .edit(
            "environments/staging.yaml",
            "services:\n",
            "services:\n  c:\n    replicas: 3\n",
        );
    let scaled = repo.commit("a and c scale in staging");
    stopped_at(
        memo.render(&Unreadable::at(&repo, &scaled, "schemas/b.json")),
        "schemas/b.json",
    );
    assert_eq!(memo.kept(), (6, 6));
    // a and b in staging (a as the stopped render left it), production's three.
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &scaled, &keys), (5, 0));

    // A manifest file production lists that cannot be read stops the render before any
    // service: the documents read are kept all the same.
    repo.write(
        "extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n",
    )
    .edit(
        "environments/production.yaml",
        "target:\n  local: {portOffset: 20000}",
        "target:\n  kubernetes: {namespace: production, manifests: [extra.yaml]}",
    );
    let listed = repo.commit("production on Kubernetes, with a manifest");
    stopped_at(memo.render(&Unreadable::at(&repo, &listed, "extra.yaml")), "extra.yaml");
    assert_eq!(memo.kept().0, 6, "the documents are kept");
    // Staging's three are kept; production's two enabled services name no image, which
    // Kubernetes needs: refused, as from scratch.
    assert_eq!(same_as_from_scratch(&mut memo, &repo, &listed, &keys), (3, 2));
}

/// Asserts that a render stopped because `path` could not be read, and said so.
fn stopped_at(rendered: Result<plumb::spec::Rendered, plumb::spec::RenderError>, path: &str) {
    match rendered {
        Err(plumb::spec::RenderError::Source(SourceError::Io { path: unread, .. })) => {
            assert_eq!(unread, std::path::Path::new(path));
        }
        Err(other) => panic!("stopped otherwise: {other}"),
        Ok(_) => panic!("rendered although {path} could not be read"),
    }
}

/// A file a Compose file names that the repository holds but that cannot be read stops the
/// render, as any unreadable file does, rather than being taken as absent (an optional env file
/// would then be left out, and its service run without its values).
#[test]
fn an_unreadable_file_a_compose_file_names_stops_the_render() {
    let mut repo = TestRepo::compose_only(
        "services:\n  web:\n    image: web:1\n    env_file:\n      - {path: web.env, required: false}\n\
         \x20   volumes: [\"./site.conf:/etc/site.conf:ro\"]\n",
    );
    repo.write("web.env", "GREETING=hello\n")
        .write("site.conf", "listen 80;\n");
    let commit = repo.commit("web, with its optional env file and a file mounted");
    assert!(plumb::spec::render(&Unreadable::at(&repo, &commit, "nothing"), None).is_ok());
    for path in ["web.env", "site.conf"] {
        stopped_at(plumb::spec::render(&Unreadable::at(&repo, &commit, path), None), path);
    }
}
