//! The compactor over a FILESYSTEM bucket: streams compacted to Thanos' levels with every sample kept
//! once (vertical compaction of overlapping blocks included); replicas merged offline, one-to-one for
//! identical replicas and by the gateway's penalty algorithm for HA pairs (equal to the online answer);
//! a pass killed at every write it makes (the object store refuses all writes from that point, as a
//! killed process makes none) never lets a reader see a sample twice or miss one, and the next pass
//! finishes the job; deletion after the delete delay; aborted uploads cleaned.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use meridian_core::chunkenc::XorIterator;
use meridian_core::labels::Labels;
use meridian_core::matcher::{MatchType, Matcher};
use meridian_core::sample::Sample;
use meridian_core::time::Clock;
use meridian_gateway::bucket::{BucketStore, BucketStoreOptions};
use meridian_gateway::compact::merge::DedupFunc;
use meridian_gateway::compact::metrics::CompactMetrics;
use meridian_gateway::compact::run::{CompactError, CompactOptions, Compactor};
use meridian_gateway::dedup::{SeriesKind, dedup};
use meridian_storeapi::Store;
use meridian_tsdb::block::write_block;
use meridian_tsdb::objstore::Bucket;
use meridian_tsdb::shipper::upload_block_dir;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio_util::sync::CancellationToken;

use crate::support::{H, T0, fs_bucket};

type Series = BTreeMap<Labels, Vec<Sample>>;

fn lbl(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// `n` counters sampled every 15 s from `phase` over `[from, to)`; the value is a function of time,
/// so replicas at other phases agree on the curve.
fn counters(n: usize, from: i64, to: i64, phase: i64) -> Vec<(Labels, Vec<Sample>)> {
    (0..n)
        .map(|i| {
            let samples = (from + phase..to)
                .step_by(15_000)
                .map(|t| Sample::new(t, ((t - T0) / 1000) as f64 * (i + 1) as f64))
                .collect();
            (
                lbl(&[
                    ("__name__", "http_requests_total"),
                    ("pod", &format!("p{i}")),
                ]),
                samples,
            )
        })
        .collect()
}

/// Writes and uploads one block of `series` over `[from, to)` with `ext` labels.
async fn upload(
    bucket: &Bucket,
    series: Vec<(Labels, Vec<Sample>)>,
    from: i64,
    to: i64,
    ext: &Labels,
) {
    let dir = tempfile::tempdir().unwrap();
    let meta = write_block(dir.path(), series, from, to).unwrap();
    upload_block_dir(bucket, &dir.path().join(&meta.ulid), ext, "test")
        .await
        .unwrap();
}

/// Every sample a fresh bucket store serves, by series (external labels included).
async fn read_all(bucket: &Bucket) -> Series {
    let store = BucketStore::new(bucket.clone(), BucketStoreOptions::default());
    store.sync().await.unwrap();
    let req = meridian_storeapi::series_request(
        i64::MIN,
        i64::MAX,
        &[Matcher::new(MatchType::Regex, "__name__", ".+").unwrap()],
        false,
    );
    let mut out: Series = BTreeMap::new();
    let mut stream = store.series(req).await.unwrap();
    while let Some(f) = stream.next().await {
        if let meridian_storeapi::SeriesFrame::Series(s) = f.unwrap() {
            let samples = out.entry(s.labels.clone()).or_default();
            for c in &s.chunks {
                let raw = c.raw.as_ref().expect("raw chunk");
                let mut it = XorIterator::new(&raw.data).unwrap();
                while let Some((t, v)) = it.next_sample() {
                    samples.push(Sample::new(t, v));
                }
            }
        }
    }
    // Overlapping blocks' chunks come one after the other: sorted, but not deduplicated, so a sample
    // read twice shows.
    for s in out.values_mut() {
        s.sort_by_key(|x| x.t);
    }
    out
}

/// Compares series answers, reporting the first difference only (answers hold ~10⁵ samples).
#[track_caller]
fn same(got: &Series, want: &Series, ctx: &str) {
    let gk: Vec<&Labels> = got.keys().collect();
    let wk: Vec<&Labels> = want.keys().collect();
    assert_eq!(gk, wk, "{ctx}: series differ");
    for (l, w) in want {
        let g = &got[l];
        if g == w {
            continue;
        }
        let i = g
            .iter()
            .zip(w)
            .position(|(a, b)| a != b)
            .unwrap_or(g.len().min(w.len()));
        panic!(
            "{ctx}: {l}: {} samples, want {}; first difference at {i}: got {:?}, want {:?}",
            g.len(),
            w.len(),
            g.get(i),
            w.get(i)
        );
    }
}

fn with_ext(series: &[(Labels, Vec<Sample>)], ext: &Labels) -> Series {
    series
        .iter()
        .map(|(l, s)| {
            let mut pairs: Vec<(String, String)> = l
                .iter()
                .chain(ext.iter())
                .map(|l| (l.name.to_owned(), l.value.to_owned()))
                .collect();
            pairs.sort();
            (Labels::from_pairs(pairs), s.clone())
        })
        .collect()
}

/// Merges expected series: one sample per timestamp, in time order.
fn union(parts: impl IntoIterator<Item = Series>) -> Series {
    let mut out: Series = BTreeMap::new();
    for p in parts {
        for (l, s) in p {
            out.entry(l).or_default().extend(s);
        }
    }
    for s in out.values_mut() {
        s.sort_by_key(|x| x.t);
        s.dedup_by_key(|x| x.t);
    }
    out
}

fn compactor(
    bucket: Bucket,
    data: &Path,
    clock: Clock,
    f: impl FnOnce(&mut CompactOptions),
) -> Compactor {
    let mut opts = CompactOptions {
        data_dir: data.to_owned(),
        consistency_delay_ms: 0,
        delete_delay_ms: H,
        clock,
        ..CompactOptions::default()
    };
    f(&mut opts);
    Compactor::new(bucket, opts, Arc::new(CompactMetrics::default()))
}

/// The live blocks (with meta.json, no deletion mark): (ULID, minTime, maxTime, level, labels).
async fn live_blocks(bucket: &Bucket) -> Vec<(String, i64, i64, u32, Labels)> {
    let entries = meridian_tsdb::listing::list_blocks(bucket.store.as_ref())
        .await
        .unwrap();
    let mut out = Vec::new();
    for (u, e) in entries {
        if e.has_meta && !e.deletion_mark {
            let (m, _) = meridian_tsdb::listing::fetch_meta(bucket.store.as_ref(), &u)
                .await
                .unwrap();
            out.push((
                u,
                m.min_time,
                m.max_time,
                m.compaction.level,
                m.thanos_labels(),
            ));
        }
    }
    out
}

/// Two clusters, 12 h of 2 h blocks each, plus a late block overlapping hours 2–4 of cluster a with
/// samples at other timestamps: compacted to 8 h blocks (the newest 2 h block waits), the overlap
/// merged vertically, every sample once; sources marked, then deleted after the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_compact_to_levels_with_every_sample_once() {
    let root = tempfile::tempdir().unwrap();
    let bucket = fs_bucket(&root.path().join("bucket"));
    std::fs::create_dir_all(root.path().join("bucket")).unwrap();
    let mut expected = Vec::new();
    for cluster in ["a", "b"] {
        let ext = lbl(&[("cluster", cluster)]);
        for b in 0..6 {
            let (from, to) = (T0 + b * 2 * H, T0 + (b + 1) * 2 * H);
            let s = counters(5, from, to, 0);
            expected.push(with_ext(&s, &ext));
            upload(&bucket, s, from, to, &ext).await;
        }
    }
    let ext_a = lbl(&[("cluster", "a")]);
    let late = counters(5, T0 + 2 * H, T0 + 4 * H, 7_000);
    expected.push(with_ext(&late, &ext_a));
    upload(&bucket, late, T0 + 2 * H, T0 + 4 * H, &ext_a).await;
    let want = union(expected);
    same(&read_all(&bucket).await, &want, "before compaction");

    let now = Arc::new(AtomicI64::new(meridian_core::time::now_ms()));
    let clock = {
        let now = now.clone();
        Clock::from_fn(move || now.load(Ordering::SeqCst))
    };
    let c = compactor(bucket.clone(), &root.path().join("data"), clock, |_| {});
    let report = c.pass(&CancellationToken::new()).await.unwrap();
    // a: the late block with the one it overlaps, then 0–8 h; b: 0–8 h. 8–10 h waits for its window
    // to fill (or to end before the newest remaining block starts).
    assert_eq!(report.compactions, 3, "{report:?}");
    assert_eq!(report.deleted, 0, "the delete delay has not passed");
    same(
        &read_all(&bucket).await,
        &want,
        "after compaction, sources still in the bucket",
    );
    let live = live_blocks(&bucket).await;
    for cluster in ["a", "b"] {
        let mut ranges: Vec<(i64, i64, u32)> = live
            .iter()
            .filter(|b| b.4.get("cluster") == Some(cluster))
            .map(|b| (b.1, b.2, b.3))
            .collect();
        ranges.sort();
        // 0–8 h as one 8 h block; what follows stays below the next level (the newest block waits).
        assert_eq!(ranges[0].0, T0, "{ranges:?}");
        assert_eq!(ranges[0].1, T0 + 8 * H, "{ranges:?}");
        assert!(ranges[0].2 >= 2, "{ranges:?}");
        assert!(
            ranges.windows(2).all(|w| w[0].1 <= w[1].0),
            "no overlap left: {ranges:?}"
        );
        assert_eq!(ranges.last().unwrap().1, T0 + 12 * H);
    }
    // A second pass has nothing to do.
    let again = c.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(again.compactions, 0, "{again:?}");
    // After the delete delay the sources go.
    now.fetch_add(2 * H, Ordering::SeqCst);
    let after = c.pass(&CancellationToken::new()).await.unwrap();
    assert!(after.deleted >= 8, "{after:?}");
    let entries = meridian_tsdb::listing::list_blocks(bucket.store.as_ref())
        .await
        .unwrap();
    assert!(entries.values().all(|e| e.has_meta && !e.deletion_mark));
    assert_eq!(entries.len(), live.len());
    same(&read_all(&bucket).await, &want, "after deletion");
}

/// HA pairs merged offline: identical replicas one-to-one into exactly their samples; replicas at
/// different phases by the penalty algorithm into what the gateway answers online over them (but
/// for the online answer's end-of-data sample, see below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_merge_offline_as_online() {
    for (func, phase) in [(DedupFunc::OneToOne, 0), (DedupFunc::Penalty, 5_000)] {
        let root = tempfile::tempdir().unwrap();
        let bucket = fs_bucket(&root.path().join("bucket"));
        std::fs::create_dir_all(root.path().join("bucket")).unwrap();
        let mut replicas: Vec<Vec<(Labels, Vec<Sample>)>> = vec![Vec::new(), Vec::new()];
        for (r, rphase) in [(0usize, 0), (1, phase)] {
            let ext = lbl(&[("cluster", "a"), ("replica", &r.to_string())]);
            for b in 0..4 {
                let (from, to) = (T0 + b * 2 * H, T0 + (b + 1) * 2 * H);
                let s = counters(4, from, to, rphase);
                for (i, (l, x)) in s.iter().enumerate() {
                    if b == 0 {
                        replicas[r].push((l.clone(), Vec::new()));
                    }
                    replicas[r][i].1.extend_from_slice(x);
                }
                upload(&bucket, s, from, to, &ext).await;
            }
        }
        let ext = lbl(&[("cluster", "a")]);
        // The gateway's answer over the whole range. At the very end of the data it also takes the
        // other replica's last sample, 5 s after the last merged one (the same scrape at another
        // phase); a compacted block cannot know whether its end is the data's end, and over any
        // longer range the gateway would not take that sample, so blocks leave it out: the one
        // expected difference.
        let online: Vec<(Labels, Vec<Sample>)> = replicas[0]
            .iter()
            .zip(&replicas[1])
            .map(|((l, a), (_, b))| {
                let mut m = dedup(&[a, b], SeriesKind::Counter);
                if phase > 0 {
                    let last = m.pop().unwrap();
                    assert_eq!(last.t - m.last().unwrap().t, phase, "the end effect");
                }
                (l.clone(), m)
            })
            .collect();
        let want = with_ext(&online, &ext);
        if func == DedupFunc::OneToOne {
            assert_eq!(replicas[0], replicas[1], "identical replicas");
        }
        let c = compactor(
            bucket.clone(),
            &root.path().join("data"),
            Clock::system(),
            |o| {
                o.replica_labels = vec!["replica".into()];
                o.dedup_func = func;
            },
        );
        let report = c.pass(&CancellationToken::new()).await.unwrap();
        assert!(report.compactions >= 4, "{func:?}: {report:?}");
        let got = read_all(&bucket).await;
        same(&got, &want, &format!("{func:?}"));
        let live = live_blocks(&bucket).await;
        assert!(
            live.iter().all(|b| b.4 == ext),
            "{func:?}: the replica label is gone from every live block: {live:?}"
        );
    }
}

/// Two days of 2 h blocks compact to one 2-day block, which is downsampled to 5 m in Thanos' format:
/// the 5 m block keeps the raw block's range, lineage and labels, its aggregates add up to the raw
/// data, readers of raw data are not affected, and a second pass does not downsample again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_day_blocks_are_downsampled_to_5m() {
    use meridian_gateway::compact::downsample::{Aggr, RES_5M, decode_aggr, part_samples};
    let root = tempfile::tempdir().unwrap();
    let bucket = fs_bucket(&root.path().join("bucket"));
    std::fs::create_dir_all(root.path().join("bucket")).unwrap();
    let ext = lbl(&[("cluster", "a")]);
    let mut expected = Vec::new();
    // 25 blocks: the 2-day window fills, and one newer block lets it compact.
    for b in 0..25 {
        let (from, to) = (T0 + b * 2 * H, T0 + (b + 1) * 2 * H);
        let s = counters(3, from, to, 0);
        expected.push(with_ext(&s, &ext));
        upload(&bucket, s, from, to, &ext).await;
    }
    let want = union(expected);
    let c = compactor(
        bucket.clone(),
        &root.path().join("data"),
        Clock::system(),
        |_| {},
    );
    let report = c.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(report.downsamples, 1, "{report:?}");
    same(
        &read_all(&bucket).await,
        &want,
        "raw readers after downsampling",
    );
    let entries = meridian_tsdb::listing::list_blocks(bucket.store.as_ref())
        .await
        .unwrap();
    let mut metas = Vec::new();
    for (u, e) in &entries {
        if e.has_meta && !e.deletion_mark {
            metas.push(
                meridian_tsdb::listing::fetch_meta(bucket.store.as_ref(), u)
                    .await
                    .unwrap()
                    .0,
            );
        }
    }
    let raw = metas
        .iter()
        .find(|m| m.resolution() == 0 && m.max_time - m.min_time == 48 * H)
        .expect("a 2-day raw block");
    let five = metas
        .iter()
        .find(|m| m.resolution() == RES_5M)
        .expect("a 5m block");
    assert_eq!((five.min_time, five.max_time), (raw.min_time, raw.max_time));
    assert_eq!(five.compaction.sources, raw.compaction.sources);
    assert_eq!(five.compaction.level, raw.compaction.level);
    assert_eq!(five.thanos_labels(), ext);
    assert_eq!(five.thanos_source(), "compactor");
    // Its aggregates against the raw samples of the same range.
    let local = root.path().join("check");
    meridian_tsdb::listing::download_block(bucket.store.as_ref(), &five.ulid, &local)
        .await
        .unwrap();
    let block = meridian_tsdb::block::Block::open(&local.join(&five.ulid)).unwrap();
    let mut series = 0;
    for id in block.index().all_postings().unwrap() {
        let (labels, metas) = block.series_meta(id).unwrap();
        let mut count = 0.0;
        let mut sum = 0.0;
        for m in metas {
            let (enc, data) = block.raw_chunk(m.chunk_ref).unwrap();
            assert_eq!(enc, meridian_core::chunkenc::Encoding::Aggr);
            let parts = decode_aggr(data).unwrap();
            let counts = part_samples(parts[Aggr::Count as usize].unwrap()).unwrap();
            assert!(
                counts
                    .iter()
                    .all(|s| (s.t + 1) % RES_5M == 0 || s.t == m.max_time)
            );
            count += counts.iter().map(|s| s.v).sum::<f64>();
            sum += part_samples(parts[Aggr::Sum as usize].unwrap())
                .unwrap()
                .iter()
                .map(|s| s.v)
                .sum::<f64>();
        }
        let mut full: Vec<(String, String)> = labels
            .iter()
            .chain(ext.iter())
            .map(|l| (l.name.to_owned(), l.value.to_owned()))
            .collect();
        full.sort();
        let raw_samples: Vec<&Sample> = want[&Labels::from_pairs(full)]
            .iter()
            .filter(|s| s.t >= five.min_time && s.t < five.max_time)
            .collect();
        assert_eq!(count, raw_samples.len() as f64, "{labels}");
        assert_eq!(
            sum,
            raw_samples.iter().map(|s| s.v).sum::<f64>(),
            "{labels}"
        );
        series += 1;
    }
    assert_eq!(series, 3);
    let again = c.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(again.downsamples, 0, "{again:?}");
}

/// An object store whose writes (puts, multipart uploads, deletes) all fail from the `after`th on,
/// as a process killed there writes nothing more; reads and listings work.
#[derive(Debug)]
struct KillSwitch {
    inner: Arc<dyn ObjectStore>,
    after: usize,
    writes: AtomicUsize,
}

impl std::fmt::Display for KillSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KillSwitch({})", self.inner)
    }
}

impl KillSwitch {
    fn write(&self) -> object_store::Result<()> {
        if self.writes.fetch_add(1, Ordering::SeqCst) >= self.after {
            return Err(object_store::Error::Generic {
                store: "kill switch",
                source: "killed".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for KillSwitch {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.write()?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.write()?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        if let Err(e) = self.write() {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.write()?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// A pass killed at each of its writes in turn: readers see every sample exactly once at every such
/// point, and an unhindered pass afterwards ends in the same compacted bucket a clean pass makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_write_readers_see_each_sample_once() {
    let root = tempfile::tempdir().unwrap();
    let seed = root.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    let bucket = fs_bucket(&seed);
    let mut expected = Vec::new();
    for cluster in ["a", "b"] {
        let ext = lbl(&[("cluster", cluster)]);
        for b in 0..5 {
            let (from, to) = (T0 + b * 2 * H, T0 + (b + 1) * 2 * H);
            let s = counters(3, from, to, 0);
            expected.push(with_ext(&s, &ext));
            upload(&bucket, s, from, to, &ext).await;
        }
        // A late block overlapping the first.
        let late = counters(3, T0, T0 + 2 * H, 3_000);
        expected.push(with_ext(&late, &ext));
        upload(&bucket, late, T0, T0 + 2 * H, &ext).await;
    }
    let want = union(expected);
    let mut killed_points = 0;
    for after in 0.. {
        let dir = root.path().join(format!("run{after}"));
        meridian_testkit::copy_tree(&seed, &dir.join("bucket"));
        let clean = fs_bucket(&dir.join("bucket"));
        let mut killable = clean.clone();
        let switch = Arc::new(KillSwitch {
            inner: clean.store.clone(),
            after,
            writes: AtomicUsize::new(0),
        });
        killable.store = switch.clone();
        let c = compactor(killable, &dir.join("data"), Clock::system(), |_| {});
        let first = c.pass(&CancellationToken::new()).await;
        let got = read_all(&clean).await;
        same(
            &got,
            &want,
            &format!("killed after {after} writes: readers see each sample once"),
        );
        match first {
            Err(CompactError::Retry(_)) => killed_points += 1,
            Ok(_) => {
                assert!(switch.writes.load(Ordering::SeqCst) <= after);
                break;
            }
            Err(e) => panic!("killed after {after} writes: {e}"),
        }
        // A new compactor (the process restarted) finishes the job.
        let c = compactor(clean.clone(), &dir.join("data"), Clock::system(), |_| {});
        c.pass(&CancellationToken::new()).await.unwrap();
        same(
            &read_all(&clean).await,
            &want,
            &format!("restarted after {after} writes"),
        );
        let live = live_blocks(&clean).await;
        for cluster in ["a", "b"] {
            let mut r: Vec<(i64, i64)> = live
                .iter()
                .filter(|b| b.4.get("cluster") == Some(cluster))
                .map(|b| (b.1, b.2))
                .collect();
            r.sort();
            assert!(
                r.windows(2).all(|w| w[0].1 <= w[1].0),
                "after {after}: {r:?}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(killed_points >= 10, "only {killed_points} kill points");
}

/// Aborted uploads (no meta.json) go once both their ULID and their newest object are 48 h old.
/// The output-size cap: a compaction whose sources' indexes add up to 85 % of
/// `--compact.block-max-index-size` marks its biggest source `no-compact` (Thanos' reason
/// `index-size-exceeding`) and the pass goes on with the rest; no index written passes the cap, and
/// readers see every sample once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_compaction_marks_its_biggest_source_and_goes_on() {
    use meridian_tsdb::marks::{MarkKind, reason};
    let root = tempfile::tempdir().unwrap();
    let bucket = fs_bucket(&root.path().join("bucket"));
    std::fs::create_dir_all(root.path().join("bucket")).unwrap();
    let ext = lbl(&[("cluster", "a")]);
    let mut expected = Vec::new();
    // 12 h of 2 h blocks; the second holds four times the series, so the biggest index.
    for b in 0..6 {
        let (from, to) = (T0 + b * 2 * H, T0 + (b + 1) * 2 * H);
        let s = counters(if b == 1 { 12 } else { 3 }, from, to, 0);
        expected.push(with_ext(&s, &ext));
        upload(&bucket, s, from, to, &ext).await;
    }
    let want = union(expected);
    let index_size = |m: &meridian_tsdb::block::BlockMeta| m.thanos_file_size("index").unwrap();
    let mut metas = Vec::new();
    for (u, ..) in live_blocks(&bucket).await {
        metas.push(
            meridian_tsdb::listing::fetch_meta(bucket.store.as_ref(), &u)
                .await
                .unwrap()
                .0,
        );
    }
    metas.sort_by_key(|m| m.min_time);
    let (small, big) = (index_size(&metas[0]), index_size(&metas[1]));
    assert!(big > small);
    // The first 8 h plan (blocks 0–3) reaches 85 % of the cap at its third block.
    let cap = ((2 * small + big) as f64 / 0.85) as u64 - 1;
    let c = compactor(
        bucket.clone(),
        &root.path().join("data"),
        Clock::system(),
        |o| o.max_index_bytes = cap,
    );
    let report = c.pass(&CancellationToken::new()).await.unwrap();
    assert!(report.compactions >= 1, "{report:?}");
    let mark = meridian_tsdb::listing::read_mark(
        bucket.store.as_ref(),
        &metas[1].ulid,
        MarkKind::NoCompact,
    )
    .await
    .unwrap()
    .expect("the biggest source is marked no-compact");
    assert_eq!(mark.reason, reason::INDEX_SIZE_EXCEEDING);
    for (u, ..) in live_blocks(&bucket).await {
        let (m, _) = meridian_tsdb::listing::fetch_meta(bucket.store.as_ref(), &u)
            .await
            .unwrap();
        assert!(
            index_size(&m) <= cap,
            "{u}: index {} > {cap}",
            index_size(&m)
        );
        if u != metas[1].ulid {
            assert!(
                meridian_tsdb::listing::read_mark(bucket.store.as_ref(), &u, MarkKind::NoCompact)
                    .await
                    .unwrap()
                    .is_none(),
                "{u}: only the biggest source is marked"
            );
        }
    }
    assert!(
        live_blocks(&bucket)
            .await
            .iter()
            .any(|b| b.3 >= 2 && b.0 != metas[1].ulid),
        "the blocks after the marked one were compacted"
    );
    same(&read_all(&bucket).await, &want, "after the capped pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_uploads_are_cleaned_after_48h() {
    let root = tempfile::tempdir().unwrap();
    let bucket = fs_bucket(root.path());
    let old = meridian_tsdb::block::new_ulid(u64::try_from(T0).unwrap());
    std::fs::create_dir_all(root.path().join(&old).join("chunks")).unwrap();
    std::fs::write(root.path().join(&old).join("chunks/000001"), b"x").unwrap();
    let now = meridian_core::time::now_ms();
    let c = compactor(
        bucket.clone(),
        &root.path().join("data"),
        Clock::fixed(now),
        |_| {},
    );
    // Its file was just written: kept.
    let r = c.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(r.partial_deleted, 0);
    let c = compactor(
        bucket.clone(),
        &root.path().join("data"),
        Clock::fixed(now + 49 * H),
        |_| {},
    );
    let r = c.pass(&CancellationToken::new()).await.unwrap();
    assert_eq!(r.partial_deleted, 1);
    assert!(!root.path().join(&old).join("chunks/000001").exists());
}

mod props {
    use super::*;
    use meridian_gateway::compact::merge::{Input, Output, merge};
    use meridian_tsdb::block::{Block, Compaction};
    use proptest::prelude::*;

    /// Up to 4 blocks of up to 3 series; each block holds a random subset of a series' timestamps
    /// (so blocks overlap arbitrarily), the value a function of series and time (equal samples where
    /// blocks share a timestamp, as one-to-one merging assumes).
    fn blocks() -> impl Strategy<Value = Vec<Vec<(usize, Vec<i64>)>>> {
        let times = proptest::collection::btree_set(0i64..400, 1..60)
            .prop_map(|ts| ts.into_iter().map(|t| t * 1_000).collect::<Vec<_>>());
        proptest::collection::vec(
            proptest::collection::btree_map(0usize..3, times, 1..3)
                .prop_map(|m| m.into_iter().collect::<Vec<_>>()),
            1..5,
        )
    }

    fn value(i: usize, t: i64) -> f64 {
        (t / 1000) as f64 * 10.0 + i as f64
    }

    fn merged(blocks: &[Vec<(usize, Vec<i64>)>], order: &[usize]) -> Series {
        let dir = tempfile::tempdir().unwrap();
        let mut opened = Vec::new();
        for k in order {
            let series: Vec<(Labels, Vec<Sample>)> = blocks[*k]
                .iter()
                .map(|(i, ts)| {
                    (
                        lbl(&[("__name__", "m"), ("i", &i.to_string())]),
                        ts.iter().map(|t| Sample::new(*t, value(*i, *t))).collect(),
                    )
                })
                .collect();
            let meta = write_block(dir.path(), series, 0, 400_000).unwrap();
            opened.push(Block::open(&dir.path().join(&meta.ulid)).unwrap());
        }
        let inputs: Vec<Input<'_>> = opened
            .iter()
            .map(|block| Input { block, replica: 0 })
            .collect();
        let out = tempfile::tempdir().unwrap();
        let meta = merge(
            &inputs,
            DedupFunc::OneToOne,
            Output {
                parent: out.path(),
                ulid: "01HGW2N7EHJX0Y3ZQK3Q6T9V8R",
                min_time: 0,
                max_time: 400_000,
                compaction: Compaction::default(),
                extra: BTreeMap::new(),
            },
        )
        .unwrap();
        let b = Block::open(&out.path().join(&meta.ulid)).unwrap();
        let mut got: Series = BTreeMap::new();
        for s in b
            .select(
                &[Matcher::new(MatchType::Regex, "__name__", ".+").unwrap()],
                i64::MIN,
                i64::MAX,
            )
            .unwrap()
        {
            let samples = got.entry(s.labels.clone()).or_default();
            for (_, _, data) in &s.chunks {
                samples.extend(XorIterator::new(data).unwrap());
            }
        }
        assert_eq!(
            meta.stats.num_samples,
            got.values().map(|s| s.len() as u64).sum::<u64>(),
            "meta.json counts the samples written"
        );
        got
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Nothing lost, nothing doubled, the same whatever the order of the inputs.
        #[test]
        fn merging_keeps_each_sample_once_in_any_order(blocks in blocks()) {
            let mut want: Series = BTreeMap::new();
            for b in &blocks {
                for (i, ts) in b {
                    want.entry(lbl(&[("__name__", "m"), ("i", &i.to_string())]))
                        .or_default()
                        .extend(ts.iter().map(|t| Sample::new(*t, value(*i, *t))));
                }
            }
            for s in want.values_mut() {
                s.sort_by_key(|x| x.t);
                s.dedup_by_key(|x| x.t);
            }
            let forward: Vec<usize> = (0..blocks.len()).collect();
            let backward: Vec<usize> = forward.iter().rev().copied().collect();
            let a = merged(&blocks, &forward);
            prop_assert_eq!(&a, &want);
            prop_assert_eq!(merged(&blocks, &backward), a);
        }
    }
}
