//! `docs/api.md` and the OpenAPI document the gateway serves stay in step: the same routes, the
//! same problem types, the same statuses.

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::*;

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "PATCH"];

/// Every `` `METHOD /path`` `` the page names, with whether its table row marks it planned.
fn documented_routes(doc: &str) -> Vec<(String, String, bool)> {
    let mut routes = Vec::new();
    for line in doc.lines() {
        for (i, _) in line.match_indices('`') {
            let rest = &line[i + 1..];
            let Some((method, after)) = rest.split_once(' ') else {
                continue;
            };
            if !METHODS.contains(&method) || !after.starts_with('/') {
                continue;
            }
            let path: String = after
                .chars()
                .take_while(|c| *c != '`' && *c != ' ')
                .collect();
            routes.push((method.to_owned(), path, line.contains("*planned*")));
        }
    }
    routes
}

#[tokio::test]
async fn the_api_doc_and_the_openapi_document_describe_the_same_api() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md"))
        .expect("docs/api.md");
    let h = Harness::start().await;
    let openapi: serde_json::Value = h
        .http
        .get(h.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let mut served = BTreeSet::new();
    let mut statuses = BTreeSet::new();
    for (path, item) in openapi["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let method = method.to_ascii_uppercase();
            if METHODS.contains(&method.as_str()) {
                served.insert((method, path.clone()));
                for status in operation["responses"]
                    .as_object()
                    .expect("responses")
                    .keys()
                {
                    statuses.insert(status.clone());
                }
            }
        }
    }
    let documented = documented_routes(&doc);
    let available: BTreeSet<_> = documented
        .iter()
        .filter(|(_, _, planned)| !planned)
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    assert_eq!(
        available, served,
        "docs/api.md (left) and /openapi.json (right) disagree on the routes served"
    );
    for (method, path, planned) in &documented {
        if *planned {
            assert!(
                !served.contains(&(method.clone(), path.clone())),
                "{method} {path} is served but docs/api.md calls it planned"
            );
        }
    }

    // Every problem type, and every failure status a route can answer, is documented.
    for kind in pairdb_core::ErrorKind::ALL {
        assert!(
            doc.contains(&format!("`{}`", kind.slug())),
            "docs/api.md does not list the problem type {}",
            kind.slug()
        );
        let listed = openapi.to_string().contains(&kind.type_uri());
        assert!(listed, "/openapi.json does not list {}", kind.type_uri());
    }
    for status in statuses
        .iter()
        .filter(|s| s.starts_with('4') || s.starts_with('5'))
    {
        assert!(
            doc.contains(&format!("| {status} |")),
            "status {status} is served but not in docs/api.md's failure table"
        );
    }
}
