//! The StoreAPI acceptance suite against the edge TSDB: head only, blocks only, and both.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use meridian_edge::storeapi::acceptance::{self, Fixture, StartedStore};
use meridian_edge::storeapi::leaf::LeafStore;
use meridian_edge::storeapi::server;
use meridian_edge::tsdb::db::{Db, DbOptions};
use tokio::net::TcpListener;
use tonic::transport::Endpoint;

#[derive(Clone, Copy)]
enum Layout {
    HeadOnly,
    BlocksOnly,
    Both,
}

async fn start(fx: Fixture, layout: Layout) -> StartedStore {
    let dir = tempfile::tempdir().unwrap();
    // 30-minute blocks so the fixture's ~100 minutes span several of them.
    let opts = DbOptions {
        block_range: 30 * 60 * 1000,
        retention_time: None,
        ..Default::default()
    };
    let db = Arc::new(Db::open(dir.path(), opts).unwrap());
    for (labels, samples) in &fx.series {
        let mut app = db.appender();
        for s in samples {
            app.add(labels, s.t, s.v).unwrap();
        }
        app.commit().unwrap();
    }
    match layout {
        Layout::HeadOnly => {}
        Layout::BlocksOnly => {
            db.flush_head().unwrap();
        }
        Layout::Both => {
            db.compact().unwrap();
        }
    }
    // The main fixture (~100 minutes) really is split as the layout says.
    if fx.series.len() >= 10 {
        let (blocks, head) = (db.blocks().len(), db.head_series());
        match layout {
            Layout::HeadOnly => assert_eq!(blocks, 0),
            Layout::BlocksOnly => assert!(
                blocks > 0 && head == 0,
                "{blocks} blocks, {head} head series"
            ),
            Layout::Both => assert!(
                blocks > 0 && head > 0,
                "{blocks} blocks, {head} head series"
            ),
        }
    }
    let store = LeafStore::from_source(db, fx.external_labels.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve_tcp(Arc::new(store), listener, async {
        let _ = rx.await;
    }));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    StartedStore {
        channel,
        guard: Box::new((tx, dir)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsdb_head_only() {
    acceptance::run(|fx| start(fx, Layout::HeadOnly)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsdb_blocks_only() {
    acceptance::run(|fx| start(fx, Layout::BlocksOnly)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsdb_head_and_blocks() {
    acceptance::run(|fx| start(fx, Layout::Both)).await;
}
