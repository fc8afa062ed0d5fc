//! The exact requests plumb makes for answers a real API server does not give on demand: a
//! conflict with another field manager, one with plumb's own updates, a failing list, an object
//! already gone. The server's side is played by a `tower-test` mock.

use std::pin::pin;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::runtime::{KubernetesError, KubernetesRuntime};
use crate::spec::model::environment::KubernetesTarget;
use crate::target::Slot;

type Server = Handle<Request<Body>, Response<Body>>;

fn runtime(force: bool) -> (KubernetesRuntime, Server) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "shop");
    let target = KubernetesTarget {
        namespace: crate::spec::model::scalar::Name::parse("shop").unwrap(),
        context: None,
        kubeconfig: None,
        force,
        gateway: None,
        manifests: Vec::new(),
    };
    (KubernetesRuntime::with_client("production", &target, client), handle)
}

/// A `Status` answer, as the API server writes one.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(body: Value) -> Response<Body> {
    Response::new(Body::from(serde_json::to_vec(&body).unwrap()))
}

fn deployment() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web-blue", "namespace": "shop"}})
}

const CONFLICT: &str = "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.template.spec.containers[name=\"web\"].image";

/// Answers the requests in order, checking each: method, path and query.
async fn serve(handle: Server, answers: Vec<(Method, &'static str, Response<Body>)>) -> Vec<String> {
    let mut handle = pin!(handle);
    let mut bodies = Vec::new();
    for (method, uri, answer) in answers {
        let (request, respond) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), method);
        assert_eq!(request.uri().to_string(), uri);
        let body = http_body_util::BodyExt::collect(request.into_body())
            .await
            .unwrap()
            .to_bytes();
        bodies.push(String::from_utf8_lossy(&body).into_owned());
        respond.send_response(answer);
    }
    bodies
}

async fn apply(runtime: &KubernetesRuntime) -> Result<Deployment, KubernetesError> {
    let api: Api<Deployment> = Api::namespaced(runtime.client().clone(), "shop");
    runtime
        .apply(&api, "web-blue", deployment(), "applying deployment `web-blue`")
        .await
}

const APPLY: &str = "/apis/apps/v1/namespaces/shop/deployments/web-blue?&fieldManager=plumb";
const FORCED: &str = "/apis/apps/v1/namespaces/shop/deployments/web-blue?&force=true&fieldManager=plumb";

#[tokio::test]
async fn a_conflict_with_another_manager_is_refused_naming_it() {
    let (runtime, handle) = runtime(false);
    let server = tokio::spawn(serve(
        handle,
        vec![(Method::PATCH, APPLY, status(StatusCode::CONFLICT, "Conflict", CONFLICT))],
    ));
    let error = apply(&runtime).await.unwrap_err();
    let bodies = server.await.unwrap();
    assert!(matches!(error, KubernetesError::Conflict { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("\"kubectl-edit\"") && message.contains(".image"),
        "{message}"
    );
    assert!(message.contains("target.kubernetes.force: true"), "{message}");
    assert_eq!(serde_json::from_str::<Value>(&bodies[0]).unwrap(), deployment());
}

#[tokio::test]
async fn with_force_the_apply_is_retried_forced() {
    let (runtime, handle) = runtime(true);
    let server = tokio::spawn(serve(
        handle,
        vec![
            (Method::PATCH, APPLY, status(StatusCode::CONFLICT, "Conflict", CONFLICT)),
            (Method::PATCH, FORCED, ok(deployment())),
        ],
    ));
    apply(&runtime).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_conflict_with_plumbs_own_update_is_settled_by_forcing() {
    let (runtime, handle) = runtime(false);
    let own = "Apply failed with 1 conflict: conflict with \"plumb\" using apps/v1: .spec.replicas";
    let server = tokio::spawn(serve(
        handle,
        vec![
            (Method::PATCH, APPLY, status(StatusCode::CONFLICT, "Conflict", own)),
            (Method::PATCH, FORCED, ok(deployment())),
        ],
    ));
    apply(&runtime).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_namespace_where_secrets_and_pods_are_not_granted_is_observed_all_the_same() {
    let (runtime, handle) = runtime(false);
    let empty = || ok(json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}));
    let server = tokio::spawn(serve(
        handle,
        vec![
            (
                Method::GET,
                "/apis/apps/v1/namespaces/shop/deployments?&labelSelector=plumb.dev%2Fenvironment%3Dproduction",
                empty(),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/shop/services?&labelSelector=plumb.dev%2Fenvironment%3Dproduction",
                empty(),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/shop/configmaps?&labelSelector=plumb.dev%2Fenvironment%3Dproduction",
                empty(),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/shop/secrets?&labelSelector=plumb.dev%2Fenvironment%3Dproduction",
                status(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "secrets is forbidden: User \"system:serviceaccount:plumb:plumb\" cannot list resource \"secrets\" in API group \"\" in the namespace \"shop\"",
                ),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/shop/pods?&labelSelector=plumb.dev%2Fenvironment%3Dproduction",
                status(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "pods is forbidden: User \"system:serviceaccount:plumb:plumb\" cannot list resource \"pods\" in API group \"\" in the namespace \"shop\"",
                ),
            ),
        ],
    ));
    let live = runtime.observe().await.unwrap();
    server.await.unwrap();
    assert!(live.is_empty());
}

#[tokio::test]
async fn a_failing_list_is_an_error_never_an_empty_observation() {
    let (runtime, handle) = runtime(false);
    let server = tokio::spawn(serve(
        handle,
        vec![(
            Method::GET,
            "/apis/apps/v1/namespaces/shop/deployments?&labelSelector=plumb.dev%2Fenvironment%3Dproduction",
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "etcdserver: request timed out",
            ),
        )],
    ));
    let error = runtime.observe().await.unwrap_err();
    server.await.unwrap();
    assert!(error.to_string().contains("listing deployments"), "{error}");
    assert!(error.to_string().contains("etcdserver: request timed out"), "{error}");
}

#[tokio::test]
async fn retiring_a_slot_scales_it_to_zero_deletes_its_config_and_secret_and_one_already_gone_is_done() {
    let (runtime, handle) = runtime(false);
    let server = tokio::spawn(serve(
        handle,
        vec![
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/shop/deployments/web-green?&fieldManager=plumb",
                status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "deployments.apps \"web-green\" not found",
                ),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/shop/configmaps/web-green-config?",
                status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "configmaps \"web-green-config\" not found",
                ),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/shop/secrets/web-green-secrets?",
                status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "secrets \"web-green-secrets\" not found",
                ),
            ),
        ],
    ));
    runtime.retire("web", Slot::Green).await.unwrap();
    let bodies = server.await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&bodies[0]).unwrap(),
        json!({"spec": {"replicas": 0}})
    );
}

#[tokio::test]
async fn a_forbidden_route_names_the_service() {
    let (runtime, handle) = runtime(false);
    let server = tokio::spawn(serve(
        handle,
        vec![(
            Method::GET,
            "/api/v1/namespaces/shop/services/web",
            status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "services \"web\" is forbidden: User \"system:serviceaccount:plumb:plumb\" cannot get resource \"services\"",
            ),
        )],
    ));
    let error = runtime.route("web", &[(Slot::Blue, 100)]).await.unwrap_err();
    server.await.unwrap();
    assert!(error.to_string().starts_with("reading service `web`"), "{error}");
    assert!(error.to_string().contains("forbidden"), "{error}");
}
