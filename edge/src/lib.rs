//! Meridian edge library: the data formats every Meridian component shares (labels, matchers, samples,
//! XOR chunks, TSDB files, StoreAPI protocol) and the edge's own machinery.

pub mod agent;
pub mod chunkenc;
pub mod config;
pub mod discovery;
pub mod error;
pub mod labels;
pub mod matcher;
pub mod metadata;
pub mod objstore;
pub mod process_metrics;
pub mod receive;
pub mod relabel;
pub mod sample;
pub mod scrape;
pub mod shipper;
pub mod storeapi;
pub mod tsdb;
pub mod web;

/// Generated protobuf code for the StoreAPI and remote write, from the `.proto` files in `edge/proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    pub mod thanos {
        tonic::include_proto!("thanos");
        pub mod info {
            tonic::include_proto!("thanos.info");
        }
    }
    pub mod prometheus {
        tonic::include_proto!("prometheus");
    }
}

pub use labels::{Labels, LabelsBuilder};
pub use matcher::{MatchType, Matcher};
pub use sample::Sample;
