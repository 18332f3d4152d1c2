//! What the builder accepts.

use std::time::Duration;

use pairdb_client::{Client, ClientError, RetryPolicy};

fn refused(builder: pairdb_client::ClientBuilder) -> bool {
    matches!(builder.build(), Err(ClientError::InvalidConfig(_)))
}

#[test]
fn refuses_unusable_configuration() {
    assert!(refused(Client::builder("https://db.example", "k")));
    assert!(refused(Client::builder("not a url", "k")));
    assert!(refused(Client::builder("http://h:1/?q=1", "k")));
    assert!(refused(Client::builder("http://h:1", "")));
    assert!(refused(Client::builder("http://h:1", "bad\nkey")));
    assert!(refused(
        Client::builder("http://h:1", "k").timeout(Duration::ZERO)
    ));
    assert!(refused(Client::builder("http://h:1", "k").retry(
        RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        }
    )));
}

#[test]
fn never_prints_the_api_key() {
    let builder = Client::builder("http://h:1", "pdb_id_topsecret");
    assert!(!format!("{builder:?}").contains("topsecret"));
    let client = builder.build().expect("client");
    assert!(!format!("{client:?}").contains("topsecret"));
}
