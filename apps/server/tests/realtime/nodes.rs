//! Two server instances on ephemeral loopback ports sharing one private PostgreSQL cluster
//! (CONTRACT §12): a message published on node A reaches a subscriber on node B live, and B
//! replays it after a reconnect, with the offset A's publisher was acknowledged.

use server::config::Config;
use server::store::{PostgresConfig, StoreConfig};

use crate::harness::{TestServer, relaxed, within};
use crate::pg;

async fn node(dir: tempfile::TempDir, url: &str, name: &str) -> TestServer {
    let mut config = Config::for_tests(dir.path());
    relaxed(&mut config);
    config.store = StoreConfig::postgres(PostgresConfig::new(url, name));
    config.node_id = name.to_owned();
    TestServer::start_in(dir, config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_on_one_node_is_live_and_replayed_on_another() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    // A database of its own (named after A's fresh folder), shared by both nodes.
    let url = pg::database_for(dir_a.path()).await;
    let a = node(dir_a, &url, "node-a").await;
    let b = node(dir_b, &url, "node-b").await;
    assert_ne!(a.addr, b.addr);

    let (mut sub, _) = b.client("bob").await;
    sub.subscribe("room:nodes", None).await;
    let (mut publisher, _) = a.client("alice").await;
    publisher
        .publish("m-1", "room:nodes", serde_json::json!({"text": "from A"}))
        .await;
    let ack = match within("the ack on A", publisher.recv()).await {
        protocol::ServerMessage::Ack(ack) => ack,
        other => panic!("expected ack, got {other:?}"),
    };

    let (live, _) = within("live delivery on B", sub.messages(1)).await;
    assert_eq!(live[0].channel, "room:nodes");
    assert_eq!(live[0].id, "m-1");
    assert_eq!(live[0].data, serde_json::json!({"text": "from A"}));
    assert_eq!(live[0].offset, ack.offset);
    drop(sub);

    let (mut again, _) = b.client("bob").await;
    again.subscribe("room:nodes", Some(0)).await;
    let (replayed, _) = within("replay on B", again.messages(1)).await;
    assert_eq!(replayed[0].id, "m-1");
    assert_eq!(replayed[0].offset, live[0].offset);
    assert_eq!(replayed[0].data, live[0].data);

    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
