//! Proves the field numbers, types and enum values of our `.proto` files against the wire contract in
//! `shared/specs/storeapi-wire.md`: every message is built here by hand, byte by byte, from the field
//! numbers the spec gives, and decoded with the generated code. Also checks the RPC paths.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use meridian_storeapi::proto::prometheus as prom;
use meridian_storeapi::proto::thanos as pb;
use meridian_storeapi::proto::thanos::info as infopb;
use prost::Message;

/// A minimal protobuf writer, independent of prost.
#[derive(Default, Clone)]
struct W(Vec<u8>);

impl W {
    fn new() -> W {
        W::default()
    }
    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.raw_varint(u64::from(field) << 3 | u64::from(wire));
    }
    fn varint(mut self, field: u32, v: u64) -> W {
        self.key(field, 0);
        self.raw_varint(v);
        self
    }
    fn int(self, field: u32, v: i64) -> W {
        self.varint(field, v as u64)
    }
    fn sint(self, field: u32, v: i64) -> W {
        self.varint(field, ((v << 1) ^ (v >> 63)) as u64)
    }
    fn double(mut self, field: u32, v: f64) -> W {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
        self
    }
    fn bytes(mut self, field: u32, b: &[u8]) -> W {
        self.key(field, 2);
        self.raw_varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, field: u32, s: &str) -> W {
        self.bytes(field, s.as_bytes())
    }
    fn msg(self, field: u32, m: W) -> W {
        self.bytes(field, &m.0)
    }
    fn decode<M: Message + Default>(&self) -> M {
        M::decode(&self.0[..]).expect("decodes")
    }
}

fn label(n: &str, v: &str) -> W {
    W::new().str(1, n).str(2, v)
}

#[test]
fn labels_and_chunks() {
    let l: pb::Label = label("job", "api").decode();
    assert_eq!((l.name.as_str(), l.value.as_str()), ("job", "api"));
    for ls in [
        W::new()
            .msg(1, label("a", "1"))
            .msg(1, label("b", "2"))
            .decode::<pb::LabelSet>()
            .labels,
        W::new()
            .msg(1, label("a", "1"))
            .msg(1, label("b", "2"))
            .decode::<pb::ZLabelSet>()
            .labels,
    ] {
        assert_eq!(ls.len(), 2);
        assert_eq!(ls[1].value, "2");
    }
    for (v, e) in [
        (0, pb::chunk::Encoding::Xor),
        (1, pb::chunk::Encoding::Histogram),
        (2, pb::chunk::Encoding::FloatHistogram),
    ] {
        let c: pb::Chunk = W::new()
            .varint(1, v)
            .bytes(2, b"\x00\x01xyz")
            .varint(3, 42)
            .decode();
        assert_eq!(c.r#type, e as i32);
        assert_eq!(c.data, Bytes::from_static(b"\x00\x01xyz"));
        assert_eq!(c.hash, 42);
    }
    let chunk = |tag: &[u8]| W::new().bytes(2, tag);
    let ac: pb::AggrChunk = W::new()
        .int(1, -5)
        .int(2, 99)
        .msg(3, chunk(b"raw"))
        .msg(4, chunk(b"count"))
        .msg(5, chunk(b"sum"))
        .msg(6, chunk(b"min"))
        .msg(7, chunk(b"max"))
        .msg(8, chunk(b"counter"))
        .decode();
    assert_eq!((ac.min_time, ac.max_time), (-5, 99));
    let data = |c: &Option<pb::Chunk>| c.as_ref().map(|c| c.data.clone()).unwrap_or_default();
    assert_eq!(data(&ac.raw), "raw");
    assert_eq!(data(&ac.count), "count");
    assert_eq!(data(&ac.sum), "sum");
    assert_eq!(data(&ac.min), "min");
    assert_eq!(data(&ac.max), "max");
    assert_eq!(data(&ac.counter), "counter");

    let series = W::new().msg(1, label("a", "1")).msg(2, W::new().int(1, 7));
    let s: pb::Series = series.decode();
    assert_eq!(s.labels.at(0).name, "a");
    assert_eq!(s.chunks[0].min_time, 7);
    let b: pb::SeriesBatch = W::new().msg(1, series.clone()).msg(1, series).decode();
    assert_eq!(b.series.len(), 2);
}

#[test]
fn enums() {
    use pb::label_matcher::Type;
    for (v, t) in [(0, Type::Eq), (1, Type::Neq), (2, Type::Re), (3, Type::Nre)] {
        let m: pb::LabelMatcher = W::new().varint(1, v).str(2, "n").str(3, "v").decode();
        assert_eq!(m.r#type, t as i32);
        assert_eq!((m.name.as_str(), m.value.as_str()), ("n", "v"));
    }
    assert_eq!(pb::PartialResponseStrategy::Warn as i32, 0);
    assert_eq!(pb::PartialResponseStrategy::Abort as i32, 1);
    for (v, a) in [
        (0, pb::Aggr::Raw),
        (1, pb::Aggr::Count),
        (2, pb::Aggr::Sum),
        (3, pb::Aggr::Min),
        (4, pb::Aggr::Max),
        (5, pb::Aggr::Counter),
    ] {
        assert_eq!(a as i32, v);
    }
    // Remote read's chunk encoding is numbered differently from the StoreAPI's.
    for (v, e) in [
        (0, prom::chunk::Encoding::Unknown),
        (1, prom::chunk::Encoding::Xor),
        (2, prom::chunk::Encoding::Histogram),
        (3, prom::chunk::Encoding::FloatHistogram),
    ] {
        assert_eq!(e as i32, v);
    }
}

#[test]
fn series_request_every_field() {
    let any = W::new().str(1, "type.googleapis.com/x").bytes(2, b"v");
    let hints = W::new()
        .int(1, 30_000)
        .msg(2, W::new().str(1, "rate"))
        .msg(4, W::new().varint(1, 1).str(3, "job").str(3, "instance"))
        .msg(5, W::new().int(1, 300_000))
        .str(6, "pod")
        .varint(7, 1);
    let shard = W::new().int(1, 2).int(2, 8).varint(3, 1).str(4, "cluster");
    let r: pb::SeriesRequest = W::new()
        .int(1, -1000)
        .int(2, 2000)
        .msg(3, W::new().varint(1, 2).str(2, "__name__").str(3, "up"))
        .int(4, 300_000)
        .varint(5, 2) // SUM, unpacked
        .bytes(5, &[1, 5]) // COUNT, COUNTER, packed
        .varint(6, 1)
        .varint(7, 1)
        .varint(8, 1)
        .msg(9, any.clone())
        .int(10, 15_000)
        .int(11, 60_000)
        .msg(12, hints)
        .msg(13, shard)
        .str(14, "replica")
        .str(14, "rule_replica")
        .int(15, 100)
        .int(16, 64)
        .decode();
    assert_eq!((r.min_time, r.max_time), (-1000, 2000));
    assert_eq!(r.matchers[0].r#type, pb::label_matcher::Type::Re as i32);
    assert_eq!(r.max_resolution_window, 300_000);
    assert_eq!(
        r.aggregates,
        vec![
            pb::Aggr::Sum as i32,
            pb::Aggr::Count as i32,
            pb::Aggr::Counter as i32
        ]
    );
    assert!(r.partial_response_disabled);
    assert_eq!(
        r.partial_response_strategy,
        pb::PartialResponseStrategy::Abort as i32
    );
    assert!(r.skip_chunks);
    assert_eq!(
        r.hints.as_ref().map(|h| h.type_url.as_str()),
        Some("type.googleapis.com/x")
    );
    assert_eq!((r.step, r.range), (15_000, 60_000));
    let qh = r.query_hints.expect("query hints");
    assert_eq!(qh.step_millis, 30_000);
    assert_eq!(qh.func.map(|f| f.name), Some("rate".into()));
    let g = qh.grouping.expect("grouping");
    assert!(g.by);
    assert_eq!(g.labels, vec!["job", "instance"]);
    assert_eq!(qh.range.map(|r| r.millis), Some(300_000));
    assert_eq!(qh.projection_labels, vec!["pod"]);
    assert!(qh.projection_include);
    let si = r.shard_info.expect("shard info");
    assert_eq!((si.shard_index, si.total_shards, si.by), (2, 8, true));
    assert_eq!(si.labels, vec!["cluster"]);
    assert_eq!(r.without_replica_labels, vec!["replica", "rule_replica"]);
    assert_eq!((r.limit, r.response_batch_size), (100, 64));
}

#[test]
fn series_response_variants() {
    use pb::series_response::Result as R;
    let series = W::new().msg(1, label("a", "1"));
    match W::new()
        .msg(1, series.clone())
        .decode::<pb::SeriesResponse>()
        .result
    {
        Some(R::Series(s)) => assert_eq!(s.labels.at(0).value, "1"),
        other => panic!("{other:?}"),
    }
    match W::new()
        .str(2, "store x down")
        .decode::<pb::SeriesResponse>()
        .result
    {
        Some(R::Warning(w)) => assert_eq!(w, "store x down"),
        other => panic!("{other:?}"),
    }
    match W::new()
        .msg(3, W::new().str(1, "t"))
        .decode::<pb::SeriesResponse>()
        .result
    {
        Some(R::Hints(h)) => assert_eq!(h.type_url, "t"),
        other => panic!("{other:?}"),
    }
    match W::new()
        .msg(4, W::new().msg(1, series))
        .decode::<pb::SeriesResponse>()
        .result
    {
        Some(R::Batch(b)) => assert_eq!(b.series.len(), 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn label_requests_and_responses() {
    let matcher = W::new().varint(1, 1).str(2, "job").str(3, "x");
    let any = W::new().str(1, "u");
    let r: pb::LabelNamesRequest = W::new()
        .varint(1, 1)
        .varint(2, 1)
        .int(3, 10)
        .int(4, 20)
        .msg(5, any.clone())
        .msg(6, matcher.clone())
        .str(7, "replica")
        .int(8, 5)
        .decode();
    assert!(r.partial_response_disabled);
    assert_eq!(r.partial_response_strategy, 1);
    assert_eq!((r.start, r.end, r.limit), (10, 20, 5));
    assert!(r.hints.is_some());
    assert_eq!(r.matchers[0].name, "job");
    assert_eq!(r.without_replica_labels, vec!["replica"]);

    let r: pb::LabelNamesResponse = W::new()
        .str(1, "a")
        .str(1, "b")
        .str(2, "w")
        .msg(3, any.clone())
        .decode();
    assert_eq!(r.names, vec!["a", "b"]);
    assert_eq!(r.warnings, vec!["w"]);
    assert!(r.hints.is_some());

    let r: pb::LabelValuesRequest = W::new()
        .str(1, "job")
        .varint(2, 1)
        .varint(3, 1)
        .int(4, 10)
        .int(5, 20)
        .msg(6, any.clone())
        .msg(7, matcher)
        .str(8, "replica")
        .int(9, 7)
        .decode();
    assert_eq!(r.label, "job");
    assert!(r.partial_response_disabled);
    assert_eq!(r.partial_response_strategy, 1);
    assert_eq!((r.start, r.end, r.limit), (10, 20, 7));
    assert!(r.hints.is_some());
    assert_eq!(r.matchers[0].value, "x");
    assert_eq!(r.without_replica_labels, vec!["replica"]);

    let r: pb::LabelValuesResponse = W::new().str(1, "v").str(2, "w").msg(3, any).decode();
    assert_eq!(r.values, vec!["v"]);
    assert_eq!(r.warnings, vec!["w"]);
    assert!(r.hints.is_some());
}

#[test]
fn info_messages() {
    let _: infopb::InfoRequest = W::new().decode();
    let zls = W::new().msg(1, label("cluster", "a"));
    let r: infopb::InfoResponse = W::new()
        .msg(1, zls.clone())
        .str(2, "sidecar")
        .msg(
            3,
            W::new()
                .int(1, 100)
                .int(2, 200)
                .varint(3, 1)
                .varint(5, 1)
                .msg(6, W::new().msg(1, zls).int(2, 101).int(3, 199)),
        )
        .msg(4, W::new())
        .msg(5, W::new())
        .msg(6, W::new())
        .msg(7, W::new().int(1, 5).int(2, 6))
        .msg(8, W::new())
        .msg(9, W::new())
        .decode();
    assert_eq!(r.label_sets[0].labels[0].value, "a");
    assert_eq!(r.component_type, "sidecar");
    let s = r.store.expect("store");
    assert_eq!((s.min_time, s.max_time), (100, 200));
    assert!(s.supports_sharding && s.supports_without_replica_labels);
    assert_eq!(
        s.tsdb_infos[0].labels.as_ref().map(|l| l.labels.len()),
        Some(1)
    );
    assert_eq!(
        (s.tsdb_infos[0].min_time, s.tsdb_infos[0].max_time),
        (101, 199)
    );
    // Present-but-empty sub-messages mean "served".
    assert!(r.rules.is_some());
    assert!(r.metric_metadata.is_some());
    assert!(r.targets.is_some());
    assert_eq!(r.exemplars.map(|e| (e.min_time, e.max_time)), Some((5, 6)));
    assert!(r.query.is_some());
    assert!(r.status.is_some());
    // And absent ones mean "not served".
    let r: infopb::InfoResponse = W::new().str(2, "store").decode();
    assert!(r.store.is_none() && r.metric_metadata.is_none());
}

#[test]
fn metadata_messages() {
    let r: pb::MetricMetadataRequest = W::new().str(1, "up").int(2, 10).varint(3, 1).decode();
    assert_eq!(
        (r.metric.as_str(), r.limit, r.partial_response_strategy),
        ("up", 10, 1)
    );
    let meta = W::new()
        .str(1, "counter")
        .str(2, "help text")
        .str(3, "seconds");
    // map<string, MetricMetadataEntry> = 1 is a repeated entry message {key = 1; value = 2}; the entry's
    // metas are field 2.
    let entry = W::new()
        .str(1, "http_requests_total")
        .msg(2, W::new().msg(2, meta));
    let md = W::new().msg(1, entry);
    use pb::metric_metadata_response::Result as R;
    match W::new()
        .msg(1, md)
        .decode::<pb::MetricMetadataResponse>()
        .result
    {
        Some(R::Metadata(m)) => {
            let e = &m.metadata["http_requests_total"];
            assert_eq!(e.metas[0].r#type, "counter");
            assert_eq!(e.metas[0].help, "help text");
            assert_eq!(e.metas[0].unit, "seconds");
        }
        other => panic!("{other:?}"),
    }
    match W::new()
        .str(2, "partial")
        .decode::<pb::MetricMetadataResponse>()
        .result
    {
        Some(R::Warning(w)) => assert_eq!(w, "partial"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn remote_write_messages() {
    let sample = W::new().double(1, 1.5).int(2, 1_700_000_000_000);
    let exemplar = W::new()
        .msg(1, label("trace_id", "abc"))
        .double(2, 0.5)
        .int(3, 7);
    let hist = W::new()
        .varint(1, 10)
        .double(3, 2.5)
        .sint(4, -1)
        .double(5, 0.001)
        .varint(6, 2)
        .int(15, 9);
    let ts = W::new()
        .msg(1, label("__name__", "up"))
        .msg(2, sample)
        .msg(3, exemplar)
        .msg(4, hist);
    let md = W::new()
        .varint(1, 1)
        .str(2, "http_requests_total")
        .str(4, "help")
        .str(5, "unit");
    let wr: prom::WriteRequest = W::new().msg(1, ts).msg(3, md).decode();
    let t = &wr.timeseries[0];
    assert_eq!(t.labels[0].value, "up");
    assert_eq!(
        (t.samples[0].value, t.samples[0].timestamp),
        (1.5, 1_700_000_000_000)
    );
    assert_eq!(t.exemplars[0].labels[0].name, "trace_id");
    assert_eq!((t.exemplars[0].value, t.exemplars[0].timestamp), (0.5, 7));
    let h = &t.histograms[0];
    assert_eq!(h.count, Some(prom::histogram::Count::CountInt(10)));
    assert_eq!(
        (h.sum, h.schema, h.zero_threshold, h.timestamp),
        (2.5, -1, 0.001, 9)
    );
    assert_eq!(
        h.zero_count,
        Some(prom::histogram::ZeroCount::ZeroCountInt(2))
    );
    let m = &wr.metadata[0];
    assert_eq!(m.r#type, prom::metric_metadata::MetricType::Counter as i32);
    assert_eq!(
        (
            m.metric_family_name.as_str(),
            m.help.as_str(),
            m.unit.as_str()
        ),
        ("http_requests_total", "help", "unit")
    );
    // Stale markers survive the wire bit-exactly.
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let s: prom::Sample = W::new().double(1, stale).decode();
    assert_eq!(s.value.to_bits(), 0x7ff0_0000_0000_0002);
    // Remote read.
    let q = W::new()
        .int(1, 1)
        .int(2, 2)
        .msg(3, W::new().varint(1, 3).str(2, "a").str(3, "b"))
        .msg(4, W::new().int(1, 15).str(2, "rate"));
    let rr: prom::ReadRequest = W::new().msg(1, q).varint(2, 1).decode();
    assert_eq!(rr.queries[0].end_timestamp_ms, 2);
    assert_eq!(
        rr.queries[0].hints.as_ref().map(|h| h.func.as_str()),
        Some("rate")
    );
    assert_eq!(
        rr.accepted_response_types,
        vec![prom::read_request::ResponseType::StreamedXorChunks as i32]
    );
    let cs = W::new()
        .msg(1, label("a", "b"))
        .msg(2, W::new().int(1, 1).int(2, 2).varint(3, 1).bytes(4, b"d"));
    let crr: prom::ChunkedReadResponse = W::new().msg(1, cs).int(2, 3).decode();
    assert_eq!(crr.query_index, 3);
    assert_eq!(
        crr.chunked_series[0].chunks[0].r#type,
        prom::chunk::Encoding::Xor as i32
    );
}

/// The RPC paths on the wire, called with hand-written paths against our server.
#[tokio::test]
async fn rpc_paths() {
    meridian_pki::install_crypto_provider();
    use meridian_core::{Labels, Sample};
    use meridian_storeapi::memstore::MemStore;
    use meridian_storeapi::server;
    use std::sync::Arc;
    use tonic::codegen::http::uri::PathAndQuery;

    let store = MemStore::new(Labels::from_pairs([("cluster", "a")]));
    store
        .append(
            &Labels::from_pairs([("__name__", "up")]),
            &[Sample::new(1, 1.0)],
        )
        .expect("append");
    store.set_metadata(
        "up",
        vec![pb::Meta {
            r#type: "gauge".into(),
            help: "h".into(),
            unit: String::new(),
        }],
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let srv = tokio::spawn(server::serve_tcp(
        Arc::new(store),
        listener,
        std::future::pending(),
    ));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);

    grpc.ready().await.expect("ready");
    let info: infopb::InfoResponse = grpc
        .unary(
            tonic::Request::new(infopb::InfoRequest {}),
            PathAndQuery::from_static("/thanos.info.Info/Info"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect("/thanos.info.Info/Info")
        .into_inner();
    assert_eq!(info.label_sets[0].labels[0].value, "a");

    grpc.ready().await.expect("ready");
    let mut stream = grpc
        .server_streaming::<_, pb::SeriesResponse, _>(
            tonic::Request::new(pb::SeriesRequest {
                min_time: 0,
                max_time: 10,
                matchers: vec![pb::LabelMatcher {
                    r#type: 0,
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                ..Default::default()
            }),
            PathAndQuery::from_static("/thanos.Store/Series"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect("/thanos.Store/Series")
        .into_inner();
    assert!(stream.message().await.expect("frame").is_some());

    grpc.ready().await.expect("ready");
    let names: pb::LabelNamesResponse = grpc
        .unary(
            tonic::Request::new(pb::LabelNamesRequest {
                start: 0,
                end: 10,
                ..Default::default()
            }),
            PathAndQuery::from_static("/thanos.Store/LabelNames"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect("/thanos.Store/LabelNames")
        .into_inner();
    assert_eq!(names.names, vec!["__name__", "cluster"]);

    grpc.ready().await.expect("ready");
    let values: pb::LabelValuesResponse = grpc
        .unary(
            tonic::Request::new(pb::LabelValuesRequest {
                label: "__name__".into(),
                start: 0,
                end: 10,
                ..Default::default()
            }),
            PathAndQuery::from_static("/thanos.Store/LabelValues"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect("/thanos.Store/LabelValues")
        .into_inner();
    assert_eq!(values.values, vec!["up"]);

    grpc.ready().await.expect("ready");
    let mut md = grpc
        .server_streaming::<_, pb::MetricMetadataResponse, _>(
            tonic::Request::new(pb::MetricMetadataRequest {
                limit: -1,
                ..Default::default()
            }),
            PathAndQuery::from_static("/thanos.Metadata/MetricMetadata"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect("/thanos.Metadata/MetricMetadata")
        .into_inner();
    assert!(md.message().await.expect("frame").is_some());
    srv.abort();
}
